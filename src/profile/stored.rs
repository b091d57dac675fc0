//! The two forms a profile is stored in (SGP.22 §2.5.5), neither ever in
//! clear:
//! - [`StoredPackage::Protected`]: a finished package imported as DER, kept
//!   as a Protected Profile Package (segments under a per-profile PPK);
//! - [`StoredPackage::Template`]: a template-based profile, kept as its
//!   personalization values wrapped under the master key plus the template
//!   id, a few hundred bytes; its package is generated when it is bound,
//!   byte-identical every time.

use super::params::{Key, Params, Pin, SdKeys};
use super::protect::{Keyring, ProtectError, ProtectedPackage};
use super::saip::ef::Imsi;
use super::template::Template;
use crate::ids::Iccid;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use zeroize::Zeroizing;

/// A template-based profile as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TemplateProfile {
    /// Record version.
    pub v: u32,
    /// Template id.
    pub template: String,
    /// Id of the master key wrapping `params`.
    pub key: u32,
    /// The personalization values, wrapped (AES-256-GCM, bound to the ICCID).
    #[serde(with = "crate::b64")]
    pub params: Vec<u8>,
}

/// First byte of the binary form of a stored template-based profile (the
/// JSON forms of both kinds start with `{`).
pub const TEMPLATE_V2: u8 = 1;

/// A stored profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredPackage {
    /// A finished package, protected under its PPK.
    Protected(ProtectedPackage),
    /// A template and its wrapped personalization values.
    Template(TemplateProfile),
}

/// The templates a server knows, by id.
#[derive(Clone, Default)]
pub struct Templates(HashMap<String, Arc<Template>>);

/// The template shipped in `profiles/`, compiled in.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../profiles/smdpplus-usim.toml");

impl Templates {
    /// The shipped template plus the given files.
    pub fn load(extra: &[std::path::PathBuf]) -> Result<Templates, String> {
        let mut t = Templates::default();
        let default =
            Template::from_toml(DEFAULT_TEMPLATE).map_err(|e| format!("shipped template: {e}"))?;
        t.0.insert(default.id().to_owned(), Arc::new(default));
        for p in extra {
            let tpl = Template::load(p).map_err(|e| format!("{}: {e}", p.display()))?;
            t.0.insert(tpl.id().to_owned(), Arc::new(tpl));
        }
        Ok(t)
    }

    /// A template by id.
    pub fn get(&self, id: &str) -> Option<&Arc<Template>> {
        self.0.get(id)
    }
}

fn err(e: impl std::fmt::Display) -> ProtectError {
    ProtectError::Corrupt(e.to_string())
}

/// Version byte of the binary personalization record. The first form,
/// `name=value` text lines, starts with `v=1` (0x76) and is still read.
const PARAMS_V2: u8 = 2;

/// The personalization values, the plaintext that gets wrapped under the
/// master key (SGP.22 §2.5.5: nothing of a profile in clear): a version
/// byte, then the ICCID, IMSI, PIN1, PIN2, PUK1, PUK2 and ADM1 as packed
/// decimal digits (a count byte, then two digits an octet), the SPN as a
/// length byte and its UTF-8 octets, then Ki, OPc and the six MNO-SD keys
/// as 16 raw octets each. Kept in zeroizing memory.
pub fn encode_params(p: &Params) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(200));
    out.push(PARAMS_V2);
    for digits in [
        p.iccid.as_str(),
        p.imsi.as_str(),
        p.pin1.expose(),
        p.pin2.expose(),
        p.puk1.expose(),
        p.puk2.expose(),
        p.adm1.expose(),
    ] {
        push_digits(&mut out, digits);
    }
    // An SPN is at most 16 octets (ETSI TS 131 102 EF.SPN); a longer one
    // would not fit the file either, so the length byte cannot overflow
    // for a value a template accepts. Longer values are cut at a
    // character boundary rather than stored wrongly.
    let mut spn = p.spn.as_str();
    while spn.len() > 255 {
        let mut end = 255;
        while !spn.is_char_boundary(end) {
            end -= 1;
        }
        spn = &spn[..end];
    }
    out.push(spn.len() as u8);
    out.extend_from_slice(spn.as_bytes());
    for k in [
        &p.ki,
        &p.opc,
        &p.sd_keys.scp80_kic,
        &p.sd_keys.scp80_kid,
        &p.sd_keys.scp80_kik,
        &p.sd_keys.scp03_enc,
        &p.sd_keys.scp03_mac,
        &p.sd_keys.scp03_dek,
    ] {
        out.extend_from_slice(k.expose());
    }
    out
}

/// Decimal digits packed two an octet (high nibble first) after a count
/// byte.
fn push_digits(out: &mut Vec<u8>, digits: &str) {
    let d = digits.as_bytes();
    out.push(d.len() as u8);
    for pair in d.chunks(2) {
        let hi = pair.first().map_or(0, |b| b.wrapping_sub(b'0') & 0x0f);
        let lo = pair.get(1).map_or(0, |b| b.wrapping_sub(b'0') & 0x0f);
        out.push(hi << 4 | lo);
    }
}

/// Reads a binary personalization record.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ProtectError> {
        if self.0.len() < n {
            return Err(err("personalization record truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn byte(&mut self) -> Result<u8, ProtectError> {
        Ok(self.take(1)?[0])
    }

    fn digits(&mut self) -> Result<Zeroizing<String>, ProtectError> {
        let n = self.byte()? as usize;
        let packed = self.take(n.div_ceil(2))?;
        let mut s = Zeroizing::new(String::with_capacity(n));
        for i in 0..n {
            let b = packed[i / 2];
            let d = if i % 2 == 0 { b >> 4 } else { b & 0x0f };
            if d > 9 {
                return Err(err("personalization digit out of range"));
            }
            s.push(char::from(b'0' + d));
        }
        Ok(s)
    }

    fn key(&mut self) -> Result<Key, ProtectError> {
        let mut k = [0u8; 16];
        k.copy_from_slice(self.take(16)?);
        let key = Key::from_bytes(k);
        zeroize::Zeroize::zeroize(&mut k);
        Ok(key)
    }
}

fn decode_params_v2(bytes: &[u8]) -> Result<Params, ProtectError> {
    let mut r = Reader(bytes);
    if r.byte()? != PARAMS_V2 {
        return Err(err("unknown personalization record version"));
    }
    let iccid = Iccid::parse(&r.digits()?).ok_or_else(|| err("bad ICCID"))?;
    let imsi = Imsi::parse(&r.digits()?).map_err(err)?;
    let mut pin = || r.digits().and_then(|d| Pin::new(&d).map_err(err));
    let (pin1, pin2, puk1, puk2, adm1) = (pin()?, pin()?, pin()?, pin()?, pin()?);
    let n = r.byte()? as usize;
    let spn = std::str::from_utf8(r.take(n)?).map_err(err)?.to_owned();
    let params = Params {
        iccid,
        imsi,
        ki: r.key()?,
        opc: r.key()?,
        pin1,
        pin2,
        puk1,
        puk2,
        adm1,
        spn,
        sd_keys: SdKeys {
            scp80_kic: r.key()?,
            scp80_kid: r.key()?,
            scp80_kik: r.key()?,
            scp03_enc: r.key()?,
            scp03_mac: r.key()?,
            scp03_dek: r.key()?,
        },
    };
    if !r.0.is_empty() {
        return Err(err("trailing bytes in personalization record"));
    }
    Ok(params)
}

/// The inverse of [`encode_params`]; also reads the first form,
/// `name=value` lines with the keys in hex.
pub fn decode_params(bytes: &[u8]) -> Result<Params, ProtectError> {
    if bytes.first() == Some(&PARAMS_V2) {
        return decode_params_v2(bytes);
    }
    let text = std::str::from_utf8(bytes).map_err(err)?;
    let mut m: HashMap<&str, &str> = HashMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            m.insert(k, v);
        }
    }
    let get = |k: &str| {
        m.get(k)
            .copied()
            .ok_or_else(|| err(format!("personalization value {k} missing")))
    };
    let key = |k: &str| {
        get(k)
            .and_then(|v| Key::from_hex(v).ok_or_else(|| err(format!("{k} is not a 16-byte key"))))
    };
    let pin = |k: &str| get(k).and_then(|v| Pin::new(v).map_err(err));
    if get("v")? != "1" {
        return Err(err("unknown personalization record version"));
    }
    Ok(Params {
        iccid: Iccid::parse(get("iccid")?).ok_or_else(|| err("bad ICCID"))?,
        imsi: Imsi::parse(get("imsi")?).map_err(err)?,
        ki: key("ki")?,
        opc: key("opc")?,
        pin1: pin("pin1")?,
        pin2: pin("pin2")?,
        puk1: pin("puk1")?,
        puk2: pin("puk2")?,
        adm1: pin("adm1")?,
        spn: get("spn")?.to_owned(),
        sd_keys: SdKeys {
            scp80_kic: key("kic")?,
            scp80_kid: key("kid")?,
            scp80_kik: key("kik")?,
            scp03_enc: key("enc")?,
            scp03_mac: key("mac")?,
            scp03_dek: key("dek")?,
        },
    })
}

impl StoredPackage {
    /// A template-based profile: its values wrapped under the current key.
    pub fn template(
        ring: &Keyring,
        template: &Template,
        params: &Params,
    ) -> Result<StoredPackage, ProtectError> {
        let context = params.iccid.as_str().as_bytes();
        let (key, wrapped) = ring.wrap_current(&encode_params(params), context)?;
        Ok(StoredPackage::Template(TemplateProfile {
            v: 1,
            template: template.id().to_owned(),
            key,
            params: wrapped,
        }))
    }

    /// The stored form. A template-based profile is binary: the version
    /// byte [`TEMPLATE_V2`], the master key id (4 octets, big-endian), the
    /// template id (a length byte and its octets), then the wrapped
    /// personalization values to the end. Its first form, JSON, starts
    /// with `{` and is still read.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            StoredPackage::Protected(p) => p.to_bytes(),
            StoredPackage::Template(t) => match u8::try_from(t.template.len()) {
                Ok(n) => {
                    let mut out = Vec::with_capacity(6 + t.template.len() + t.params.len());
                    out.push(TEMPLATE_V2);
                    out.extend_from_slice(&t.key.to_be_bytes());
                    out.push(n);
                    out.extend_from_slice(t.template.as_bytes());
                    out.extend_from_slice(&t.params);
                    out
                }
                // A template id this long keeps the first form.
                Err(_) => serde_json::to_vec(t).unwrap_or_default(),
            },
        }
    }

    /// Parses the stored form (either kind, either form).
    pub fn from_bytes(b: &[u8]) -> Result<StoredPackage, ProtectError> {
        if let Some((&TEMPLATE_V2, rest)) = b.split_first() {
            let mut r = Reader(rest);
            let mut id = [0u8; 4];
            id.copy_from_slice(r.take(4)?);
            let n = r.byte()? as usize;
            let template = std::str::from_utf8(r.take(n)?).map_err(err)?.to_owned();
            return Ok(StoredPackage::Template(TemplateProfile {
                v: 1,
                template,
                key: u32::from_be_bytes(id),
                params: r.0.to_vec(),
            }));
        }
        if let Ok(t) = serde_json::from_slice::<TemplateProfile>(b) {
            return Ok(StoredPackage::Template(t));
        }
        ProtectedPackage::from_bytes(b).map(StoredPackage::Protected)
    }

    /// The personalization values of a template-based profile.
    pub fn params(&self, ring: &Keyring, iccid: &str) -> Result<Option<Params>, ProtectError> {
        match self {
            StoredPackage::Protected(_) => Ok(None),
            StoredPackage::Template(t) => {
                let plain = ring.unwrap_with(t.key, &t.params, iccid.as_bytes())?;
                decode_params(&plain).map(Some)
            }
        }
    }

    /// The package as a Protected Profile Package, ready for binding: as
    /// stored, or generated from its template and protected under a fresh
    /// PPK now (AES over the package; microseconds next to the ECDSA work).
    pub fn protected(
        &self,
        ring: &Keyring,
        templates: &Templates,
        iccid: &str,
    ) -> Result<ProtectedPackage, ProtectError> {
        match self {
            StoredPackage::Protected(p) => Ok(p.clone()),
            StoredPackage::Template(_) => {
                let upp = self.unprotected(ring, templates, iccid)?;
                ProtectedPackage::protect(ring, &upp, iccid.as_bytes())
            }
        }
    }

    /// The package in clear (export, session-key-only binding).
    pub fn unprotected(
        &self,
        ring: &Keyring,
        templates: &Templates,
        iccid: &str,
    ) -> Result<Zeroizing<Vec<u8>>, ProtectError> {
        match self {
            StoredPackage::Protected(p) => p.decrypt(ring, iccid.as_bytes()),
            StoredPackage::Template(t) => {
                let tpl = templates
                    .get(&t.template)
                    .ok_or_else(|| err(format!("unknown template {}", t.template)))?;
                let params = self
                    .params(ring, iccid)?
                    .ok_or_else(|| err("no personalization values"))?;
                tpl.personalize(&params).map_err(err)
            }
        }
    }

    /// Re-wraps the stored secret under the ring's current key; false if
    /// it already was.
    pub fn rewrap(&mut self, ring: &Keyring, iccid: &str) -> Result<bool, ProtectError> {
        match self {
            StoredPackage::Protected(p) => p.rewrap(ring, iccid.as_bytes()),
            StoredPackage::Template(t) => {
                if t.key == ring.current_id() {
                    return Ok(false);
                }
                let plain = ring.unwrap_with(t.key, &t.params, iccid.as_bytes())?;
                let (key, wrapped) = ring.wrap_current(&plain, iccid.as_bytes())?;
                t.key = key;
                t.params = wrapped;
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::protect::{MasterEntry, MasterKey};
    use base64::Engine;

    fn params() -> Params {
        Params::random(
            Iccid::parse("8944000000000000015").expect("iccid"),
            Imsi::parse("001010000000001").expect("imsi"),
            "Opérateur",
            &mut rand::thread_rng(),
        )
    }

    /// The first form of the plaintext, as written before the binary one.
    const TEXT_PARAMS: &str = "v=1\niccid=8944000000000000015\nimsi=001010000000001\n\
        ki=000102030405060708090A0B0C0D0E0F\nopc=101112131415161718191A1B1C1D1E1F\n\
        pin1=1234\npin2=5678\npuk1=12345678\npuk2=87654321\nadm1=11223344\nspn=smdpplus\n\
        kic=202122232425262728292A2B2C2D2E2F\nkid=303132333435363738393A3B3C3D3E3F\n\
        kik=404142434445464748494A4B4C4D4E4F\nenc=505152535455565758595A5B5C5D5E5F\n\
        mac=606162636465666768696A6B6C6D6E6F\ndek=707172737475767778797A7B7C7D7E7F\n";

    #[test]
    fn binary_params_round_trip_and_are_smaller() {
        let p = params();
        let bin = encode_params(&p);
        assert_eq!(bin.first(), Some(&PARAMS_V2));
        assert!(bin.len() < 200, "{} bytes", bin.len());
        assert_eq!(decode_params(&bin).expect("decode"), p);
        // Odd and even digit counts, truncation detected.
        assert!(decode_params(&bin[..bin.len() - 1]).is_err());
    }

    #[test]
    fn text_params_still_decode_and_reencode_to_the_same_values() {
        let p = decode_params(TEXT_PARAMS.as_bytes()).expect("text form");
        assert_eq!(p.iccid.as_str(), "8944000000000000015");
        assert_eq!(p.imsi.as_str(), "001010000000001");
        assert_eq!(p.puk2.expose(), "87654321");
        assert_eq!(p.spn, "smdpplus");
        assert_eq!(p.ki.expose()[15], 0x0f);
        assert_eq!(p.sd_keys.scp03_dek.expose()[0], 0x70);
        assert_eq!(decode_params(&encode_params(&p)).expect("binary"), p);
    }

    #[test]
    fn json_template_package_with_text_params_still_reads() {
        let ring = Keyring::single(3, MasterKey::from_bytes([9; 32]));
        let iccid = "8944000000000000015";
        let (key, wrapped) = ring
            .wrap_current(TEXT_PARAMS.as_bytes(), iccid.as_bytes())
            .expect("wrap");
        let json = format!(
            r#"{{"v":1,"template":"smdpplus-usim","key":{key},"params":"{}"}}"#,
            base64::engine::general_purpose::STANDARD.encode(&wrapped)
        );
        let stored = StoredPackage::from_bytes(json.as_bytes()).expect("old JSON form");
        let p = stored
            .params(&ring, iccid)
            .expect("unwrap")
            .expect("template");
        assert_eq!(p.pin1.expose(), "1234");
        // Written again, it takes the binary form and reads back the same.
        let bin = stored.to_bytes();
        assert_eq!(bin.first(), Some(&TEMPLATE_V2));
        assert_eq!(StoredPackage::from_bytes(&bin).expect("binary"), stored);
    }

    #[test]
    fn binary_template_package_round_trips_and_stays_bound_to_the_iccid() {
        let tpl = Template::from_toml(DEFAULT_TEMPLATE).expect("template");
        let ring = Keyring::single(1, MasterKey::from_bytes([5; 32]));
        let p = params();
        let stored = StoredPackage::template(&ring, &tpl, &p).expect("wrap");
        let bytes = stored.to_bytes();
        assert_eq!(bytes.first(), Some(&TEMPLATE_V2));
        let back = StoredPackage::from_bytes(&bytes).expect("parse");
        assert_eq!(back, stored);
        assert_eq!(
            back.params(&ring, p.iccid.as_str()).expect("unwrap"),
            Some(p.clone())
        );
        assert!(
            back.params(&ring, "8944000000000000023").is_err(),
            "AAD is the ICCID"
        );
        // No key in clear.
        let ki = p.ki.expose();
        assert!(!bytes.windows(16).any(|w| w == ki));
        // Rotation re-wraps under the new key and stays readable.
        let ring2 = Keyring::from_entries(vec![
            (1, MasterEntry::File(MasterKey::from_bytes([5; 32]))),
            (2, MasterEntry::File(MasterKey::from_bytes([6; 32]))),
        ])
        .expect("ring");
        let mut rotated = back.clone();
        assert!(rotated.rewrap(&ring2, p.iccid.as_str()).expect("rewrap"));
        let again = StoredPackage::from_bytes(&rotated.to_bytes()).expect("parse");
        assert_eq!(
            again.params(&ring2, p.iccid.as_str()).expect("unwrap"),
            Some(p)
        );
    }
}
