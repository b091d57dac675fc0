//! `smdpplus profiles import`: operator CSV with a template, or a folder of
//! finished packages; every bad row reported with its line or file and
//! nothing imported from a bad batch; good batches land and download.

use crate::common::{Server, EID};
use smdpplus::euicc::SoftEuicc;
use smdpplus::ids::Iccid;
use smdpplus::profile::generate::generate;
use smdpplus::profile::saip::Profile;
use smdpplus::profile::template::Template;
use std::process::{Command, Output};

fn import(data: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smdpplus"))
        .args(["profiles", "import", "--data-dir"])
        .arg(data)
        .args(args)
        .output()
        .expect("import")
}

fn iccid(n: u32) -> String {
    Iccid::with_check_digit(&format!("8944880000000{n:05}"))
        .expect("iccid")
        .to_string()
}

const KI: &str = "000102030405060708090A0B0C0D0E0F";
const OPC: &str = "F0E0D0C0B0A090807060504030201000";

#[tokio::test]
async fn csv_and_der_imports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut bad_luhn = iccid(3);
    let last = bad_luhn.pop().expect("digit");
    bad_luhn.push(if last == '0' { '1' } else { '0' });
    let csv = format!(
        "ICCID,IMSI,KI,OPC,profileType\n{},001010000000001,{KI},{OPC},gold\n{bad_luhn},001010000000002,{KI},{OPC}\n{},001010000000003,0011,{OPC}\n{},001010000000004,{KI},{OPC}\n{},12,{KI},{OPC}\n{},001010000000006\n",
        iccid(1),
        iccid(4),
        iccid(1),
        iccid(5),
        iccid(6),
    );
    let csv_path = dir.path().join("in.csv");
    std::fs::write(&csv_path, &csv).expect("csv");
    let out = import(
        &data,
        &[
            "--csv",
            csv_path.to_str().expect("p"),
            "--profile-type",
            "silver",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for (line, what) in [
        (3, "Luhn"),
        (4, "16 bytes"),
        (5, "twice"),
        (6, "IMSI"),
        (7, "columns"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("line {line}:")) && l.contains(what)),
            "line {line} ({what}) in:\n{err}"
        );
    }
    assert!(err.contains("5 bad rows: nothing was imported"), "{err}");

    // The good rows alone import; the profileType column wins over the flag.
    let good = format!(
        "{},001010000000001,{KI},{OPC},gold\n{},001010000000002,{KI},{OPC}\n",
        iccid(1),
        iccid(2)
    );
    std::fs::write(&csv_path, good).expect("csv");
    let out = import(
        &data,
        &[
            "--csv",
            csv_path.to_str().expect("p"),
            "--profile-type",
            "silver",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 2 profiles"));
    // Importing them again: already in the inventory.
    let out = import(&data, &["--csv", csv_path.to_str().expect("p")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for (line, id) in [(1, iccid(1)), (2, iccid(2))] {
        assert!(
            err.contains(&format!(
                "line {line}: ICCID {id} is already in the inventory"
            )),
            "{err}"
        );
    }

    // A folder of finished packages: a malformed file names itself.
    let pkgs = dir.path().join("pkgs");
    std::fs::create_dir_all(&pkgs).expect("dir");
    let tpl = Template::from_toml(smdpplus::profile::stored::DEFAULT_TEMPLATE).expect("template");
    let generated = generate(
        &tpl,
        2,
        "894488000000100000",
        "001010000000100",
        &mut rand::rngs::OsRng,
    )
    .expect("generate");
    for (i, g) in generated.iter().enumerate() {
        std::fs::write(pkgs.join(format!("p{i}.der")), g.upp.as_slice()).expect("write");
    }
    std::fs::write(pkgs.join("zz-broken.der"), &generated[0].upp[..100]).expect("write");
    let out = import(
        &data,
        &[
            "--dir",
            pkgs.to_str().expect("p"),
            "--profile-type",
            "bronze",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zz-broken.der: malformed DER"), "{err}");
    std::fs::remove_file(pkgs.join("zz-broken.der")).expect("rm");
    let out = import(
        &data,
        &[
            "--dir",
            pkgs.to_str().expect("p"),
            "--profile-type",
            "bronze",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The server sees them and binds both kinds.
    let server = Server::start(&data, None);
    let op = server.operator();
    let gold = op.show(&iccid(1)).await;
    assert_eq!(gold["profile"]["profileType"], "gold");
    assert_eq!(op.show(&iccid(2)).await["profile"]["profileType"], "silver");
    let der_iccid = generated[1].params.iccid.to_string();
    // --profile-type files every package under it, whatever type its
    // ProfileHeader names.
    let header_type = Profile::decode(&generated[1].upp)
        .expect("decode")
        .header()
        .and_then(|h| h.profile_type.clone());
    assert!(
        header_type.as_deref().is_some_and(|t| t != "bronze"),
        "{header_type:?}"
    );
    for g in &generated {
        let shown = op.show(&g.params.iccid.to_string()).await;
        assert_eq!(shown["profile"]["profileType"], "bronze", "{shown}");
    }
    let lpa = server.lpa();
    for (target, expect) in [
        (iccid(2), None),
        (der_iccid.clone(), Some(generated[1].upp.to_vec())),
    ] {
        op.order_released(&target, EID).await;
        let report = lpa
            .download(
                &mut SoftEuicc::sgp26_nist().expect("euicc"),
                None,
                None,
                &mut |_| {},
            )
            .await
            .expect("download");
        assert_eq!(report.installed.iccid.to_string(), target);
        if let Some(upp) = expect {
            assert_eq!(
                report.installed.upp, upp,
                "a finished package arrives byte for byte"
            );
        } else {
            assert!(
                hex::encode_upper(&report.installed.upp).contains(KI),
                "the CSV's Ki is in the package"
            );
        }
    }
}

/// `n` good rows from ICCID number `from` on, one a line.
fn rows(from: u32, n: u32) -> String {
    (from..from + n)
        .map(|i| format!("{},00101{i:010},{KI},{OPC}\n", iccid(i)))
        .collect()
}

#[test]
fn csv_checked_whole_before_any_batch_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let csv_path = dir.path().join("in.csv");
    let csv = csv_path.to_str().expect("p");
    // Batches of 4 lines: the header and the first rows fill the first
    // batches, which are good; the last batch holds a bad row.
    let mut text = format!("ICCID,IMSI,KI,OPC\n{}", rows(1, 10));
    text.push_str(&format!("{},001010000000099,{KI},00\n", iccid(11)));
    std::fs::write(&csv_path, &text).expect("csv");
    let out = import(&data, &["--csv", csv, "--batch-lines", "4"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 12:") && err.contains("16 bytes"),
        "{err}"
    );
    assert!(err.contains("1 bad rows: nothing was imported"), "{err}");

    // A duplicate across batches (lines 2 and 8) is found too.
    let dup = format!("{}{}{}", rows(1, 7), rows(2, 1), rows(20, 3));
    std::fs::write(&csv_path, &dup).expect("csv");
    let out = import(&data, &["--csv", csv, "--batch-lines", "4"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("line 8: ICCID {} appears twice", iccid(2))),
        "{err}"
    );

    // Nothing from the first good batches was stored: the good file, in
    // several batches, imports whole.
    std::fs::write(&csv_path, rows(1, 11)).expect("csv");
    let out = import(&data, &["--csv", csv, "--batch-lines", "4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("imported 11 profiles"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
