//! `smdpplus keys rotate-master`: every stored secret re-wrapped under a new
//! master key, online (the running server re-wraps while it serves) and
//! offline, with the old key retired and every profile still usable.

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
