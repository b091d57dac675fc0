//! The binary form of a [`ProfileRecord`] on the sled engine.
//!
//! A store of template-based profiles (SGP.22 §2.5.5) holds one record per
//! profile, most of them Available with the same few fields set, so the
//! record is kept small: a version byte ([`FORM_V1`], which no JSON text
//! starts with), then the fields in a fixed order, integers as LEB128
//! varints (signed ones zigzag-coded), strings with a varint length, and
//! one byte of flags saying which optional fields follow. What the key or
//! the other fields give is not stored: the ICCID (the key), and the
//! package key when it is the usual `b/` + ICCID.
//!
//! Records written before this form are JSON (first byte `{`) and are
//! still read; any write stores the binary form. Export files and the
//! PostgreSQL engine keep JSON.
//!
//! | field | form |
//! |---|---|
//! | version byte | `0x01` |
//! | `v` | varint |
//! | `state` | one byte: the index in [`State::ALL`] |
//! | flags | one byte, the `F_*` bits |
//! | `profile_type`, `operator` | strings |
//! | `eid`, `matching_id`, `smds_address` | strings, if flagged |
//! | `cc_hashes` | varint count, then strings |
//! | `download_attempts`, `cc_attempts` | varints |
//! | `expires_at` | zigzag varint, if flagged |
//! | `created_at` | zigzag varint |
//! | `updated_at` | zigzag varint of `updated_at - created_at` |
//! | `package_ref` | string, if flagged (else `b/` + ICCID) |
//! | `history_len` | varint |
//! | `error_reason`, `imported_by` | strings, if flagged |
//! | stored package | the rest of the value, if flagged |
//!
//! The stored package of a profile inserted since this form is the end
//! of its record (one entry per profile); older stores keep it under
//! `b/` + ICCID, which is still read.

use crate::error::{Error, Result};
use crate::store::lifecycle::State;
use crate::store::ProfileRecord;

/// The leading byte of the first binary form. JSON starts with `{` (or
/// whitespace), never with a control byte.
pub(crate) const FORM_V1: u8 = 0x01;

const F_EID: u8 = 1;
const F_MATCHING_ID: u8 = 1 << 1;
const F_SMDS: u8 = 1 << 2;
const F_EXPIRES: u8 = 1 << 3;
const F_PACKAGE_REF: u8 = 1 << 4;
const F_ERROR_REASON: u8 = 1 << 5;
const F_IMPORTED_BY: u8 = 1 << 6;
const F_PACKAGE: u8 = 1 << 7;

/// The package key a record names unless it says otherwise.
fn default_package_ref(iccid: &str) -> String {
    format!("b/{iccid}")
}

/// A profile record as the sled engine stores it (the binary form),
/// with its stored package at the end if `package` is given.
pub(crate) fn encode_profile(r: &ProfileRecord, package: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        32 + r.profile_type.len()
            + r.operator.len()
            + r.imported_by.as_ref().map_or(0, |s| s.len())
            + package.map_or(0, <[u8]>::len),
    );
    out.push(FORM_V1);
    put_varint(&mut out, u64::from(r.v));
    out.push(state_byte(r.state));
    let own_package_ref = r.package_ref != default_package_ref(&r.iccid);
    let mut flags = 0;
    for (set, bit) in [
        (r.eid.is_some(), F_EID),
        (r.matching_id.is_some(), F_MATCHING_ID),
        (r.smds_address.is_some(), F_SMDS),
        (r.expires_at.is_some(), F_EXPIRES),
        (own_package_ref, F_PACKAGE_REF),
        (r.error_reason.is_some(), F_ERROR_REASON),
        (r.imported_by.is_some(), F_IMPORTED_BY),
        (package.is_some(), F_PACKAGE),
    ] {
        if set {
            flags |= bit;
        }
    }
    out.push(flags);
    put_str(&mut out, &r.profile_type);
    put_str(&mut out, &r.operator);
    for s in [&r.eid, &r.matching_id, &r.smds_address]
        .into_iter()
        .flatten()
    {
        put_str(&mut out, s);
    }
    put_varint(&mut out, r.cc_hashes.len() as u64);
    for h in &r.cc_hashes {
        put_str(&mut out, h);
    }
    put_varint(&mut out, u64::from(r.download_attempts));
    put_varint(&mut out, u64::from(r.cc_attempts));
    if let Some(t) = r.expires_at {
        put_varint(&mut out, zigzag(t));
    }
    put_varint(&mut out, zigzag(r.created_at));
    put_varint(&mut out, zigzag(r.updated_at.wrapping_sub(r.created_at)));
    if own_package_ref {
        put_str(&mut out, &r.package_ref);
    }
    put_varint(&mut out, r.history_len);
    for s in [&r.error_reason, &r.imported_by].into_iter().flatten() {
        put_str(&mut out, s);
    }
    if let Some(p) = package {
        out.extend_from_slice(p);
    }
    out
}

/// The stored profile record of `iccid` (the ICCID of its key), in either
/// form: the binary one or JSON. Bad bytes are an error, never a panic.
pub(crate) fn decode_profile(iccid: &str, bytes: &[u8]) -> Result<ProfileRecord> {
    decode_with_package(iccid, bytes).map(|(r, _)| r)
}

/// [`decode_profile`], and the stored package the record ends with, if
/// it holds one (a JSON record never does).
pub(crate) fn decode_with_package<'a>(
    iccid: &str,
    bytes: &'a [u8],
) -> Result<(ProfileRecord, Option<&'a [u8]>)> {
    let r = match bytes.first() {
        Some(&FORM_V1) => decode_v1(iccid, &bytes[1..]),
        _ => serde_json::from_slice(bytes)
            .map(|r| (r, None))
            .map_err(|e| e.to_string()),
    };
    r.map_err(|e| Error::internal(format!("corrupt record {iccid}: {e}")))
}

fn decode_v1<'a>(
    iccid: &str,
    bytes: &'a [u8],
) -> std::result::Result<(ProfileRecord, Option<&'a [u8]>), String> {
    let mut r = Reader(bytes);
    let v = r.u32("v")?;
    let state = *State::ALL
        .get(usize::from(r.byte("state")?))
        .ok_or("unknown state")?;
    let flags = r.byte("flags")?;
    let has = |bit: u8| flags & bit != 0;
    let profile_type = r.string("profile type")?;
    let operator = r.string("operator")?;
    let eid = r.string_if(has(F_EID), "EID")?;
    let matching_id = r.string_if(has(F_MATCHING_ID), "MatchingID")?;
    let smds_address = r.string_if(has(F_SMDS), "SM-DS address")?;
    let n = r.varint("confirmation code hashes")?;
    let mut cc_hashes = Vec::new();
    for _ in 0..n {
        cc_hashes.push(r.string("confirmation code hash")?);
    }
    let download_attempts = r.u32("download attempts")?;
    let cc_attempts = r.u32("confirmation code attempts")?;
    let expires_at = match has(F_EXPIRES) {
        true => Some(unzigzag(r.varint("expiry")?)),
        false => None,
    };
    let created_at = unzigzag(r.varint("creation time")?);
    let updated_at = created_at.wrapping_add(unzigzag(r.varint("update time")?));
    let package_ref = match r.string_if(has(F_PACKAGE_REF), "package key")? {
        Some(p) => p,
        None => default_package_ref(iccid),
    };
    let history_len = r.varint("history length")?;
    let error_reason = r.string_if(has(F_ERROR_REASON), "error reason")?;
    let imported_by = r.string_if(has(F_IMPORTED_BY), "importer")?;
    let package = match has(F_PACKAGE) {
        true => Some(r.0),
        false if r.0.is_empty() => None,
        false => return Err(format!("{} bytes after the record", r.0.len())),
    };
    let record = ProfileRecord {
        v,
        iccid: iccid.to_owned(),
        profile_type,
        operator,
        state,
        eid,
        matching_id,
        cc_hashes,
        smds_address,
        download_attempts,
        cc_attempts,
        expires_at,
        created_at,
        updated_at,
        package_ref,
        history_len,
        error_reason,
        imported_by,
    };
    Ok((record, package))
}

fn state_byte(s: State) -> u8 {
    State::ALL.iter().position(|x| *x == s).unwrap_or(0) as u8
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// The bytes not read yet.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self, what: &str) -> std::result::Result<u8, String> {
        let (&b, rest) = self.0.split_first().ok_or_else(|| format!("no {what}"))?;
        self.0 = rest;
        Ok(b)
    }

    fn varint(&mut self, what: &str) -> std::result::Result<u64, String> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte(what)?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                break;
            }
            n |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(format!("{what}: varint too long"))
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        u32::try_from(self.varint(what)?).map_err(|_| format!("{what} out of range"))
    }

    fn string(&mut self, what: &str) -> std::result::Result<String, String> {
        let n = self.varint(what)?;
        let n = usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.0.len())
            .ok_or_else(|| format!("{what} longer than the record"))?;
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8(s.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }

    fn string_if(
        &mut self,
        present: bool,
        what: &str,
    ) -> std::result::Result<Option<String>, String> {
        present.then(|| self.string(what)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ICCID: &str = "8944000000000000018";

    /// A generated profile as it enters the inventory.
    fn bulk() -> ProfileRecord {
        let p = crate::store::NewProfile {
            iccid: crate::ids::Iccid::parse(ICCID).expect("ICCID"),
            profile_type: "bulk".into(),
            operator: "operator-1".into(),
            package: vec![],
        };
        ProfileRecord::imported(&p, "operator-1", 1_765_000_000)
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-z0-9.:/-]{1,40}", "\\PC{0,12}"]
    }

    fn record() -> impl Strategy<Value = ProfileRecord> {
        (
            (
                any::<u32>(),
                text(),
                text(),
                prop::sample::select(State::ALL.to_vec()),
                prop::option::of(text()),
                prop::option::of(text()),
                prop::collection::vec(text(), 0..3),
                prop::option::of(text()),
            ),
            (
                any::<u32>(),
                any::<u32>(),
                prop::option::of(any::<i64>()),
                any::<i64>(),
                any::<i64>(),
                prop::option::of(text()),
                any::<u64>(),
                prop::option::of(text()),
                prop::option::of(text()),
            ),
        )
            .prop_map(
                |(
                    (v, profile_type, operator, state, eid, matching_id, cc_hashes, smds_address),
                    (
                        download_attempts,
                        cc_attempts,
                        expires_at,
                        created_at,
                        updated_at,
                        package_ref,
                        history_len,
                        error_reason,
                        imported_by,
                    ),
                )| ProfileRecord {
                    v,
                    iccid: ICCID.into(),
                    profile_type,
                    operator,
                    state,
                    eid,
                    matching_id,
                    cc_hashes,
                    smds_address,
                    download_attempts,
                    cc_attempts,
                    expires_at,
                    created_at,
                    updated_at,
                    package_ref: package_ref.unwrap_or_else(|| format!("b/{ICCID}")),
                    history_len,
                    error_reason,
                    imported_by,
                },
            )
    }

    #[test]
    fn a_bulk_record_is_small_and_round_trips() {
        let r = bulk();
        let b = encode_profile(&r, None);
        assert_eq!(b[0], FORM_V1);
        assert!(b.len() <= 48, "{} bytes", b.len());
        assert_eq!(decode_profile(ICCID, &b).expect("decode"), r);
    }

    #[test]
    fn every_option_present_and_absent_round_trips() {
        let mut full = bulk();
        full.state = State::Error;
        full.eid = Some("89049032123451234512345678901235".into());
        full.matching_id = Some(String::new());
        full.cc_hashes = vec!["a".repeat(64), "b".repeat(64)];
        full.smds_address = Some("smds.example.com".into());
        full.download_attempts = u32::MAX;
        full.cc_attempts = 3;
        full.expires_at = Some(i64::MIN);
        full.created_at = i64::MAX;
        full.updated_at = i64::MIN;
        full.package_ref = "b/other".into();
        full.history_len = u64::MAX;
        full.error_reason = Some("expired".into());
        full.imported_by = None;
        for r in [bulk(), full] {
            assert_eq!(
                decode_profile(ICCID, &encode_profile(&r, None)).expect("decode"),
                r
            );
        }
    }

    #[test]
    fn the_package_rides_at_the_end() {
        let r = bulk();
        for p in [&b""[..], &[0u8; 300][..], &[FORM_V1, b'{', 0xff][..]] {
            let b = encode_profile(&r, Some(p));
            let (got, pkg) = decode_with_package(ICCID, &b).expect("decode");
            assert_eq!((got, pkg), (r.clone(), Some(p)));
            assert_eq!(decode_profile(ICCID, &b).expect("decode"), r);
        }
        let b = encode_profile(&r, None);
        assert_eq!(decode_with_package(ICCID, &b).expect("decode").1, None);
    }

    #[test]
    fn an_old_json_record_still_reads() {
        let r = bulk();
        let json = serde_json::to_vec(&r).expect("json");
        assert_eq!(json[0], b'{');
        assert_eq!(decode_profile(ICCID, &json).expect("decode"), r);
        // A JSON record keeps the ICCID it holds.
        let mut other = r.clone();
        other.imported_by = None;
        let json = serde_json::to_vec(&other).expect("json");
        assert_eq!(decode_profile(ICCID, &json).expect("decode"), other);
    }

    #[test]
    fn bad_bytes_are_errors() {
        let b = encode_profile(&bulk(), None);
        for n in 0..b.len() {
            let e = decode_profile(ICCID, &b[..n]).expect_err("truncated");
            assert!(e.message.starts_with("corrupt record"), "{}", e.message);
        }
        let mut wrong = b.clone();
        wrong[0] = 0x02;
        assert!(decode_profile(ICCID, &wrong).is_err());
        let mut trailing = b.clone();
        trailing.push(0);
        assert!(decode_profile(ICCID, &trailing).is_err());
        let mut state = b.clone();
        state[2] = 9;
        assert!(decode_profile(ICCID, &state).is_err());
        let long = [
            FORM_V1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ];
        assert!(decode_profile(ICCID, &long).is_err());
    }

    proptest! {
        #[test]
        fn records_round_trip(
            r in record(),
            package in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
        ) {
            let b = encode_profile(&r, package.as_deref());
            let (got, pkg) = decode_with_package(ICCID, &b).expect("decode");
            prop_assert_eq!(got, r);
            prop_assert_eq!(pkg, package.as_deref());
        }

        #[test]
        fn garbage_never_panics(mut b in prop::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode_profile(ICCID, &b);
            if !b.is_empty() {
                b[0] = FORM_V1;
            }
            let _ = decode_profile(ICCID, &b);
        }

        #[test]
        fn cut_or_flipped_records_never_panic(
            r in record(),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let b = encode_profile(&r, None);
            prop_assert!(decode_profile(ICCID, &b[..cut.index(b.len())]).is_err());
            let mut f = b.clone();
            let i = flip.0.index(f.len());
            f[i] ^= flip.1;
            let _ = decode_profile(ICCID, &f);
        }
    }
}
