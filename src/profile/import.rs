//! Inventory import (SGP.22 §2.5.5, profile data preparation): an operator
//! input file (CSV: ICCID, IMSI, Ki, OPc, optional profileType) with a template,
//! or a folder of finished packages (`.der`, ICCID and profileType from the
//! ProfileHeader). Every row is checked first; one bad row fails the whole
//! file, and every bad row is reported with its line number or file. A CSV
//! is read twice, batch by batch (checked, then stored), so that memory
//! does not grow with its size; a folder is checked whole in memory.

use super::params::{Key, Params, Pin, SdKeys};
use super::protect::{Keyring, ProtectedPackage};
use super::saip::ef::Imsi;
use super::saip::Profile;
use super::stored::StoredPackage;
use super::template::Template;
use crate::error::Error;
use crate::ids::Iccid;
use crate::store::{NewProfile, Store};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

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

/// Packages ready to store, or every reason they are not.
pub type Checked = Result<Vec<NewProfile>, Vec<BadRow>>;

fn in_store(store: &Store, iccid: &Iccid) -> bool {
    matches!(store.get(iccid), Ok(Some(_)))
}

/// Lines of an operator input file checked together on all cores, and
/// stored in one write: what memory the import holds grows with this, not
/// with the file.
pub const CSV_BATCH_LINES: usize = 20_000;

/// Why a CSV import stopped, other than bad rows.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// Reading the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The check found bad rows: nothing may be stored.
    #[error("{0} bad rows: nothing was imported")]
    BadRows(u64),
    /// The file's size or modification time changed after the check.
    #[error("the file changed after it was checked: nothing was imported")]
    ChangedBeforeStoring,
    /// The bytes from `line` on are not the ones checked.
    #[error(
        "the file changed after it was checked: from line {line} on it is not what was checked; \
         {stored} profiles from the lines before were imported, nothing from line {line} on"
    )]
    Changed {
        /// First line of the batch that differs.
        line: usize,
        /// Profiles stored before it.
        stored: u64,
    },
    /// A checked row could not be built again (the key ring failed).
    #[error(
        "line {line}: {reason}; {stored} profiles from the lines before its batch were imported"
    )]
    Row {
        /// The row's line.
        line: usize,
        /// Why.
        reason: String,
        /// Profiles stored before its batch.
        stored: u64,
    },
    /// The store refused a batch.
    #[error(
        "storing lines {first}-{last}: {source}; {stored} profiles from the lines before were imported"
    )]
    Store {
        /// First line of the batch.
        first: usize,
        /// Last line of the batch.
        last: usize,
        /// Profiles stored before it.
        stored: u64,
        /// The store's error.
        source: Error,
    },
}

/// What checking an operator input file found: the counts, and what
/// storing it needs to store exactly the bytes that were checked (a
/// SHA-256 per batch, the file's size and modification time).
#[derive(Debug)]
pub struct CsvChecked {
    /// Good rows.
    pub rows: u64,
    /// Bad rows, each already reported.
    pub bad: u64,
    batch_lines: usize,
    digests: Vec<[u8; 32]>,
    stamp: Stamp,
}

/// Size and modification time of a file.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl Stamp {
    fn of(file: &File) -> std::io::Result<Stamp> {
        let meta = file.metadata()?;
        Ok(Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// Which pass a row is built for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Every check: the store, and a package built from the template.
    Check,
    /// The row was checked: only its stored form is built.
    Store,
}

/// Imports an operator input file (SGP.22 §2.5.5: profile data prepared
/// from the operator's values) in two passes over an open file, so that
/// memory stays bounded whatever the file's size:
///
/// 1. [`CsvImport::check`] reads it batch by batch and checks every row
///    against the template and the store (PINs, PUKs, ADM1 and MNO-SD keys
///    from a CSPRNG; Ki and OPc from the file; a package built from each),
///    keeping only the ICCIDs seen (16 bytes each) for the duplicate check
///    and a SHA-256 per batch;
/// 2. [`CsvImport::store`], only after a clean check, reads it again,
///    refuses any batch whose bytes differ from the checked ones, and
///    stores each batch in one write.
///
/// The rows of a batch are checked on all cores, each core with its own
/// generator; duplicates are found afterwards, in file order, so the
/// report is the same whatever the number of cores.
pub struct CsvImport<'a> {
    /// Template of every row.
    pub template: &'a Template,
    /// Profile type of the rows without one.
    pub default_type: &'a str,
    /// Owning operator.
    pub operator: &'a str,
    /// Master key ring that wraps the values.
    pub ring: &'a Keyring,
    /// The inventory.
    pub store: &'a Store,
    /// Lines per batch ([`CSV_BATCH_LINES`] unless tuned).
    pub batch_lines: usize,
}

impl CsvImport<'_> {
    /// Pass 1: checks every row of `file` from its start, and tells
    /// `on_bad` of each bad row in file order. Nothing is written.
    pub fn check(
        &self,
        file: &mut File,
        on_bad: &mut dyn FnMut(&BadRow),
    ) -> Result<CsvChecked, CsvError> {
        let stamp = Stamp::of(file)?;
        file.seek(SeekFrom::Start(0))?;
        let mut reader = BatchReader::new(file);
        let mut seen = HashSet::new();
        let mut checked = CsvChecked {
            rows: 0,
            bad: 0,
            batch_lines: self.batch_lines.max(1),
            digests: Vec::new(),
            stamp,
        };
        while let Some(batch) = reader.next_batch(checked.batch_lines)? {
            checked.digests.push(batch.digest);
            for (line, row) in self.build_batch(&batch, Pass::Check) {
                let result = match row.iccid {
                    Some(iccid) if !seen.insert(iccid_key(&iccid)) => {
                        Err(format!("ICCID {iccid} appears twice in the file"))
                    }
                    _ => row.result.map(drop),
                };
                match result {
                    Ok(()) => checked.rows += 1,
                    Err(reason) => {
                        checked.bad += 1;
                        on_bad(&BadRow {
                            at: format!("line {line}"),
                            reason,
                        });
                    }
                }
            }
        }
        Ok(checked)
    }

    /// Pass 2: stores the rows of a clean check, batch by batch, each
    /// batch only if its bytes are the ones checked. `on_stored` hears
    /// the running count. Returns how many profiles were stored.
    pub fn store(
        &self,
        file: &mut File,
        checked: &CsvChecked,
        on_stored: &mut dyn FnMut(u64),
    ) -> Result<u64, CsvError> {
        if checked.bad > 0 {
            return Err(CsvError::BadRows(checked.bad));
        }
        if Stamp::of(file)? != checked.stamp {
            return Err(CsvError::ChangedBeforeStoring);
        }
        file.seek(SeekFrom::Start(0))?;
        let mut reader = BatchReader::new(file);
        let mut stored = 0u64;
        for expected in &checked.digests {
            let line = reader.line;
            let batch = match reader.next_batch(checked.batch_lines)? {
                Some(b) if b.digest == *expected => b,
                _ => return Err(CsvError::Changed { line, stored }),
            };
            stored += self.store_batch(&batch, stored)?;
            on_stored(stored);
        }
        let line = reader.line;
        if reader.next_batch(checked.batch_lines)?.is_some() {
            return Err(CsvError::Changed { line, stored });
        }
        Ok(stored)
    }

    /// Builds one checked batch and stores it in one write.
    fn store_batch(&self, batch: &Batch, stored: u64) -> Result<u64, CsvError> {
        let mut items = Vec::with_capacity(batch.lines);
        for (line, row) in self.build_batch(batch, Pass::Store) {
            match row.result {
                Ok(p) => items.push(p),
                Err(reason) => {
                    return Err(CsvError::Row {
                        line,
                        reason,
                        stored,
                    })
                }
            }
        }
        if items.is_empty() {
            return Ok(0);
        }
        self.store
            .add_profiles(&items, "smdpplus-cli", crate::time::now())
            .map_err(|source| CsvError::Store {
                first: batch.first_line,
                last: batch.first_line + batch.lines.saturating_sub(1),
                stored,
                source,
            })?;
        Ok(items.len() as u64)
    }

    /// Builds the rows of `batch` on all cores, in file order, each with
    /// its line number.
    fn build_batch(&self, batch: &Batch, pass: Pass) -> Vec<(usize, RowOutcome)> {
        let rows = batch.rows();
        let threads = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1);
        let part = rows.len().div_ceil(threads).max(1);
        let outcomes: Vec<Vec<RowOutcome>> = std::thread::scope(|scope| {
            let workers: Vec<_> = rows
                .chunks(part)
                .map(|chunk| scope.spawn(move || self.build_rows(chunk, pass)))
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| {
                        vec![RowOutcome::failed("a checking thread failed".into())]
                    })
                })
                .collect()
        });
        rows.iter()
            .map(|(n, _)| *n)
            .zip(outcomes.into_iter().flatten())
            .collect()
    }

    fn build_rows(&self, rows: &[(usize, Result<&str, String>)], pass: Pass) -> Vec<RowOutcome> {
        let mut rng = super::params::secret_rng();
        rows.iter()
            .map(|(_, line)| match line {
                Ok(line) => self.check_row(line, &mut rng, pass),
                Err(reason) => RowOutcome::failed(reason.clone()),
            })
            .collect()
    }
}

/// An ICCID as a number for the duplicate check: its digits after its
/// length, so that 19 and 20 digits never meet.
fn iccid_key(iccid: &Iccid) -> u128 {
    let s = iccid.as_str();
    s.bytes().fold(s.len() as u128, |k, d| {
        k * 10 + u128::from(d.wrapping_sub(b'0'))
    })
}

/// A run of whole lines of the file, as read.
struct Batch {
    /// Line number of its first line.
    first_line: usize,
    /// How many lines it holds.
    lines: usize,
    /// The bytes: Ki and OPc among them, zeroized on drop.
    bytes: Zeroizing<Vec<u8>>,
    /// SHA-256 of `bytes`.
    digest: [u8; 32],
}

impl Batch {
    /// The rows to check: every line but blank ones and a header on
    /// line 1, trimmed, with its number.
    fn rows(&self) -> Vec<(usize, Result<&str, String>)> {
        self.bytes
            .split(|b| *b == b'\n')
            .take(self.lines)
            .enumerate()
            .map(|(i, raw)| {
                let text = std::str::from_utf8(raw)
                    .map(str::trim)
                    .map_err(|_| "not UTF-8 text".to_owned());
                (self.first_line + i, text)
            })
            .filter(|(n, text)| match text {
                Ok(line) => !(line.is_empty() || (*n == 1 && is_header(line))),
                Err(_) => true,
            })
            .collect()
    }
}

fn is_header(line: &str) -> bool {
    line.get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("ICCID"))
}

/// Reads a file in batches of whole lines through a buffer of its own, so
/// that every copy of the file's bytes is zeroized.
struct BatchReader<'f> {
    file: &'f mut File,
    block: Zeroizing<Vec<u8>>,
    start: usize,
    end: usize,
    /// Number of the next line.
    line: usize,
}

impl<'f> BatchReader<'f> {
    const BLOCK: usize = 64 * 1024;

    fn new(file: &'f mut File) -> BatchReader<'f> {
        BatchReader {
            file,
            block: Zeroizing::new(vec![0; Self::BLOCK]),
            start: 0,
            end: 0,
            line: 1,
        }
    }

    /// The next `max_lines` lines (fewer at the end), or `None` at the end.
    fn next_batch(&mut self, max_lines: usize) -> std::io::Result<Option<Batch>> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(Self::BLOCK));
        let mut ended = 0;
        while ended < max_lines {
            if self.start == self.end && !self.fill()? {
                break;
            }
            let avail = &self.block[self.start..self.end];
            let take = match avail.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    ended += 1;
                    i + 1
                }
                None => avail.len(),
            };
            append_secret(&mut bytes, &avail[..take]);
            self.start += take;
        }
        if bytes.is_empty() {
            return Ok(None);
        }
        let lines = ended + usize::from(bytes.last() != Some(&b'\n'));
        let batch = Batch {
            first_line: self.line,
            lines,
            digest: Sha256::digest(bytes.as_slice()).into(),
            bytes,
        };
        self.line += lines;
        Ok(Some(batch))
    }

    /// Reads the next block; `false` at the end of the file.
    fn fill(&mut self) -> std::io::Result<bool> {
        let n = loop {
            match self.file.read(&mut self.block) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        self.start = 0;
        self.end = n;
        Ok(n > 0)
    }
}

/// Appends to a buffer of secrets; when it must grow, the old allocation
/// is zeroized rather than left behind by a reallocation.
fn append_secret(buf: &mut Zeroizing<Vec<u8>>, more: &[u8]) {
    let need = buf.len() + more.len();
    if need > buf.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(need.max(buf.capacity() * 2)));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(more);
}

/// One checked row: its ICCID when that parsed with a good check digit
/// (for the duplicate check), and the profile or why not.
struct RowOutcome {
    iccid: Option<Iccid>,
    result: Result<NewProfile, String>,
}

/// The columns of a row after its ICCID.
#[derive(Clone, Copy)]
struct RowFields<'a> {
    imsi: &'a str,
    ki: &'a str,
    opc: &'a str,
    profile_type: Option<&'a str>,
}

impl RowOutcome {
    fn failed(reason: String) -> RowOutcome {
        RowOutcome {
            iccid: None,
            result: Err(reason),
        }
    }
}

impl CsvImport<'_> {
    fn check_row<R: rand::RngCore + rand::CryptoRng>(
        &self,
        line: &str,
        rng: &mut R,
        pass: Pass,
    ) -> RowOutcome {
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
        let fields = RowFields {
            imsi,
            ki,
            opc,
            profile_type: rest.first().copied(),
        };
        let result = self.profile(&iccid, &fields, rng, pass);
        RowOutcome {
            iccid: Some(iccid),
            result,
        }
    }

    fn profile<R: rand::RngCore + rand::CryptoRng>(
        &self,
        iccid: &Iccid,
        fields: &RowFields<'_>,
        rng: &mut R,
        pass: Pass,
    ) -> Result<NewProfile, String> {
        let RowFields {
            imsi,
            ki,
            opc,
            profile_type,
        } = *fields;
        if pass == Pass::Check && in_store(self.store, iccid) {
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
        // The check that the values fit: a whole package built from them.
        if pass == Pass::Check {
            self.template
                .personalize(&params)
                .map_err(|e| format!("the template refuses these values: {e}"))?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    const KI: &str = "000102030405060708090A0B0C0D0E0F";
    const OPC: &str = "F0E0D0C0B0A090807060504030201000";

    fn rows(from: u32, n: u32) -> String {
        (from..from + n)
            .map(|i| {
                let iccid =
                    Iccid::with_check_digit(&format!("8944880000000{i:05}")).expect("iccid");
                format!("{iccid},00101{i:010},{KI},{OPC}\n")
            })
            .collect()
    }

    struct Fixture {
        dir: tempfile::TempDir,
        template: Template,
        ring: Keyring,
        store: Store,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().expect("tmp");
            let (ring, _) = Keyring::load_or_create(&dir.path().join("master.key")).expect("ring");
            let store =
                Store::open(&dir.path().join("db"), StoreOptions::default()).expect("store");
            let template =
                Template::from_toml(super::super::stored::DEFAULT_TEMPLATE).expect("template");
            Fixture {
                dir,
                template,
                ring,
                store,
            }
        }

        fn import(&self) -> CsvImport<'_> {
            CsvImport {
                template: &self.template,
                default_type: "t",
                operator: "op",
                ring: &self.ring,
                store: &self.store,
                batch_lines: 3,
            }
        }

        fn file(&self, text: &str) -> (PathBuf, File) {
            let path = self.dir.path().join("in.csv");
            std::fs::write(&path, text).expect("write");
            let file = File::options()
                .read(true)
                .write(true)
                .open(&path)
                .expect("open");
            (path, file)
        }
    }

    #[test]
    fn batches_split_on_whole_lines() {
        let f = Fixture::new();
        let (_, mut file) = f.file("a\nb\n\nc\nd");
        let mut reader = BatchReader::new(&mut file);
        let mut got = Vec::new();
        while let Some(b) = reader.next_batch(2).expect("read") {
            let rows: Vec<_> = b
                .rows()
                .into_iter()
                .map(|(n, r)| (n, r.map(str::to_owned)))
                .collect();
            got.push((b.first_line, b.lines, rows));
        }
        let ok = |n: usize, s: &str| (n, Ok::<_, String>(s.to_owned()));
        assert_eq!(
            got,
            vec![
                (1, 2, vec![ok(1, "a"), ok(2, "b")]),
                (3, 2, vec![ok(4, "c")]),
                (5, 1, vec![ok(5, "d")]),
            ]
        );
    }

    #[test]
    fn a_clean_file_is_stored_whole() {
        let f = Fixture::new();
        let (_, mut file) = f.file(&format!("ICCID,IMSI,KI,OPC\n{}", rows(1, 8)));
        let imp = f.import();
        let checked = imp.check(&mut file, &mut |b| panic!("{b}")).expect("check");
        assert_eq!((checked.rows, checked.bad), (8, 0));
        let mut seen = Vec::new();
        let stored = imp
            .store(&mut file, &checked, &mut |n| seen.push(n))
            .expect("store");
        assert_eq!(stored, 8);
        assert_eq!(seen, vec![2, 5, 8]);
    }

    #[test]
    fn bad_rows_in_any_batch_are_all_reported() {
        let f = Fixture::new();
        let text = format!("{}{}{}x\n", rows(1, 4), rows(3, 1), rows(10, 2));
        let (_, mut file) = f.file(&text);
        let imp = f.import();
        let mut bad = Vec::new();
        let checked = imp
            .check(&mut file, &mut |b| bad.push(b.to_string()))
            .expect("check");
        assert_eq!((checked.rows, checked.bad), (6, 2));
        assert!(bad[0].starts_with("line 5: ICCID") && bad[0].contains("twice"));
        assert!(bad[1].starts_with("line 8:") && bad[1].contains("columns"));
        assert!(matches!(
            imp.store(&mut file, &checked, &mut |_| {}),
            Err(CsvError::BadRows(2))
        ));
    }

    #[test]
    fn a_file_changed_after_the_check_is_not_stored() {
        let f = Fixture::new();
        let (path, mut file) = f.file(&rows(1, 6));
        let imp = f.import();
        let checked = imp.check(&mut file, &mut |b| panic!("{b}")).expect("check");
        // The same size, another value in the second batch: refused there,
        // after the first batch was stored.
        let changed = format!(
            "{}{}",
            rows(1, 3),
            rows(4, 3).replacen(KI, &KI.to_lowercase(), 1)
        );
        std::fs::write(&path, &changed).expect("rewrite");
        let stamp = Stamp::of(&file).expect("stamp");
        let stale = CsvChecked { stamp, ..checked };
        match imp.store(&mut file, &stale, &mut |_| {}) {
            Err(CsvError::Changed { line: 4, stored: 3 }) => {}
            other => panic!("{other:?}"),
        }
        // Size or modification time: refused before anything is stored.
        std::fs::write(&path, rows(20, 3)).expect("rewrite");
        let checked = imp.check(&mut file, &mut |b| panic!("{b}")).expect("check");
        std::fs::write(&path, format!("{}\n", rows(20, 3))).expect("rewrite");
        assert!(matches!(
            imp.store(&mut file, &checked, &mut |_| {}),
            Err(CsvError::ChangedBeforeStoring)
        ));
    }
}
