//! Inventory import (SGP.22 §2.5.5, profile data preparation): an operator
//! input file (CSV: ICCID, IMSI, Ki, OPc, optional profileType) with a template,
//! or a folder of finished packages (`.der`, ICCID and profileType from the
//! ProfileHeader). Every row is checked first; one bad row fails the batch,
//! and every bad row is reported with its line number or file.

use super::params::{Key, Params, Pin, SdKeys};
use super::protect::{Keyring, ProtectedPackage};
use super::saip::ef::Imsi;
use super::saip::Profile;
use super::stored::StoredPackage;
use super::template::Template;
use crate::error::Error;
use crate::ids::Iccid;
use crate::store::{NewProfile, Store};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

impl NewProfile {
    /// A profile whose unprotected package `upp` is protected under a fresh
    /// PPK wrapped with `master` (SGP.22 §2.5.5) before it reaches the store.
    pub fn protected(
        iccid: Iccid,
        profile_type: String,
        operator: String,
        upp: &[u8],
        master: &Keyring,
    ) -> Result<NewProfile, Error> {
        let p = ProtectedPackage::protect(master, upp, iccid.as_str().as_bytes())
            .map_err(|e| Error::internal(e.to_string()))?;
        Ok(NewProfile {
            iccid,
            profile_type,
            operator,
            package: p.to_bytes(),
        })
    }
}

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
/// from a CSPRNG; Ki and OPc from the file).
///
/// The rows are checked on all cores, each core with its own generator;
/// duplicates within the file are found afterwards, in file order, so the
/// report is the same whatever the number of cores.
pub fn check_csv(
    text: &str,
    template: &Template,
    default_type: &str,
    operator: &str,
    ring: &Keyring,
    store: &Store,
) -> Checked {
    let rows: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(n, line)| {
            !(line.is_empty() || (*n == 1 && line.to_ascii_uppercase().starts_with("ICCID")))
        })
        .collect();
    let ctx = RowContext {
        template,
        default_type,
        operator,
        ring,
        store,
    };
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    let part = rows.len().div_ceil(threads).max(1);
    let checked: Vec<Vec<RowOutcome>> = std::thread::scope(|scope| {
        let workers: Vec<_> = rows
            .chunks(part)
            .map(|chunk| {
                let ctx = &ctx;
                scope.spawn(move || {
                    let mut rng = super::params::secret_rng();
                    chunk
                        .iter()
                        .map(|(_, line)| ctx.check_row(line, &mut rng))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    vec![RowOutcome {
                        iccid: None,
                        result: Err("a checking thread failed".into()),
                    }]
                })
            })
            .collect()
    });
    let mut bad = Vec::new();
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(rows.len());
    for ((n, _), row) in rows.iter().zip(checked.into_iter().flatten()) {
        let result = match row.iccid {
            Some(iccid) if !seen.insert(iccid.clone()) => {
                Err(format!("ICCID {iccid} appears twice in the file"))
            }
            _ => row.result,
        };
        match result {
            Ok(p) => out.push(p),
            Err(reason) => bad.push(BadRow {
                at: format!("line {n}"),
                reason,
            }),
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(bad)
    }
}

/// What checking one CSV row needs.
struct RowContext<'a> {
    template: &'a Template,
    default_type: &'a str,
    operator: &'a str,
    ring: &'a Keyring,
    store: &'a Store,
}

/// One checked row: its ICCID when that parsed with a good check digit
/// (for the duplicate check), and the profile or why not.
struct RowOutcome {
    iccid: Option<Iccid>,
    result: Result<NewProfile, String>,
}

impl RowContext<'_> {
    fn check_row<R: rand::RngCore + rand::CryptoRng>(&self, line: &str, rng: &mut R) -> RowOutcome {
        let fail = |iccid: Option<&Iccid>, reason: String| RowOutcome {
            iccid: iccid.cloned(),
            result: Err(reason),
        };
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        let (true, [iccid, imsi, ki, opc, rest @ ..]) = (cols.len() <= 5, cols.as_slice()) else {
            let got = cols.len();
            return fail(
                None,
                format!("expected ICCID,IMSI,KI,OPC[,profileType], got {got} columns"),
            );
        };
        let Some(iccid) = Iccid::parse(iccid) else {
            return fail(None, format!("ICCID {iccid:?} is not 19-20 digits"));
        };
        if !iccid.luhn_ok() {
            return fail(None, format!("ICCID {iccid} has a bad Luhn check digit"));
        }
        let result = self.profile(&iccid, imsi, ki, opc, rest.first().copied(), rng);
        RowOutcome {
            iccid: Some(iccid),
            result,
        }
    }

    fn profile<R: rand::RngCore + rand::CryptoRng>(
        &self,
        iccid: &Iccid,
        imsi: &str,
        ki: &str,
        opc: &str,
        profile_type: Option<&str>,
        rng: &mut R,
    ) -> Result<NewProfile, String> {
        if in_store(self.store, iccid) {
            return Err(format!("ICCID {iccid} is already in the inventory"));
        }
        let imsi = match Imsi::parse(imsi) {
            Ok(i) if i.mnc(self.template.mnc_digits()).is_ok() => i,
            _ => return Err(format!("IMSI {imsi:?} is not valid for the template")),
        };
        let (Some(ki), Some(opc)) = (key16(ki), key16(opc)) else {
            return Err("Ki and OPc must be 16 bytes (32 hex digits) each".into());
        };
        let profile_type = profile_type
            .filter(|t| !t.is_empty())
            .unwrap_or(self.default_type);
        let params = Params {
            iccid: iccid.clone(),
            imsi,
            ki,
            opc,
            pin1: Pin::random(rng, 4),
            pin2: Pin::random(rng, 4),
            puk1: Pin::random(rng, 8),
            puk2: Pin::random(rng, 8),
            adm1: Pin::random(rng, 8),
            spn: self.template.spn().to_owned(),
            sd_keys: SdKeys::random(rng),
        };
        self.template
            .personalize(&params)
            .map_err(|e| format!("the template refuses these values: {e}"))?;
        let stored = StoredPackage::template(self.ring, self.template, &params)
            .map_err(|e| e.to_string())?;
        Ok(NewProfile {
            iccid: iccid.clone(),
            profile_type: profile_type.to_owned(),
            operator: self.operator.to_owned(),
            package: stored.to_bytes(),
        })
    }
}

fn key16(s: &str) -> Option<Key> {
    (s.len() == 32).then(|| Key::from_hex(s)).flatten()
}

/// Checks a folder of finished packages (`*.der`, in name order) and
/// protects each under a fresh PPK. `profile_type`, when given, files
/// every package under it; otherwise each goes under its ProfileHeader's
/// profileType.
pub fn check_der_dir(
    dir: &Path,
    profile_type: Option<&str>,
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
        // An unprotected package: its keys are in this buffer, zeroized on drop.
        let bytes = zeroize::Zeroizing::new(std::fs::read(&path)?);
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
        // `--profile-type` overrides the ProfileHeader's profileType.
        let header_type = profile.header().and_then(|h| h.profile_type.clone());
        let Some(profile_type) = profile_type.map(str::to_owned).or(header_type) else {
            fail("no profileType in the ProfileHeader and no --profile-type".into());
            continue;
        };
        match NewProfile::protected(iccid, profile_type, operator.to_owned(), &bytes, ring) {
            Ok(p) => out.push(p),
            Err(e) => fail(e.message),
        }
    }
    Ok(if bad.is_empty() { Ok(out) } else { Err(bad) })
}
