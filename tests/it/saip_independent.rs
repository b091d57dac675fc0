//! Generated packages checked by an independent implementation: the Python
//! script `tests/tools/saip_check.py` decodes every Profile Element with
//! asn1tools compiled from the TCA ASN.1 (`tests/tools/PEDefinitions-3.3.1.asn`),
//! re-encodes it and compares the bytes, then checks the values against the
//! standards they come from (structure, header, templates, PINs and PUKs,
//! Milenage constants, the MNO-SD). See `profiles/README.md`.
//!
//! Needs `python3` with asn1tools (see `tests/tools/requirements.txt`).
//! Without them the test prints a note and passes, unless
//! `SMDPPLUS_PY_TESTS=require`, when it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::SeedableRng;
use smdpplus::profile::generate::generate;
use smdpplus::profile::template::Template;

fn tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools")
}

fn required() -> bool {
    std::env::var("SMDPPLUS_PY_TESTS").is_ok_and(|v| v == "require")
}

fn python() -> String {
    std::env::var("SMDPPLUS_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Whether python3 and asn1tools are there; prints why not.
fn python_ready() -> bool {
    let probe = Command::new(python())
        .args(["-c", "import asn1tools"])
        .output();
    let why = match probe {
        Ok(out) if out.status.success() => return true,
        Ok(out) => format!(
            "python3 cannot import asn1tools: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("{} not runnable: {e}", python()),
    };
    if required() {
        panic!("SMDPPLUS_PY_TESTS=require but {why}");
    }
    eprintln!(
        "note: skipping the independent SAIP check ({why}); \
         pip install -r tests/tools/requirements.txt, or set SMDPPLUS_PY_TESTS=require to make this fail"
    );
    false
}

fn run_checker(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(python())
        .arg(tools().join("saip_check.py"))
        .args(files)
        .env("SAIP_CHECK_VERBOSE", "1")
        .output()
        .expect("run saip_check.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn write_packages(dir: &Path, template: &str, count: u64, seed: u64) -> Vec<PathBuf> {
    let t =
        Template::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(template)).expect("template");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let profiles =
        generate(&t, count, "894400000000000000", "001010000000000", &mut rng).expect("generate");
    profiles
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let path = dir.join(format!("upp-{i}.der"));
            std::fs::write(&path, &p.upp[..]).expect("write package");
            path
        })
        .collect()
}

#[test]
fn generated_packages_pass_the_independent_checker() {
    if !python_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let files = write_packages(dir.path(), "profiles/smdpplus-usim.toml", 3, 7);
    let (ok, text) = run_checker(&files);
    println!("{text}");
    assert!(ok, "saip_check.py rejected a generated package:\n{text}");
    assert!(text.contains("3 packages checked, 0 with errors"), "{text}");
}

/// The checker is not a rubber stamp: a package with a broken value fails.
#[test]
fn the_checker_rejects_a_corrupted_package() {
    if !python_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let files = write_packages(dir.path(), "profiles/smdpplus-usim.toml", 1, 8);
    let good = std::fs::read(&files[0]).expect("read");

    // A non-canonical length: the ProfileHeader's length in long form.
    let mut long_form = vec![good[0], 0x81];
    long_form.extend_from_slice(&good[1..]);
    let bad = dir.path().join("long-form.der");
    std::fs::write(&bad, &long_form).expect("write");
    let (ok, text) = run_checker(&[bad]);
    assert!(!ok, "a non-DER length must fail:\n{text}");

    // The MF's ADM1 key reference 0A turned into 0B (ADM2): still valid
    // ASN.1, but the PIN status templates then name a key nobody defines.
    let adm1 = [0x80, 0x01, 0x0A, 0x81, 0x08];
    let at = good
        .windows(adm1.len())
        .position(|w| w == adm1)
        .expect("ADM1 PINConfiguration");
    let mut renamed = good.clone();
    renamed[at + 2] = 0x0B;
    let bad = dir.path().join("adm2.der");
    std::fs::write(&bad, &renamed).expect("write");
    let (ok, text) = run_checker(&[bad]);
    assert!(!ok, "an undefined PIN reference must fail:\n{text}");
    assert!(text.contains("names key 0A"), "{text}");
}
