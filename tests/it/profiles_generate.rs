//! `smdpplus profiles generate`: personalized template-based profiles
//! written offline into the store, the operator CSV (0600), and the real
//! server binding them at download time: the software eUICC installs the
//! very package `profiles export --unprotected` writes, every time the same.

use crate::common::{Server, EID};
use smdpplus::euicc::SoftEuicc;
use smdpplus::profile::saip::Profile;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[tokio::test]
async fn generated_profiles_download_and_export_identically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let csv = dir.path().join("out.csv");
    let out = Command::new(env!("CARGO_BIN_EXE_smdpplus"))
        .args([
            "profiles",
            "generate",
            "--count",
            "50",
            "--iccid-start",
            "894477000000000000",
            "--imsi-start",
            "001019000000000",
        ])
        .args(["--profile-type", "gen", "--data-dir"])
        .arg(&data)
        .arg("--csv")
        .arg(&csv)
        .output()
        .expect("generate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&csv).expect("csv");
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "ICCID,IMSI,KI,OPC");
    assert_eq!(rows.len(), 51);
    assert_eq!(
        std::fs::metadata(&csv).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    let first: Vec<&str> = rows[1].split(',').collect();
    let iccid = first[0].to_owned();
    assert!(smdpplus::ids::Iccid::parse(&iccid)
        .expect("iccid")
        .luhn_ok());
    assert_eq!(first[1], "001019000000000");
    assert_eq!(
        rows[2].split(',').nth(1),
        Some("001019000000001"),
        "consecutive IMSIs"
    );
    // A range whose last ICCID is taken is refused, and nothing is written.
    let again = Command::new(env!("CARGO_BIN_EXE_smdpplus"))
        .args([
            "profiles",
            "generate",
            "--count",
            "5",
            "--iccid-start",
            "894476999999999996",
            "--imsi-start",
            "001019000000100",
        ])
        .args(["--profile-type", "gen", "--data-dir"])
        .arg(&data)
        .arg("--csv")
        .arg(dir.path().join("again.csv"))
        .output()
        .expect("generate");
    assert!(!again.status.success());
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(
        why.contains(&format!("ICCID {iccid} is already in the inventory"))
            && why.contains("nothing was generated"),
        "{why}"
    );
    assert!(!dir.path().join("again.csv").exists(), "no CSV written");
    assert!(!dir.path().join("again.csv").exists());
    // Ki and OPc are nowhere in clear in the store files.
    let ki = first[2].to_ascii_lowercase();
    for entry in walk(&data.join("db")) {
        let bytes = std::fs::read(&entry).expect("db file");
        let hexed = hex::encode(&bytes);
        assert!(!hexed.contains(&ki), "Ki in clear in {}", entry.display());
    }

    let server = Server::start(&data, None);
    let op = server.operator();
    op.order_released(&iccid, EID).await;
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
    assert_eq!(report.installed.iccid.as_str(), iccid);
    // A real SAIP package: it decodes, names the ICCID, and carries the Ki.
    let profile = Profile::decode(&report.installed.upp).expect("SAIP decodes");
    assert_eq!(profile.iccid().map(|i| i.to_string()), Some(iccid.clone()));
    assert!(
        hex::encode(&report.installed.upp).contains(&ki),
        "the personalized Ki is in the package"
    );

    let export = |name: &str| {
        let path = dir.path().join(name);
        let o = Command::new(env!("CARGO_BIN_EXE_smdpplus"))
            .args([
                "profiles",
                "export",
                &iccid,
                "--unprotected",
                "--server",
                &format!("https://localhost:{}", server.es2.port()),
                "--data-dir",
            ])
            .arg(&data)
            .arg("--output")
            .arg(&path)
            .output()
            .expect("export");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(path).expect("exported")
    };
    let a = export("a.der");
    let b = export("b.der");
    assert_eq!(a, b, "the same profile always generates the same bytes");
    assert_eq!(
        a, report.installed.upp,
        "the eUICC installed exactly the exported package"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// kill -9 in the middle of a bulk generation: every profile the store kept
/// has its row (ICCID, IMSI, Ki, OPc) in the operator's file, because each
/// chunk's rows are synced before the chunk is stored.
#[test]
fn an_interrupted_generation_leaves_no_stored_profile_without_its_row() {
    use smdpplus::store::{ListFilter, Store, StoreOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let csv = dir.path().join("out.csv");
    let mut child = Command::new(env!("CARGO_BIN_EXE_smdpplus"))
        .args(["profiles", "generate", "--count", "2000000"])
        .args(["--iccid-start", "894466000000000000"])
        .args(["--imsi-start", "001015000000000"])
        .args(["--profile-type", "bulk", "--data-dir"])
        .arg(&data)
        .arg("--csv")
        .arg(&csv)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("generate");
    // Wait until the fifth chunk (20,000 rows each) is being written, then
    // kill it: chunks are being stored while later rows are written. The
    // store writer is at most two chunks behind (its queue holds two), so
    // the first chunk was applied; sled writes it out within half a second,
    // waited for too so that a loaded machine cannot make this vacuous.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut applied = None;
    loop {
        let rows = std::fs::metadata(&csv).map(|m| m.len() / 80).unwrap_or(0);
        if rows > 90_000 && applied.is_none() {
            applied = Some(std::time::Instant::now());
        }
        if applied.is_some_and(|t| t.elapsed() > std::time::Duration::from_millis(1500)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "generation too slow");
        assert!(child.try_wait().expect("wait").is_none(), "ended early");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");

    let rows: std::collections::HashMap<String, String> = std::fs::read_to_string(&csv)
        .expect("csv")
        .lines()
        .skip(1)
        .filter_map(|l| {
            l.split_once(',')
                .map(|(i, rest)| (i.to_owned(), rest.to_owned()))
        })
        .collect();
    let store = Store::open(&data.join("db"), StoreOptions::default()).expect("reopen");
    let stored = store.list(&ListFilter::default()).expect("list");
    assert!(
        !stored.is_empty(),
        "some chunks were stored before the kill"
    );
    assert!(stored.len() < 2_000_000, "the kill came before the end");
    for r in &stored {
        let row = rows
            .get(&r.iccid)
            .unwrap_or_else(|| panic!("stored ICCID {} has no row in the file", r.iccid));
        assert_eq!(row.split(',').count(), 3, "complete row for {}", r.iccid);
    }
}
