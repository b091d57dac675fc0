//! Bulk generation of personalized profiles and the operator's
//! output file.
//!
//! ICCIDs are consecutive before their Luhn digit (ITU-T E.118), IMSIs are
//! consecutive, and every secret comes from the caller's cryptographically
//! secure generator (the `CryptoRng` bound). The values are drawn in order
//! from the generator, then the packages are built in parallel; the result
//! depends only on the template, the starting numbers and the generator.
//!
//! The operator's output file is the CSV the HSS/AuC needs to provision the
//! subscriptions (ICCID, IMSI, Ki, OPc). It holds secrets in clear, so it
//! is created with mode 0600 and never overwrites an existing file.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "generation runs inside the server: errors, not panics"
    )
)]

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::{CryptoRng, RngCore};
use zeroize::{Zeroize, Zeroizing};

use super::params::Params;
use super::saip::ef::Imsi;
use super::template::{Template, TemplateError};
use crate::ids::Iccid;

/// Why generation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// The first ICCID is not 18 or 19 digits (without the check digit).
    #[error("--iccid-start must be the 18 or 19 digits before the Luhn check digit")]
    IccidStart,
    /// The first IMSI is not 6 to 15 digits, or too short for the MNC.
    #[error("--imsi-start must be an IMSI of 6 to 15 digits")]
    ImsiStart,
    /// The range runs past the last number of that width.
    #[error("{count} {what}s from {start} run past {width} digits")]
    Exhausted {
        /// `ICCID` or `IMSI`.
        what: &'static str,
        /// The first value.
        start: String,
        /// How many were asked for.
        count: u64,
        /// The width that would overflow.
        width: usize,
    },
    /// A package could not be built.
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// One generated profile: its values and its unprotected package.
#[derive(Clone, PartialEq, Eq)]
pub struct Personalized {
    /// The personalization values (what the store keeps, encrypted).
    pub params: Params,
    /// The unprotected profile package (DER), zeroized on drop.
    pub upp: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Personalized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Personalized")
            .field("iccid", &self.params.iccid)
            .field("imsi", &self.params.imsi)
            .field("upp_len", &self.upp.len())
            .finish_non_exhaustive()
    }
}

/// `start + n` in decimal, keeping the width of `start`.
fn advance(start: &str, n: u64) -> Option<String> {
    let v: u128 = start.parse().ok()?;
    let s = format!(
        "{:0width$}",
        v.checked_add(u128::from(n))?,
        width = start.len()
    );
    (s.len() == start.len()).then_some(s)
}

/// Checks that `count` consecutive values from `start` keep its width.
fn check_range(what: &'static str, start: &str, count: u64) -> Result<(), GenerateError> {
    if count > 0 && advance(start, count - 1).is_none() {
        return Err(GenerateError::Exhausted {
            what,
            start: start.to_owned(),
            count,
            width: start.len(),
        });
    }
    Ok(())
}

/// The first and last ICCIDs (with their Luhn digits) of `count`
/// consecutive ones from `iccid_start`, or `None` for an empty or
/// impossible range.
pub fn iccid_range(iccid_start: &str, count: u64) -> Option<(Iccid, Iccid)> {
    let last = advance(iccid_start, count.checked_sub(1)?)?;
    Some((
        Iccid::with_check_digit(iccid_start)?,
        Iccid::with_check_digit(&last)?,
    ))
}

/// The values of `count` profiles: ICCIDs from `iccid_start` (the digits
/// before the Luhn digit) and IMSIs from `imsi_start`, both consecutive,
/// secrets from `rng`, the template's SPN. Checks the whole range first,
/// so the iterator cannot fail.
pub fn params_iter<'a, R: RngCore + CryptoRng>(
    template: &'a Template,
    count: u64,
    iccid_start: &str,
    imsi_start: &str,
    rng: &'a mut R,
) -> Result<impl Iterator<Item = Params> + 'a, GenerateError> {
    let iccid_ok =
        (18..=19).contains(&iccid_start.len()) && iccid_start.bytes().all(|b| b.is_ascii_digit());
    if !iccid_ok {
        return Err(GenerateError::IccidStart);
    }
    let imsi = Imsi::parse(imsi_start).map_err(|_| GenerateError::ImsiStart)?;
    imsi.mnc(template.mnc_digits())
        .map_err(|_| GenerateError::ImsiStart)?;
    check_range("ICCID", iccid_start, count)?;
    check_range("IMSI", imsi_start, count)?;
    let iccid_start = iccid_start.to_owned();
    let imsi_start = imsi_start.to_owned();
    Ok((0..count).filter_map(move |i| {
        // Both ranges were checked above, so these never fail.
        let iccid = Iccid::with_check_digit(&advance(&iccid_start, i)?)?;
        let imsi = Imsi::parse(&advance(&imsi_start, i)?).ok()?;
        Some(Params::random(iccid, imsi, template.spn(), rng))
    }))
}

/// Generates `count` personalized profiles of `template`: consecutive
/// ICCIDs (from the 18 or 19 digits `iccid_start`, each with its Luhn
/// digit), consecutive IMSIs from `imsi_start`, and Ki, OPc, PINs, PUKs,
/// ADM1 and the MNO-SD keys from the CSPRNG `rng`. Packages are built on
/// all cores; the output does not depend on how many.
pub fn generate<R: RngCore + CryptoRng>(
    template: &Template,
    count: u64,
    iccid_start: &str,
    imsi_start: &str,
    rng: &mut R,
) -> Result<Vec<Personalized>, GenerateError> {
    let params: Vec<Params> = params_iter(template, count, iccid_start, imsi_start, rng)?.collect();
    personalize_all(template, params)
}

/// Builds the packages of many profiles, in order, on all cores.
pub fn personalize_all(
    template: &Template,
    params: Vec<Params>,
) -> Result<Vec<Personalized>, GenerateError> {
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    let chunk = params.len().div_ceil(threads).max(1);
    let mut results: Vec<Result<Vec<Personalized>, TemplateError>> = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = params
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|p| {
                            Ok(Personalized {
                                upp: template.personalize(p)?,
                                params: p.clone(),
                            })
                        })
                        .collect::<Result<Vec<_>, TemplateError>>()
                })
            })
            .collect();
        for h in handles {
            results.push(h.join().unwrap_or_else(|_| {
                Err(TemplateError::Personalize {
                    what: "worker".into(),
                    reason: "a personalization thread panicked".into(),
                })
            }));
        }
    });
    let mut out = Vec::with_capacity(params.len());
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// The operator's output file: CSV with a header row `ICCID,IMSI,KI,OPC`
/// and one row per profile (hex in upper case), for the HSS/AuC.
///
/// Created with mode 0600 and refused if the file exists. Rows pass
/// through a buffer that is zeroized after every write to the file; call
/// [`OperatorCsv::finish`] to write the last rows and sync (rows still
/// buffered when the writer is dropped are discarded, zeroized).
pub struct OperatorCsv {
    file: std::fs::File,
    path: PathBuf,
    buf: Zeroizing<Vec<u8>>,
    rows: u64,
}

impl fmt::Debug for OperatorCsv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorCsv")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl OperatorCsv {
    /// The CSV header row.
    pub const HEADER: &'static str = "ICCID,IMSI,KI,OPC\n";
    const FLUSH_AT: usize = 64 * 1024;

    /// Creates the file (mode 0600; an existing file is an error) and
    /// writes the header row.
    pub fn create(path: &Path) -> std::io::Result<OperatorCsv> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        // The mode above is filtered by the umask; make it exact.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let mut csv = OperatorCsv {
            file,
            path: path.to_owned(),
            buf: Zeroizing::new(Vec::with_capacity(Self::FLUSH_AT + 128)),
            rows: 0,
        };
        csv.buf.extend_from_slice(Self::HEADER.as_bytes());
        Ok(csv)
    }

    /// Appends one profile's row.
    pub fn write(&mut self, p: &Params) -> std::io::Result<()> {
        let line = Zeroizing::new(format!(
            "{},{},{},{}\n",
            p.iccid,
            p.imsi,
            p.ki.to_hex().as_str(),
            p.opc.to_hex().as_str()
        ));
        self.buf.extend_from_slice(line.as_bytes());
        self.rows += 1;
        if self.buf.len() >= Self::FLUSH_AT {
            self.flush_buf()?;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> std::io::Result<()> {
        let r = self.file.write_all(&self.buf);
        // Zeroes the contents and clears the buffer, keeping its capacity.
        self.buf.zeroize();
        r
    }

    /// Writes what is buffered and syncs the file to disk. Call it before
    /// the rows' profiles are stored, so that the file always holds every
    /// stored profile's keys, whenever the process stops.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.flush_buf()?;
        self.file.sync_data()
    }

    /// Writes what is buffered, syncs the file to disk, and returns its
    /// path and the number of rows.
    pub fn finish(mut self) -> std::io::Result<(PathBuf, u64)> {
        self.flush_buf()?;
        self.file.sync_all()?;
        Ok((self.path.clone(), self.rows))
    }
}

/// Writes the operator's output file for `profiles` (see [`OperatorCsv`]).
pub fn write_operator_csv<'a>(
    path: &Path,
    profiles: impl IntoIterator<Item = &'a Params>,
) -> std::io::Result<u64> {
    let mut csv = OperatorCsv::create(path)?;
    for p in profiles {
        csv.write(p)?;
    }
    Ok(csv.finish()?.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_keeps_the_width() {
        assert_eq!(advance("000123", 1).as_deref(), Some("000124"));
        assert_eq!(
            advance("899990000000000099", 1).as_deref(),
            Some("899990000000000100")
        );
        assert_eq!(advance("99", 1), None);
        assert_eq!(advance("99", 0).as_deref(), Some("99"));
        assert!(check_range("IMSI", "001019999999999", 1).is_ok());
        assert!(check_range("IMSI", "001019999999999", 2).is_ok());
        assert!(check_range("IMSI", "999999999999998", 2).is_ok());
        assert!(check_range("IMSI", "999999999999998", 3).is_err());
        assert!(check_range("IMSI", "999999999999999", 0).is_ok());
    }
}
