//! `smdpplus profiles export ICCID --unprotected` writes exactly the package
//! the software eUICC decrypts from a real download, and nothing without
//! the explicit flag.

use crate::common::{iccids, Server, EID};
use smdpplus::euicc::SoftEuicc;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[tokio::test]
async fn export_matches_what_the_euicc_installs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data, None);
    let op = server.operator();
    let iccid = iccids(41, 1).remove(0);
    let package: Vec<u8> = (0..2500u32).map(|i| (i * 7 + 3) as u8).collect();
    op.add_profile_with_package("export-test", &iccid, &package)
        .await;
    op.order_released(&iccid, EID).await;
    let lpa = server.lpa();
    let mut euicc = SoftEuicc::sgp26_nist().expect("euicc");
    let report = lpa
        .download(&mut euicc, None, None, &mut |_| {})
        .await
        .expect("download");

    let cli = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_smdpplus"))
            .args([
                "profiles",
                "export",
                &iccid,
                "--server",
                &format!("https://localhost:{}", server.es2.port()),
                "--data-dir",
            ])
            .arg(&data)
            .args(extra)
            .output()
            .expect("cli")
    };
    let out_file = dir.path().join("profile.der");
    let refused = cli(&["--output", out_file.to_str().expect("path")]);
    assert!(!refused.status.success(), "export needs --unprotected");
    assert!(!out_file.exists());

    let ok = cli(&[
        "--unprotected",
        "--output",
        out_file.to_str().expect("path"),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let exported = std::fs::read(&out_file).expect("exported");
    assert_eq!(
        exported, report.installed.upp,
        "export equals what the eUICC decrypted"
    );
    assert_eq!(exported, package, "and the package the operator gave");
    assert_eq!(
        std::fs::metadata(&out_file)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(server
        .log()
        .contains("unprotected profile package exported"));
}
