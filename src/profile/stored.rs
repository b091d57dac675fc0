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

/// The personalization values as `name=value` lines (keys in hex), the
/// plaintext that gets wrapped. Kept in zeroizing memory.
pub fn encode_params(p: &Params) -> Zeroizing<Vec<u8>> {
    let s = Zeroizing::new(format!(
        "v=1\niccid={}\nimsi={}\nki={}\nopc={}\npin1={}\npin2={}\npuk1={}\npuk2={}\nadm1={}\nspn={}\nkic={}\nkid={}\nkik={}\nenc={}\nmac={}\ndek={}\n",
        p.iccid,
        p.imsi.as_str(),
        p.ki.to_hex().as_str(),
        p.opc.to_hex().as_str(),
        p.pin1.expose(),
        p.pin2.expose(),
        p.puk1.expose(),
        p.puk2.expose(),
        p.adm1.expose(),
        p.spn,
        p.sd_keys.scp80_kic.to_hex().as_str(),
        p.sd_keys.scp80_kid.to_hex().as_str(),
        p.sd_keys.scp80_kik.to_hex().as_str(),
        p.sd_keys.scp03_enc.to_hex().as_str(),
        p.sd_keys.scp03_mac.to_hex().as_str(),
        p.sd_keys.scp03_dek.to_hex().as_str(),
    ));
    Zeroizing::new(s.as_bytes().to_vec())
}

/// The inverse of [`encode_params`].
pub fn decode_params(bytes: &[u8]) -> Result<Params, ProtectError> {
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

    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            StoredPackage::Protected(p) => p.to_bytes(),
            StoredPackage::Template(t) => serde_json::to_vec(t).unwrap_or_default(),
        }
    }

    /// Parses the stored form (either kind).
    pub fn from_bytes(b: &[u8]) -> Result<StoredPackage, ProtectError> {
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
