//! `smdpplus keys rotate-master`: every stored secret re-wrapped under a new
//! master key, online (the running server re-wraps while it serves) and
//! offline, with the old key retired and every profile still usable.

use crate::common::hsm::TestToken;
use crate::common::{iccids, Server, EID};
use smdpplus::euicc::SoftEuicc;
use std::process::Command;

fn rotate(data: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_smdpplus"))
        .args([
            "keys",
            "rotate-master",
            "--timeout-secs",
            "60",
            "--data-dir",
        ])
        .arg(data)
        .output()
        .expect("cli")
}

#[tokio::test]
async fn rotation_online_then_offline_keeps_every_profile_usable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Server::start(&data, None);
    let op = server.operator();
    let ids = iccids(51, 3);
    let packages: Vec<Vec<u8>> = (0..3u8)
        .map(|k| (0..1500u32).map(|i| (i as u8) ^ k).collect())
        .collect();
    for (i, p) in ids.iter().zip(&packages) {
        op.add_profile_with_package("rot", i, p).await;
    }
    let key_file = data.join("master.key");
    let before = std::fs::read_to_string(&key_file).expect("key file");
    assert_eq!(before.lines().count(), 1);

    // Online: the server re-wraps while it serves.
    let out = rotate(&data);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let after = std::fs::read_to_string(&key_file).expect("key file");
    assert_eq!(after.lines().count(), 1, "old key retired");
    assert!(after.starts_with("1:"), "{after}");
    let old_hex = before.trim().rsplit(':').next().expect("hex");
    assert!(
        !after.contains(old_hex),
        "the old key is gone from the file"
    );
    let (_, m) = server.ops_get("/metrics").await;
    assert!(m.contains("smdpplus_master_key_id 1"), "{m}");
    assert!(m.contains("smdpplus_master_key_rewrap_pending 0"), "{m}");
    assert!(server.log().contains("master key rotation complete"));

    // The profiles still download and decrypt to the same bytes.
    op.order_released(&ids[0], EID).await;
    let lpa = server.lpa();
    let report = lpa
        .download(
            &mut SoftEuicc::sgp26_nist().expect("euicc"),
            None,
            None,
            &mut |_| {},
        )
        .await
        .expect("download");
    assert_eq!(report.installed.upp, packages[0]);

    // Offline: with the server stopped, the command re-wraps itself.
    assert!(server.terminate().success());
    let out = rotate(&data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("master key 2 is current; 103 stored secrets re-wrapped"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(std::fs::read_to_string(&key_file)
        .expect("key")
        .starts_with("2:"));
    let server = Server::start(&data, None);
    let op = server.operator();
    for (i, p) in ids.iter().zip(&packages).skip(1) {
        let (s, v) = op
            .admin(
                hyper::Method::GET,
                &format!("profiles/{i}/package?unprotected=true"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        use base64::Engine;
        let got = base64::engine::general_purpose::STANDARD
            .decode(v["package"].as_str().expect("b64"))
            .expect("decode");
        assert_eq!(&got, p);
    }
}

// ---------------------------------------------------------------------------
// The master key on a PKCS#11 token (SoftHSM2): the same rotations, with
// every key a non-extractable AES-256 key generated on the token.

fn rotate_with(config: &std::path::Path, data: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_smdpplus"))
        .args(["keys", "rotate-master", "--timeout-secs", "60", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env_remove("SMDPPLUS_HSM_PIN")
        .output()
        .expect("cli")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The unprotected package of `iccid`, through the admin API.
async fn package(op: &crate::common::Operator, iccid: &str) -> Vec<u8> {
    let (s, v) = op
        .admin(
            hyper::Method::GET,
            &format!("profiles/{iccid}/package?unprotected=true"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(v["package"].as_str().expect("b64"))
        .expect("decode")
}

#[tokio::test]
async fn rotation_on_the_token_online_then_offline_keeps_every_profile_usable() {
    let Some(token) = TestToken::create("rot_token") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = format!(
        "{}master_key_label = \"smdpplus-master\"\n",
        token.hsm_section()
    );
    let config_file = dir.path().join("smdpplus.toml");
    std::fs::write(&config_file, &config).expect("config");
    let mut server = Server::start(&data, Some(&config));
    assert!(
        !data.join("master.key").exists(),
        "no key file: the master key is on the token"
    );
    let list = |dir: &std::path::Path| {
        let (code, out, err) = token.keys(dir, &config, &["hsm-list"]);
        assert_eq!(code, 0, "{out}{err}");
        out
    };
    let out = list(dir.path());
    assert!(
        out.lines().any(|l| l.contains("secret key")
            && l.contains("\"smdpplus-master-0\"")
            && l.contains("sensitive, not extractable")),
        "{out}"
    );
    assert!(out.contains("master key 0"), "{out}");

    let op = server.operator();
    let ids = iccids(61, 3);
    let packages: Vec<Vec<u8>> = (0..3u8)
        .map(|k| (0..1500u32).map(|i| (i as u8) ^ k ^ 0x5A).collect())
        .collect();
    for (i, p) in ids.iter().zip(&packages) {
        op.add_profile_with_package("rot", i, p).await;
    }

    // Online: a new key on the token, the running server re-wraps.
    let out = rotate_with(&config_file, &data);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("generated master key 1"),
        "{}",
        text(&out)
    );
    let listed = list(dir.path());
    assert!(listed.contains("\"smdpplus-master-1\""), "{listed}");
    assert!(
        !listed.contains("\"smdpplus-master-0\""),
        "the old key is destroyed on the token:\n{listed}"
    );
    let (_, m) = server.ops_get("/metrics").await;
    assert!(m.contains("smdpplus_master_key_id 1"), "{m}");
    assert!(server.log().contains("master key rotation complete"));
    assert!(!data.join("master.key").exists());

    // A download unwraps its PPK on the token.
    op.order_released(&ids[0], EID).await;
    let report = server
        .lpa()
        .download(
            &mut SoftEuicc::sgp26_nist().expect("euicc"),
            None,
            None,
            &mut |_| {},
        )
        .await
        .expect("download");
    assert_eq!(report.installed.upp, packages[0]);

    // Offline: the command re-wraps on the token itself.
    assert!(server.terminate().success());
    let out = rotate_with(&config_file, &data);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out)
            .contains("master key 2 is current (on the token); 103 stored secrets re-wrapped"),
        "{}",
        text(&out)
    );
    let listed = list(dir.path());
    assert!(
        listed.contains("\"smdpplus-master-2\"") && !listed.contains("\"smdpplus-master-1\""),
        "{listed}"
    );
    let server = Server::start(&data, Some(&config));
    let op = server.operator();
    for (i, p) in ids.iter().zip(&packages).skip(1) {
        assert_eq!(&package(&op, i).await, p);
    }
}

#[tokio::test]
async fn rotation_moves_the_file_master_key_onto_the_token() {
    let Some(token) = TestToken::create("rot_move") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Server::start(&data, Some("seed_demo_profiles = 0\n"));
    let op = server.operator();
    let ids = iccids(71, 2);
    let packages: Vec<Vec<u8>> = (0..2u8)
        .map(|k| (0..1200u32).map(|i| (i as u8) ^ k ^ 0x33).collect())
        .collect();
    for (i, p) in ids.iter().zip(&packages) {
        op.add_profile_with_package("mv", i, p).await;
    }
    assert!(data.join("master.key").is_file());
    assert!(server.terminate().success());

    let config = format!(
        "seed_demo_profiles = 0\n{}master_key_label = \"smdpplus-master\"\n",
        token.hsm_section()
    );
    let config_file = dir.path().join("smdpplus.toml");
    std::fs::write(&config_file, &config).expect("config");
    let out = rotate_with(&config_file, &data);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("master key 1 is current (on the token); 2 stored secrets re-wrapped"),
        "{}",
        text(&out)
    );
    assert!(
        !data.join("master.key").exists(),
        "the file key is retired with its file"
    );
    let server = Server::start(&data, Some(&config));
    let op = server.operator();
    for (i, p) in ids.iter().zip(&packages) {
        assert_eq!(&package(&op, i).await, p);
    }
}
