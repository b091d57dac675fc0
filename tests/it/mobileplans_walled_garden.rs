//! `smdpplus walled-garden [--json]` ([MP-WalledGarden]): the
//! real binary prints Microsoft's hosts with their protocols and this
//! deployment's portal and GetBalance hosts from the config, host names
//! only; a URL with a port, without https or with an address is refused.

use serde_json::Value;
use std::process::{Command, Output};

fn run(dir: &std::path::Path, config: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smdpplus"));
    cmd.arg("walled-garden")
        .args(args)
        .env_remove("SMDPPLUS_CONFIG");
    if let Some(c) = config {
        let p = dir.join("wg.toml");
        std::fs::write(&p, c).expect("write config");
        cmd.arg("--config").arg(p);
    }
    cmd.output().expect("run smdpplus walled-garden")
}

const MICROSOFT: &[(&str, &[&str])] = &[
    ("ctldl.windowsupdate.com", &["http"]),
    ("cdp1.public-trust.com", &["http"]),
    ("ocsp.omniroot.com", &["http"]),
    ("vassg142.ocsp.omniroot.com", &["http"]),
    ("vassg142.crl.omniroot.com", &["http"]),
    ("mscrl.microsoft.com", &["http"]),
    ("crl.microsoft.com", &["http"]),
    ("www.msftconnecttest.com", &["http"]),
    ("crl3.digicert.com", &["http"]),
    ("Ocsp.digicert.com", &["http"]),
    ("login.live.com", &["http", "https"]),
    ("storagetos.datamart.windows.com", &["http", "https"]),
    ("mps.datamart.windows.com", &["http", "https"]),
    ("staging.datamart.windows.com", &["http", "https"]),
    ("*smartscreen.microsoft.com", &["https"]),
];

#[test]
fn microsoft_hosts_and_this_deployments_portal_and_getbalance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "[mobile_plans]\nportal_url = \"https://moportal.example.com/portal\"\ngetbalance_url = \"https://mo-api.example.com/v1\"\n";
    let out = run(dir.path(), Some(config), &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let hosts = v["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), MICROSOFT.len() + 2);
    for (i, (host, protocols)) in MICROSOFT.iter().enumerate() {
        assert_eq!(hosts[i]["host"], *host);
        assert_eq!(hosts[i]["protocols"], serde_json::json!(protocols));
        assert_eq!(hosts[i]["for"], serde_json::json!(["Microsoft"]));
    }
    assert_eq!(
        hosts[MICROSOFT.len()],
        serde_json::json!({"host": "moportal.example.com", "protocols": ["https"], "for": ["portal"]})
    );
    assert_eq!(
        hosts[MICROSOFT.len() + 1],
        serde_json::json!({"host": "mo-api.example.com", "protocols": ["https"], "for": ["GetBalance"]})
    );
    // No IP ranges, no ports, no paths anywhere.
    for h in hosts {
        let name = h["host"].as_str().expect("host");
        assert!(!name.contains(['/', ':']), "{name}");
        assert!(name.parse::<std::net::IpAddr>().is_err(), "{name}");
    }

    let out = run(dir.path(), Some(config), &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["http,https", "login.live.com", "Microsoft"]));
    assert!(text
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["https", "moportal.example.com", "portal"]));
    assert!(text
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["https", "mo-api.example.com", "GetBalance"]));
}

#[test]
fn defaults_come_from_the_smdp_address_and_one_host_serves_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(
        dir.path(),
        Some("smdp_address = \"rsp.example.org\"\n"),
        &["--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let hosts = v["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), MICROSOFT.len() + 1);
    assert_eq!(
        hosts[MICROSOFT.len()],
        serde_json::json!({"host": "rsp.example.org", "protocols": ["https"], "for": ["portal", "GetBalance"]})
    );
}

#[test]
fn ports_plain_http_and_addresses_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (config, why) in [
        (
            "[mobile_plans]\nportal_url = \"https://moportal.example.com:8445/portal\"\n",
            "port",
        ),
        (
            "[mobile_plans]\nportal_url = \"http://moportal.example.com/portal\"\n",
            "https",
        ),
        (
            "[mobile_plans]\ngetbalance_url = \"https://192.0.2.7/v1\"\n",
            "IP",
        ),
    ] {
        let out = run(dir.path(), Some(config), &[]);
        assert!(!out.status.success(), "{config}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{config}: {err}");
    }
}
