//! Inventory import (issue "profile data preparation" §3): an operator input
//! file (CSV: ICCID, IMSI, Ki, OPc, optional profileType) with a template,
//! or a folder of finished packages (`.der`, ICCID and profileType from the
//! ProfileHeader). Every row is checked first; one bad row fails the batch,
//! and every bad row is reported with its line number or file.

use super::params::{Key, Params, Pin, SdKeys};
use super::protect::{Keyring, ProtectedPackage};
use super::saip::ef::Imsi;
use super::saip::Profile;
use super::stored::StoredPackage;
use super::template::Template;
use crate::ids::Iccid;
use crate::store::{NewProfile, Store};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// One rejected row or file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// `line N` of the CSV, or the file name.
    pub at: String,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.reason)
    }
}

/// Rows ready to store, or every reason they are not.
pub type Checked = Result<Vec<NewProfile>, Vec<BadRow>>;

fn in_store(store: &Store, iccid: &Iccid) -> bool {
    matches!(store.get(iccid), Ok(Some(_)))
}

/// Checks an operator input file against `template` and the store, and
/// builds the template-based profiles (PINs, PUKs, ADM1 and MNO-SD keys
/// from the OS CSPRNG; Ki and OPc from the file).
pub fn check_csv(
    text: &str,
    template: &Template,
    default_type: &str,
    operator: &str,
    ring: &Keyring,
    store: &Store,
) -> Checked {
    let mut bad = Vec::new();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut rng = super::params::secret_rng();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || (n == 1 && line.to_ascii_uppercase().starts_with("ICCID")) {
            continue;
        }
        let mut fail = |reason: String| {
            bad.push(BadRow {
                at: format!("line {n}"),
                reason,
            })
        };
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        if !(4..=5).contains(&cols.len()) {
            fail(format!(
                "expected ICCID,IMSI,KI,OPC[,profileType], got {} columns",
                cols.len()
            ));
            continue;
        }
        let Some(iccid) = Iccid::parse(cols[0]) else {
            fail(format!("ICCID {:?} is not 19-20 digits", cols[0]));
            continue;
        };
        if !iccid.luhn_ok() {
            fail(format!("ICCID {iccid} has a bad Luhn check digit"));
            continue;
        }
        if !seen.insert(iccid.clone()) {
            fail(format!("ICCID {iccid} appears twice in the file"));
            continue;
        }
        if in_store(store, &iccid) {
            fail(format!("ICCID {iccid} is already in the inventory"));
            continue;
        }
        let imsi = match Imsi::parse(cols[1]) {
            Ok(i) if i.mnc(template.mnc_digits()).is_ok() => i,
            _ => {
                fail(format!("IMSI {:?} is not valid for the template", cols[1]));
                continue;
            }
        };
        let (Some(ki), Some(opc)) = (key16(cols[2]), key16(cols[3])) else {
            fail("Ki and OPc must be 16 bytes (32 hex digits) each".into());
            continue;
        };
        let profile_type = cols
            .get(4)
            .filter(|t| !t.is_empty())
            .copied()
            .unwrap_or(default_type);
        let params = Params {
            iccid: iccid.clone(),
            imsi,
            ki,
            opc,
            pin1: Pin::random(&mut rng, 4),
            pin2: Pin::random(&mut rng, 4),
            puk1: Pin::random(&mut rng, 8),
            puk2: Pin::random(&mut rng, 8),
            adm1: Pin::random(&mut rng, 8),
            spn: template.spn().to_owned(),
            sd_keys: SdKeys::random(&mut rng),
        };
        if let Err(e) = template.personalize(&params) {
            fail(format!("the template refuses these values: {e}"));
            continue;
        }
        match StoredPackage::template(ring, template, &params) {
            Ok(stored) => out.push(NewProfile {
                iccid,
                profile_type: profile_type.to_owned(),
                operator: operator.to_owned(),
                package: stored.to_bytes(),
            }),
            Err(e) => fail(e.to_string()),
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(bad)
    }
}

fn key16(s: &str) -> Option<Key> {
    (s.len() == 32).then(|| Key::from_hex(s)).flatten()
}

/// Checks a folder of finished packages (`*.der`, in name order) and
/// protects each under a fresh PPK.
pub fn check_der_dir(
    dir: &Path,
    default_type: Option<&str>,
    operator: &str,
    ring: &Keyring,
    store: &Store,
) -> Result<Checked, std::io::Error> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("der")))
        .collect();
    files.sort();
    let mut bad = Vec::new();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for path in files {
        let at = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut fail = |reason: String| {
            bad.push(BadRow {
                at: at.clone(),
                reason,
            })
        };
        let bytes = std::fs::read(&path)?;
        let profile = match Profile::decode(&bytes) {
            Ok(p) => p,
            Err(e) => {
                fail(format!("malformed DER: {e}"));
                continue;
            }
        };
        let Some(iccid) = profile.iccid() else {
            fail("no ProfileHeader ICCID".into());
            continue;
        };
        if !iccid.luhn_ok() {
            fail(format!("ICCID {iccid} has a bad Luhn check digit"));
            continue;
        }
        if !seen.insert(iccid.clone()) {
            fail(format!("ICCID {iccid} appears in two files"));
            continue;
        }
        if in_store(store, &iccid) {
            fail(format!("ICCID {iccid} is already in the inventory"));
            continue;
        }
        let header_type = profile.header().and_then(|h| h.profile_type.clone());
        let Some(profile_type) = header_type.or(default_type.map(str::to_owned)) else {
            fail("no profileType in the ProfileHeader and no --profile-type".into());
            continue;
        };
        match ProtectedPackage::protect(ring, &bytes, iccid.as_str().as_bytes()) {
            Ok(p) => out.push(NewProfile {
                iccid,
                profile_type,
                operator: operator.to_owned(),
                package: p.to_bytes(),
            }),
            Err(e) => fail(e.to_string()),
        }
    }
    Ok(if bad.is_empty() { Ok(out) } else { Err(bad) })
}
