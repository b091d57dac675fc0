//! Profile templates: a readable TOML description of a profile
//! package (`profiles/*.toml`, format in `profiles/README.md`) and its
//! personalization into an unprotected profile package (UPP, SGP.22 §2.5.5).
//!
//! A template lists the Profile Elements in package order. Values that
//! differ per profile are written as `$name` placeholders (`$ef_imsi`,
//! `$ki`, `$pin1`, ...; see [`Param`]); loading checks every name, compiles
//! the description once (PEs without placeholders are encoded once and
//! copied), and personalizes a sample profile and decodes it, so a template
//! that loads always produces valid packages. Personalization is a pure
//! function of the template and the [`Params`]: the same params always give
//! the same bytes, which is what lets the store keep only the values of a
//! template-based profile and rebuild the package when it is bound.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "templates and values come from operators: errors, not panics"
    )
)]

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::params::Params;
use super::saip::ef::{self, Condition, Imsi};
use super::saip::{
    AkaParameter, AlgoConfiguration, AlgoParameter, AlgorithmId, ApplicationInstance, End, Fcp,
    File, FileElement, FileSystemPe, FsKind, KeyComponent, KeyObject, MappingParameter, PeHeader,
    PinCodes, PinCodesChoice, PinConfig, Profile, ProfileElement, ProfileHeader, PukCodes,
    PukConfig, SaipError, Secret, SecurityDomain, ServicesList, DEFAULT_PIN_ATTEMPTS,
    DEFAULT_PIN_ATTRIBUTES, DEFAULT_PUK_ATTEMPTS, DEFAULT_ROTATION_CONSTANTS,
    DEFAULT_XORING_CONSTANTS,
};
use crate::asn1::der::{parse_one, DerCodec, Oid, Writer};
use crate::ids::Iccid;

/// Why a template does not load, or a profile cannot be personalized.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The file could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The template path.
        path: String,
        /// The I/O error.
        message: String,
    },
    /// The text is not valid TOML, or does not match the format.
    #[error("template: {0}")]
    Syntax(String),
    /// The `[template]` table is wrong.
    #[error("template: [template]: {0}")]
    Meta(String),
    /// A `[[pe]]` entry is wrong.
    #[error("template: pe #{index} ({kind}): {reason}")]
    Pe {
        /// 1-based position of the `[[pe]]` entry.
        index: usize,
        /// Its `type`.
        kind: String,
        /// What is wrong.
        reason: String,
    },
    /// The template does not produce a valid package.
    #[error("template produces an invalid package: {0}")]
    Package(SaipError),
    /// A personalization value does not fit the package.
    #[error("cannot personalize {what}: {reason}")]
    Personalize {
        /// The value or file concerned.
        what: String,
        /// Why.
        reason: String,
    },
}

/// A per-profile value a template refers to as `$name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Param {
    /// `$ef_iccid`: EF.ICCID contents.
    EfIccid,
    /// `$ef_imsi`: EF.IMSI contents.
    EfImsi,
    /// `$ef_acc`: EF.ACC contents, from the last IMSI digit.
    EfAcc,
    /// `$ef_spn`: EF.SPN contents.
    EfSpn,
    /// `$ef_ad`: EF.AD contents, from the template's MNC length.
    EfAd,
    /// `$ef_impi`: EF.IMPI contents, from the IMSI.
    EfImpi,
    /// `$ef_impu`: an EF.IMPU record, from the IMSI.
    EfImpu,
    /// `$ef_domain`: EF.DOMAIN contents, from the IMSI.
    EfDomain,
    /// `$ki`: the subscriber key K.
    Ki,
    /// `$opc`: OPc.
    Opc,
    /// `$pin1`: PIN1 as stored (ASCII, `FF`-padded).
    Pin1,
    /// `$pin2`: PIN2.
    Pin2,
    /// `$puk1`: PUK1.
    Puk1,
    /// `$puk2`: PUK2.
    Puk2,
    /// `$adm1`: ADM1.
    Adm1,
    /// `$scp80_kic`: MNO-SD SCP80 KIc.
    Scp80Kic,
    /// `$scp80_kid`: MNO-SD SCP80 KID.
    Scp80Kid,
    /// `$scp80_kik`: MNO-SD SCP80 KIK.
    Scp80Kik,
    /// `$scp03_enc`: MNO-SD SCP03 ENC.
    Scp03Enc,
    /// `$scp03_mac`: MNO-SD SCP03 MAC.
    Scp03Mac,
    /// `$scp03_dek`: MNO-SD SCP03 DEK.
    Scp03Dek,
}

const PARAM_NAMES: [(Param, &str); 21] = [
    (Param::EfIccid, "ef_iccid"),
    (Param::EfImsi, "ef_imsi"),
    (Param::EfAcc, "ef_acc"),
    (Param::EfSpn, "ef_spn"),
    (Param::EfAd, "ef_ad"),
    (Param::EfImpi, "ef_impi"),
    (Param::EfImpu, "ef_impu"),
    (Param::EfDomain, "ef_domain"),
    (Param::Ki, "ki"),
    (Param::Opc, "opc"),
    (Param::Pin1, "pin1"),
    (Param::Pin2, "pin2"),
    (Param::Puk1, "puk1"),
    (Param::Puk2, "puk2"),
    (Param::Adm1, "adm1"),
    (Param::Scp80Kic, "scp80_kic"),
    (Param::Scp80Kid, "scp80_kid"),
    (Param::Scp80Kik, "scp80_kik"),
    (Param::Scp03Enc, "scp03_enc"),
    (Param::Scp03Mac, "scp03_mac"),
    (Param::Scp03Dek, "scp03_dek"),
];

/// The placeholders a template must use: without them a package would not
/// carry the profile's identity or authentication secrets.
const REQUIRED: [Param; 4] = [Param::EfIccid, Param::EfImsi, Param::Ki, Param::Opc];

impl Param {
    /// The placeholder name, without the `$`.
    pub fn name(self) -> &'static str {
        PARAM_NAMES
            .iter()
            .find(|(p, _)| *p == self)
            .map_or("?", |(_, n)| n)
    }

    /// The parameter a placeholder name (without `$`) stands for.
    pub fn from_name(name: &str) -> Option<Param> {
        PARAM_NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(p, _)| *p)
    }

    /// Whether the value depends only on the template, not on the profile.
    fn is_static(self) -> bool {
        self == Param::EfAd
    }
}

// ---------------------------------------------------------------------------
// The TOML format (deserialized as written, then compiled).

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    template: MetaSpec,
    pe: Vec<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaSpec {
    id: String,
    version: u32,
    #[serde(default)]
    description: String,
    spn: String,
    #[serde(default)]
    spn_display_condition: u8,
    mnc_digits: u8,
    #[serde(default)]
    access_rules: Vec<AccessRuleSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessRuleSpec {
    read: Option<String>,
    delete_child: Option<String>,
    update: Option<String>,
    create_ef: Option<String>,
    write: Option<String>,
    create_df: Option<String>,
    deactivate: Option<String>,
    activate: Option<String>,
    terminate: Option<String>,
    delete: Option<String>,
    increase: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderSpec {
    major_version: u8,
    minor_version: u8,
    profile_type: Option<String>,
    #[serde(default)]
    mandatory_services: Vec<String>,
    #[serde(default)]
    mandatory_gfste: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FsSpec {
    identification: Option<u16>,
    #[serde(default)]
    mandated: bool,
    template_id: String,
    #[serde(default)]
    files: Vec<FileSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    name: String,
    #[serde(default)]
    do_not_create: bool,
    fcp: Option<FcpSpec>,
    content: Option<String>,
    records: Option<Vec<String>>,
    record_length: Option<u16>,
    #[serde(default)]
    access_rules: bool,
    services: Option<Vec<u16>>,
    size: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FcpSpec {
    file_descriptor: Option<String>,
    file_id: Option<String>,
    df_name: Option<String>,
    lcsi: Option<String>,
    security_attributes_referenced: Option<String>,
    ef_file_size: Option<String>,
    pin_status_template_do: Option<String>,
    short_ef_id: Option<String>,
    link_path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinSpec {
    identification: Option<u16>,
    #[serde(default)]
    mandated: bool,
    pins: Option<Vec<PinEntrySpec>>,
    shared_with: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinEntrySpec {
    key_reference: u8,
    value: String,
    unblocking_reference: Option<u8>,
    attributes: Option<u8>,
    max_attempts: Option<u8>,
    retries: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PukSpec {
    identification: Option<u16>,
    #[serde(default)]
    mandated: bool,
    puks: Vec<PukEntrySpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PukEntrySpec {
    key_reference: u8,
    value: String,
    max_attempts: Option<u8>,
    retries: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AkaSpec {
    identification: Option<u16>,
    #[serde(default)]
    mandated: bool,
    algorithm: Option<String>,
    algorithm_options: Option<u8>,
    key: Option<String>,
    opc: Option<String>,
    rotation_constants: Option<String>,
    xoring_constants: Option<String>,
    sqn_options: Option<u8>,
    sqn_delta: Option<String>,
    sqn_age_limit: Option<String>,
    mapping_options: Option<u8>,
    mapping_source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SdSpec {
    identification: Option<u16>,
    #[serde(default)]
    mandated: bool,
    instance: InstanceSpec,
    #[serde(default)]
    keys: Vec<KeySpec>,
    perso_data: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceSpec {
    load_package_aid: String,
    class_aid: String,
    instance_aid: String,
    extradite_sd_aid: Option<String>,
    privileges: String,
    life_cycle_state: Option<u8>,
    install_parameters: String,
    application_parameters: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySpec {
    usage_qualifier: String,
    access: Option<u8>,
    identifier: u8,
    version: u8,
    key_type: String,
    data: String,
    mac_length: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndSpec {
    identification: Option<u16>,
    #[serde(default)]
    mandated: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    der: String,
}

// ---------------------------------------------------------------------------
// The compiled template.

/// A byte value: fixed in the template, or a placeholder.
#[derive(Clone)]
enum Val {
    Fixed(Vec<u8>),
    Param(Param),
}

/// One element of a file, before personalization.
#[derive(Clone)]
enum ElemT {
    DoNotCreate,
    Fcp(Box<Fcp>),
    Content(Val),
    /// Records, each padded with `FF` to the length when one is given.
    Records(Vec<Val>, Option<usize>),
}

#[derive(Clone)]
struct FileT {
    name: String,
    elements: Vec<ElemT>,
}

/// One PE, before personalization. The typed parts hold empty secrets
/// where the placeholders go.
#[derive(Clone)]
enum PeT {
    /// Encoded once at load.
    Static(Vec<u8>),
    Header(ProfileHeader),
    FileSystem(FileSystemPe, Vec<FileT>),
    Pins(PinCodes, Vec<Val>),
    Puks(PukCodes, Vec<Val>),
    Aka(AkaParameter, Option<(Val, Val)>),
    Sd(SecurityDomain, Vec<Val>),
}

/// The template-level values personalization derives files from.
#[derive(Clone)]
struct Meta {
    spn_display_condition: u8,
    mnc_digits: u8,
}

/// A loaded, validated profile template.
#[derive(Clone)]
pub struct Template {
    id: String,
    version: u32,
    description: String,
    spn: String,
    profile_type: Option<String>,
    digest: [u8; 32],
    meta: Meta,
    parts: Vec<PeT>,
    params: BTreeSet<Param>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("digest", &hex::encode(self.digest))
            .field("elements", &self.parts.len())
            .finish()
    }
}

/// Resolves placeholders for one profile (or none, for static parts).
struct Values<'a> {
    meta: &'a Meta,
    params: Option<&'a Params>,
}

impl Values<'_> {
    fn get(&self, v: &Val) -> Result<Zeroizing<Vec<u8>>, TemplateError> {
        let p = match v {
            Val::Fixed(b) => return Ok(Zeroizing::new(b.clone())),
            Val::Param(p) => *p,
        };
        let bad = |reason: String| TemplateError::Personalize {
            what: format!("${}", p.name()),
            reason,
        };
        if p == Param::EfAd {
            return ef::ef_ad(self.meta.mnc_digits)
                .map(|v| Zeroizing::new(v.to_vec()))
                .map_err(|e| bad(e.to_string()));
        }
        let params = self
            .params
            .ok_or_else(|| bad("no profile parameters".into()))?;
        let mnc = self.meta.mnc_digits;
        let out = match p {
            Param::EfIccid => ef::ef_iccid(&params.iccid).to_vec(),
            Param::EfImsi => ef::ef_imsi(&params.imsi).to_vec(),
            Param::EfAcc => ef::ef_acc(&params.imsi).to_vec(),
            Param::EfSpn => ef::ef_spn(self.meta.spn_display_condition, &params.spn)
                .map_err(|e| bad(e.to_string()))?
                .to_vec(),
            Param::EfAd => Vec::new(),
            Param::EfImpi => ef::ef_impi(&params.imsi, mnc).map_err(|e| bad(e.to_string()))?,
            Param::EfImpu => ef::ef_impu(&params.imsi, mnc).map_err(|e| bad(e.to_string()))?,
            Param::EfDomain => ef::ef_domain(&params.imsi, mnc).map_err(|e| bad(e.to_string()))?,
            Param::Ki => params.ki.expose().to_vec(),
            Param::Opc => params.opc.expose().to_vec(),
            Param::Pin1 => params.pin1.value().to_vec(),
            Param::Pin2 => params.pin2.value().to_vec(),
            Param::Puk1 => params.puk1.value().to_vec(),
            Param::Puk2 => params.puk2.value().to_vec(),
            Param::Adm1 => params.adm1.value().to_vec(),
            Param::Scp80Kic => params.sd_keys.scp80_kic.expose().to_vec(),
            Param::Scp80Kid => params.sd_keys.scp80_kid.expose().to_vec(),
            Param::Scp80Kik => params.sd_keys.scp80_kik.expose().to_vec(),
            Param::Scp03Enc => params.sd_keys.scp03_enc.expose().to_vec(),
            Param::Scp03Mac => params.sd_keys.scp03_mac.expose().to_vec(),
            Param::Scp03Dek => params.sd_keys.scp03_dek.expose().to_vec(),
        };
        Ok(Zeroizing::new(out))
    }

    fn secret(&self, v: &Val) -> Result<Secret, TemplateError> {
        Ok(Secret::new(&self.get(v)?))
    }
}

impl FileT {
    fn build(&self, values: &Values<'_>, pe: &str) -> Result<File, TemplateError> {
        let mut out = Vec::with_capacity(self.elements.len());
        let mut size_limit = None;
        let mut written = 0usize;
        let too_long = |what: String| TemplateError::Personalize {
            what: format!("{pe}.{}", self.name),
            reason: what,
        };
        for e in &self.elements {
            match e {
                ElemT::DoNotCreate => out.push(FileElement::DoNotCreate),
                ElemT::Fcp(f) => {
                    size_limit = f.file_size();
                    out.push(FileElement::Fcp(f.clone()));
                }
                ElemT::Content(v) => {
                    let c = values.get(v)?;
                    written += c.len();
                    out.push(FileElement::FillFileContent(c.to_vec()));
                }
                ElemT::Records(vals, len) => {
                    let mut content = Vec::new();
                    for v in vals {
                        let mut rec = values.get(v)?.to_vec();
                        if let Some(len) = *len {
                            if rec.len() > len {
                                return Err(too_long(format!(
                                    "a {}-octet record exceeds the record length {len}",
                                    rec.len()
                                )));
                            }
                            rec.resize(len, 0xFF);
                        }
                        content.extend_from_slice(&rec);
                    }
                    written += content.len();
                    out.push(FileElement::FillFileContent(content));
                }
            }
        }
        if let Some(limit) = size_limit {
            if written > limit {
                return Err(too_long(format!(
                    "{written} octets of contents exceed the file size {limit}"
                )));
            }
        }
        Ok(File(out))
    }
}

impl PeT {
    /// Writes the PE for one profile (`iccid` is `None` only when encoding
    /// the static parts at load).
    fn write(
        &self,
        values: &Values<'_>,
        iccid: Option<&Iccid>,
        w: &mut Writer,
    ) -> Result<(), TemplateError> {
        let pe = match self {
            PeT::Static(raw) => {
                w.raw(raw);
                return Ok(());
            }
            PeT::Header(h) => {
                let mut h = h.clone();
                if let Some(iccid) = iccid {
                    h.iccid = ef::header_iccid(iccid);
                }
                ProfileElement::Header(h)
            }
            PeT::FileSystem(base, files) => {
                let mut pe = base.clone();
                for f in files {
                    let file = f.build(values, base.kind().name())?;
                    pe.set_file(&f.name, file)
                        .map_err(|e| TemplateError::Personalize {
                            what: f.name.clone(),
                            reason: e.to_string(),
                        })?;
                }
                ProfileElement::FileSystem(pe)
            }
            PeT::Pins(base, vals) => {
                let mut pe = base.clone();
                if let PinCodesChoice::Config(pins) = &mut pe.codes {
                    for (pin, v) in pins.iter_mut().zip(vals) {
                        pin.value = fixed_len(values.secret(v)?, 8, "pinValue")?;
                    }
                }
                ProfileElement::PinCodes(pe)
            }
            PeT::Puks(base, vals) => {
                let mut pe = base.clone();
                for (puk, v) in pe.codes.iter_mut().zip(vals) {
                    puk.value = fixed_len(values.secret(v)?, 8, "pukValue")?;
                }
                ProfileElement::PukCodes(pe)
            }
            PeT::Aka(base, keys) => {
                let mut pe = base.clone();
                if let (AlgoConfiguration::Algo(a), Some((k, o))) = (&mut pe.algo, keys) {
                    a.key = values.secret(k)?;
                    a.opc = values.secret(o)?;
                }
                ProfileElement::AkaParameter(pe)
            }
            PeT::Sd(base, vals) => {
                let mut pe = base.clone();
                if let Some(keys) = &mut pe.keys {
                    for (key, v) in keys.iter_mut().zip(vals) {
                        if let Some(c) = key.components.first_mut() {
                            c.key_data = values.secret(v)?;
                        }
                    }
                }
                ProfileElement::SecurityDomain(pe)
            }
        };
        pe.write(w);
        Ok(())
    }
}

fn fixed_len(s: Secret, len: usize, what: &str) -> Result<Secret, TemplateError> {
    if s.len() == len {
        Ok(s)
    } else {
        Err(TemplateError::Personalize {
            what: what.into(),
            reason: format!("must be {len} octets, not {}", s.len()),
        })
    }
}

impl Template {
    /// Loads and validates a template file.
    pub fn load(path: &Path) -> Result<Template, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|e| TemplateError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Template::from_toml(&text)
    }

    /// Parses and validates a template.
    pub fn from_toml(text: &str) -> Result<Template, TemplateError> {
        let file: TemplateFile =
            toml::from_str(text).map_err(|e| TemplateError::Syntax(e.to_string()))?;
        let meta_spec = file.template;
        if meta_spec.id.is_empty() {
            return Err(TemplateError::Meta("empty id".into()));
        }
        let meta = Meta {
            spn_display_condition: meta_spec.spn_display_condition,
            mnc_digits: meta_spec.mnc_digits,
        };
        ef::ef_ad(meta.mnc_digits).map_err(|e| TemplateError::Meta(e.to_string()))?;
        ef::ef_spn(meta.spn_display_condition, &meta_spec.spn)
            .map_err(|e| TemplateError::Meta(format!("spn: {e}")))?;
        let arr = compile_access_rules(&meta_spec.access_rules).map_err(TemplateError::Meta)?;

        let mut compiler = Compiler {
            arr,
            params: BTreeSet::new(),
        };
        let mut parts = Vec::with_capacity(file.pe.len());
        let mut profile_type = None;
        for (i, table) in file.pe.into_iter().enumerate() {
            let index = i + 1;
            let mut table = table;
            let kind = match table.remove("type") {
                Some(toml::Value::String(s)) => s,
                _ => {
                    return Err(TemplateError::Pe {
                        index,
                        kind: "?".into(),
                        reason: "missing `type`".into(),
                    })
                }
            };
            let pe_err = |reason: String| TemplateError::Pe {
                index,
                kind: kind.clone(),
                reason,
            };
            let part = compiler
                .compile(&kind, table, i, &mut profile_type)
                .map_err(pe_err)?;
            parts.push(part);
        }
        for p in REQUIRED {
            if !compiler.params.contains(&p) {
                return Err(TemplateError::Meta(format!(
                    "the template never uses ${}",
                    p.name()
                )));
            }
        }

        // Static parts are encoded once, here.
        let values = Values {
            meta: &meta,
            params: None,
        };
        let mut compiled = Vec::with_capacity(parts.len());
        for (part, dynamic) in parts {
            compiled.push(match part {
                PeT::Static(_) => part,
                _ if dynamic => part,
                _ => {
                    let mut w = Writer::new();
                    part.write(&values, None, &mut w)?;
                    PeT::Static(w.into_bytes())
                }
            });
        }

        let template = Template {
            id: meta_spec.id,
            version: meta_spec.version,
            description: meta_spec.description,
            spn: meta_spec.spn,
            profile_type,
            digest: Sha256::digest(text.as_bytes()).into(),
            meta,
            parts: compiled,
            params: compiler.params,
        };
        template.self_check()?;
        Ok(template)
    }

    /// Personalizes a sample profile and decodes it: a template that loads
    /// always produces a valid package.
    fn self_check(&self) -> Result<(), TemplateError> {
        let mut rng = rand::rngs::OsRng;
        let sample = Params::random(
            Iccid::with_check_digit("899990000000000000")
                .ok_or(TemplateError::Meta("sample ICCID".into()))?,
            Imsi::parse("001010000000000").map_err(|e| TemplateError::Meta(e.to_string()))?,
            &self.spn,
            &mut rng,
        );
        let upp = self.personalize(&sample)?;
        Profile::decode(&upp).map_err(TemplateError::Package)?;
        Ok(())
    }

    /// The template id (`[template] id`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The template version (`[template] version`).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The default service provider name.
    pub fn spn(&self) -> &str {
        &self.spn
    }

    /// The number of MNC digits in the IMSI.
    pub fn mnc_digits(&self) -> u8 {
        self.meta.mnc_digits
    }

    /// The ProfileHeader `profileType`, if the template sets one.
    pub fn profile_type(&self) -> Option<&str> {
        self.profile_type.as_deref()
    }

    /// SHA-256 of the template text: a stored profile built from a
    /// template can be checked against the template it will be rebuilt
    /// from.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The placeholders the template uses, without `$`.
    pub fn params_used(&self) -> Vec<&'static str> {
        self.params.iter().map(|p| p.name()).collect()
    }

    /// Builds the unprotected profile package for one profile. The same
    /// params always give the same bytes.
    pub fn personalize(&self, params: &Params) -> Result<Zeroizing<Vec<u8>>, TemplateError> {
        let values = Values {
            meta: &self.meta,
            params: Some(params),
        };
        let mut w = Writer::new();
        for part in &self.parts {
            part.write(&values, Some(&params.iccid), &mut w)?;
        }
        Ok(Zeroizing::new(w.into_bytes()))
    }
}

/// Compiles `[[pe]]` entries, recording the placeholders used.
struct Compiler {
    /// The access rule records, each padded to the longest, and that length.
    arr: Option<(Vec<u8>, usize, usize)>,
    params: BTreeSet<Param>,
}

fn hex_bytes(s: &str) -> Result<Vec<u8>, String> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(&clean).map_err(|_| format!("`{s}` is not hex"))
}

fn hex_fixed<const N: usize>(s: &str, what: &str) -> Result<[u8; N], String> {
    hex_bytes(s)?
        .try_into()
        .map_err(|_| format!("{what} must be {N} octets"))
}

fn hex_opt(s: &Option<String>) -> Result<Option<Vec<u8>>, String> {
    s.as_deref().map(hex_bytes).transpose()
}

fn octet(s: &Option<String>, what: &str) -> Result<Option<u8>, String> {
    s.as_deref()
        .map(|s| hex_fixed::<1>(s, what).map(|[b]| b))
        .transpose()
}

fn oid(s: &str) -> Result<Oid, String> {
    s.parse::<Oid>().map_err(|_| format!("`{s}` is not an OID"))
}

fn header(
    identification: Option<u16>,
    mandated: bool,
    position: usize,
) -> Result<PeHeader, String> {
    let id = match identification {
        Some(id) => id,
        None => u16::try_from(position).map_err(|_| "too many elements".to_string())?,
    };
    if id > 32767 {
        return Err("identification must be at most 32767".into());
    }
    Ok(PeHeader::new(id, mandated))
}

/// A value for a component with a DEFAULT: DER leaves out a component equal
/// to its DEFAULT (X.690 §11.5), so the default becomes `None`. The codec
/// itself keeps whatever a package carries; only what we build is canonical.
fn non_default<T: PartialEq>(value: Option<T>, default: T) -> Option<T> {
    value.filter(|v| *v != default)
}

/// `maxNumOfAttemps-retryNumLeft`: maximum in the high nibble, left in the
/// low one.
fn attempts(max: Option<u8>, left: Option<u8>) -> Result<Option<u8>, String> {
    match (max, left) {
        (None, None) => Ok(None),
        (Some(m), Some(l)) if m <= 15 && l <= m => Ok(Some((m << 4) | l)),
        _ => Err("max_attempts and retries go together, retries <= max_attempts <= 15".into()),
    }
}

fn condition(s: &str) -> Result<Condition, String> {
    Ok(match s {
        "always" => Condition::Always,
        "never" => Condition::Never,
        "pin1" => Condition::Key(0x01),
        "pin2" => Condition::Key(0x81),
        _ => {
            let n: u8 = s
                .strip_prefix("adm")
                .and_then(|n| n.parse().ok())
                .filter(|n| (1..=10).contains(n))
                .ok_or_else(|| format!("unknown access condition `{s}`"))?;
            // PINKeyReferenceValue: adm1..adm5 are 0A..0E, adm6..adm10 8A..8E.
            Condition::Key(if n <= 5 { 0x09 + n } else { 0x84 + n })
        }
    })
}

fn compile_access_rules(
    rules: &[AccessRuleSpec],
) -> Result<Option<(Vec<u8>, usize, usize)>, String> {
    if rules.is_empty() {
        return Ok(None);
    }
    let mut records = Vec::with_capacity(rules.len());
    for (i, r) in rules.iter().enumerate() {
        let mut modes = Vec::new();
        for (bit, value) in [
            (0x01, &r.read),
            (0x01, &r.delete_child),
            (0x02, &r.update),
            (0x02, &r.create_ef),
            (0x04, &r.write),
            (0x04, &r.create_df),
            (0x08, &r.deactivate),
            (0x10, &r.activate),
            (0x20, &r.terminate),
            (0x40, &r.delete),
        ] {
            if let Some(c) = value {
                modes.push((
                    bit,
                    condition(c).map_err(|e| format!("access rule {}: {e}", i + 1))?,
                ));
            }
        }
        let increase = r
            .increase
            .as_deref()
            .map(condition)
            .transpose()
            .map_err(|e| format!("access rule {}: {e}", i + 1))?;
        records.push(ef::arr_record(&modes, increase));
    }
    let len = records.iter().map(Vec::len).max().unwrap_or(0);
    let mut content = Vec::with_capacity(len * records.len());
    for mut r in records.iter().cloned() {
        r.resize(len, 0xFF);
        content.extend_from_slice(&r);
    }
    Ok(Some((content, len, records.len())))
}

impl Compiler {
    /// A `$name` placeholder or hex octets.
    fn val(&mut self, s: &str) -> Result<Val, String> {
        match s.strip_prefix('$') {
            Some(name) => {
                let p =
                    Param::from_name(name).ok_or_else(|| format!("unknown placeholder `{s}`"))?;
                self.params.insert(p);
                Ok(Val::Param(p))
            }
            None => Ok(Val::Fixed(hex_bytes(s)?)),
        }
    }

    fn is_dynamic(v: &Val) -> bool {
        matches!(v, Val::Param(p) if !p.is_static())
    }

    /// Compiles one `[[pe]]`; returns it and whether it has per-profile
    /// values.
    fn compile(
        &mut self,
        kind: &str,
        table: toml::Table,
        position: usize,
        profile_type: &mut Option<String>,
    ) -> Result<(PeT, bool), String> {
        let value = toml::Value::Table(table);
        let spec = |e: toml::de::Error| e.to_string();
        Ok(match kind {
            "header" => {
                if position != 0 {
                    return Err("the header must be the first element".into());
                }
                let h: HeaderSpec = value.try_into().map_err(spec)?;
                let services =
                    ServicesList::from_names(h.mandatory_services.iter().map(String::as_str))
                        .map_err(|n| format!("unknown service `{n}`"))?;
                if let Some(p) = &h.profile_type {
                    if !(1..=100).contains(&p.chars().count()) {
                        return Err("profile_type must be 1 to 100 characters".into());
                    }
                }
                *profile_type = h.profile_type.clone();
                (
                    PeT::Header(ProfileHeader {
                        major_version: h.major_version,
                        minor_version: h.minor_version,
                        profile_type: h.profile_type,
                        iccid: [0xFF; 10],
                        pol: None,
                        mandatory_services: services,
                        mandatory_gfste: h
                            .mandatory_gfste
                            .iter()
                            .map(|s| oid(s))
                            .collect::<Result<_, _>>()?,
                        connectivity_parameters: None,
                        mandatory_aids: None,
                        iot_pix: None,
                        extensions: Vec::new(),
                    }),
                    true,
                )
            }
            "pinCodes" => {
                let s: PinSpec = value.try_into().map_err(spec)?;
                let header = header(s.identification, s.mandated, position)?;
                match (s.pins, s.shared_with) {
                    (Some(pins), None) => {
                        if !(1..=26).contains(&pins.len()) {
                            return Err("pins must list 1 to 26 PINs".into());
                        }
                        let mut configs = Vec::new();
                        let mut vals = Vec::new();
                        for p in pins {
                            vals.push(self.val(&p.value)?);
                            configs.push(PinConfig {
                                key_reference: p.key_reference,
                                value: Secret::default(),
                                unblocking_reference: p.unblocking_reference,
                                attributes: non_default(p.attributes, DEFAULT_PIN_ATTRIBUTES),
                                attempts: non_default(
                                    attempts(p.max_attempts, p.retries)?,
                                    DEFAULT_PIN_ATTEMPTS,
                                ),
                            });
                        }
                        let pe = PinCodes {
                            header,
                            codes: PinCodesChoice::Config(configs),
                            extensions: Vec::new(),
                        };
                        let dynamic = vals.iter().any(Self::is_dynamic);
                        (PeT::Pins(pe, vals), dynamic)
                    }
                    (None, Some(path)) => {
                        let path = hex_bytes(&path)?;
                        if path.len() > 8 {
                            return Err("shared_with is a path of at most 8 octets".into());
                        }
                        let pe = PinCodes {
                            header,
                            codes: PinCodesChoice::FilePath(path),
                            extensions: Vec::new(),
                        };
                        (PeT::Pins(pe, Vec::new()), false)
                    }
                    _ => return Err("give either `pins` or `shared_with`".into()),
                }
            }
            "pukCodes" => {
                let s: PukSpec = value.try_into().map_err(spec)?;
                if !(1..=16).contains(&s.puks.len()) {
                    return Err("puks must list 1 to 16 PUKs".into());
                }
                let mut codes = Vec::new();
                let mut vals = Vec::new();
                for p in s.puks {
                    vals.push(self.val(&p.value)?);
                    codes.push(PukConfig {
                        key_reference: p.key_reference,
                        value: Secret::default(),
                        attempts: non_default(
                            attempts(p.max_attempts, p.retries)?,
                            DEFAULT_PUK_ATTEMPTS,
                        ),
                    });
                }
                let pe = PukCodes {
                    header: header(s.identification, s.mandated, position)?,
                    codes,
                    extensions: Vec::new(),
                };
                let dynamic = vals.iter().any(Self::is_dynamic);
                (PeT::Puks(pe, vals), dynamic)
            }
            "akaParameter" => self.compile_aka(value.try_into().map_err(spec)?, position)?,
            "securityDomain" => self.compile_sd(value.try_into().map_err(spec)?, position)?,
            "end" => {
                let s: EndSpec = value.try_into().map_err(spec)?;
                let end = End {
                    header: header(s.identification, s.mandated, position)?,
                    extensions: Vec::new(),
                };
                (PeT::Static(end.to_der()), false)
            }
            "raw" => {
                let s: RawSpec = value.try_into().map_err(spec)?;
                let der = hex_bytes(&s.der)?;
                let tlv = parse_one(&der, "ProfileElement").map_err(|e| e.to_string())?;
                ProfileElement::from_tlv(&tlv).map_err(|e| e.to_string())?;
                (PeT::Static(der), false)
            }
            other => match FsKind::from_name(other) {
                Some(fs) => self.compile_fs(fs, value.try_into().map_err(spec)?, position)?,
                None => return Err(format!("unknown element type `{other}`")),
            },
        })
    }

    fn compile_fs(
        &mut self,
        kind: FsKind,
        s: FsSpec,
        position: usize,
    ) -> Result<(PeT, bool), String> {
        let base = FileSystemPe::new(
            kind,
            header(s.identification, s.mandated, position)?,
            oid(&s.template_id)?,
        );
        let mut files = Vec::new();
        let mut dynamic = false;
        let mut probe = base.clone();
        for f in s.files {
            let name = f.name.clone();
            probe
                .set_file(&name, File::default())
                .map_err(|_| format!("{} has no file `{name}`", kind.type_name()))?;
            let file = self
                .compile_file(f)
                .map_err(|e| format!("file `{name}`: {e}"))?;
            dynamic |= file.elements.iter().any(|e| match e {
                ElemT::Content(v) => Self::is_dynamic(v),
                ElemT::Records(vals, _) => vals.iter().any(Self::is_dynamic),
                ElemT::DoNotCreate | ElemT::Fcp(_) => false,
            });
            files.push(file);
        }
        let missing = probe.missing_mandatory();
        if !missing.is_empty() {
            return Err(format!("missing mandatory files: {}", missing.join(", ")));
        }
        Ok((PeT::FileSystem(base, files), dynamic))
    }

    fn compile_file(&mut self, f: FileSpec) -> Result<FileT, String> {
        let mut elements = Vec::new();
        if f.do_not_create {
            elements.push(ElemT::DoNotCreate);
        }
        let mut fcp = match &f.fcp {
            Some(spec) => Some(compile_fcp(spec)?),
            None => None,
        };
        let kinds = [
            f.content.is_some(),
            f.records.is_some(),
            f.access_rules,
            f.services.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err("give one of content, records, access_rules, services".into());
        }
        // Linear fixed files whose record layout the template leaves open:
        // the Fcp gets the record length and the file size.
        let mut sized_records = |rec_len: usize, count: usize| -> Result<(), String> {
            let rl = u16::try_from(rec_len).map_err(|_| "record too long".to_string())?;
            let fcp = fcp.get_or_insert_with(Fcp::default);
            if fcp.file_descriptor.is_some() || fcp.ef_file_size.is_some() {
                return Err("record_length/access_rules set the file descriptor and size; leave them out of fcp".into());
            }
            let [hi, lo] = rl.to_be_bytes();
            fcp.file_descriptor = Some(vec![0x42, 0x21, hi, lo]);
            fcp.ef_file_size = Some(Fcp::encode_file_size(rec_len * count));
            Ok(())
        };
        let mut content = None;
        if let Some(c) = &f.content {
            content = Some(ElemT::Content(self.val(c)?));
        }
        if let Some(records) = &f.records {
            let vals = records
                .iter()
                .map(|r| self.val(r))
                .collect::<Result<Vec<_>, _>>()?;
            let len = f.record_length.map(usize::from);
            if let Some(len) = len {
                sized_records(len, vals.len())?;
            }
            content = Some(ElemT::Records(vals, len));
        } else if f.record_length.is_some() {
            return Err("record_length needs records".into());
        }
        if f.access_rules {
            let (bytes, len, count) = self
                .arr
                .clone()
                .ok_or("access_rules = true, but [template] has no access_rules")?;
            sized_records(len, count)?;
            content = Some(ElemT::Content(Val::Fixed(bytes)));
        }
        if let Some(services) = &f.services {
            let size = f.size.ok_or("services need a size")?;
            let table = ef::service_table(services, size).map_err(|e| e.to_string())?;
            content = Some(ElemT::Content(Val::Fixed(table)));
        } else if f.size.is_some() {
            return Err("size goes with services".into());
        }
        if let Some(fcp) = fcp {
            elements.push(ElemT::Fcp(Box::new(fcp)));
        }
        if let Some(c) = content {
            elements.push(c);
        }
        Ok(FileT {
            name: f.name,
            elements,
        })
    }

    fn compile_aka(&mut self, s: AkaSpec, position: usize) -> Result<(PeT, bool), String> {
        let header = header(s.identification, s.mandated, position)?;
        let defaults = AkaParameter::milenage(header, 0, Secret::default(), Secret::default());
        let mut pe = AkaParameter {
            sqn_options: s.sqn_options,
            sqn_delta: s
                .sqn_delta
                .as_deref()
                .map(|v| hex_fixed::<6>(v, "sqn_delta"))
                .transpose()?,
            sqn_age_limit: s
                .sqn_age_limit
                .as_deref()
                .map(|v| hex_fixed::<6>(v, "sqn_age_limit"))
                .transpose()?,
            ..defaults
        };
        if let Some(source) = s.mapping_source {
            if s.key.is_some() || s.opc.is_some() || s.algorithm.is_some() {
                return Err("a mapping has no algorithm, key or opc".into());
            }
            let source = hex_bytes(&source)?;
            if !(5..=16).contains(&source.len()) {
                return Err("mapping_source is an AID of 5 to 16 octets".into());
            }
            pe.algo = AlgoConfiguration::Mapping(MappingParameter {
                options: s.mapping_options.unwrap_or(0),
                source,
            });
            return Ok((PeT::Aka(pe, None), false));
        }
        let algorithm_id = match s.algorithm.as_deref() {
            Some("milenage") => AlgorithmId::Milenage,
            Some("tuak") => AlgorithmId::Tuak,
            Some("usim-test-algorithm") => AlgorithmId::UsimTestAlgorithm,
            Some(other) => return Err(format!("unknown algorithm `{other}`")),
            None => return Err("algorithm is required".into()),
        };
        let key = self.val(s.key.as_deref().ok_or("key is required")?)?;
        let opc = self.val(s.opc.as_deref().ok_or("opc is required")?)?;
        // DER leaves out a component equal to its DEFAULT (X.690 §11.5).
        let rotation = s
            .rotation_constants
            .as_deref()
            .map(|v| hex_fixed::<5>(v, "rotation_constants"))
            .transpose()?
            .filter(|r| *r != DEFAULT_ROTATION_CONSTANTS);
        let xoring = s
            .xoring_constants
            .as_deref()
            .map(|v| hex_fixed::<80>(v, "xoring_constants"))
            .transpose()?
            .filter(|x| *x != DEFAULT_XORING_CONSTANTS)
            .map(Box::new);
        pe.algo = AlgoConfiguration::Algo(AlgoParameter {
            algorithm_id,
            algorithm_options: s.algorithm_options.unwrap_or(0),
            key: Secret::default(),
            opc: Secret::default(),
            rotation_constants: rotation,
            xoring_constants: xoring,
            auth_counter_max: None,
            number_of_keccak: None,
        });
        let dynamic = Self::is_dynamic(&key) || Self::is_dynamic(&opc);
        Ok((PeT::Aka(pe, Some((key, opc))), dynamic))
    }

    fn compile_sd(&mut self, s: SdSpec, position: usize) -> Result<(PeT, bool), String> {
        let aid = |v: &str, what: &str| -> Result<Vec<u8>, String> {
            let b = hex_bytes(v)?;
            if (5..=16).contains(&b.len()) {
                Ok(b)
            } else {
                Err(format!("{what} must be 5 to 16 octets"))
            }
        };
        let i = &s.instance;
        let instance = ApplicationInstance {
            load_package_aid: aid(&i.load_package_aid, "load_package_aid")?,
            class_aid: aid(&i.class_aid, "class_aid")?,
            instance_aid: aid(&i.instance_aid, "instance_aid")?,
            extradite_sd_aid: i
                .extradite_sd_aid
                .as_deref()
                .map(|v| aid(v, "extradite_sd_aid"))
                .transpose()?,
            privileges: hex_bytes(&i.privileges)?,
            life_cycle_state: non_default(i.life_cycle_state, 0x07),
            specific_parameters_c9: hex_bytes(&i.install_parameters)?,
            system_specific_parameters: None,
            application_parameters: hex_opt(&i.application_parameters)?,
            process_data: None,
            control_reference_template: None,
        };
        let mut keys = Vec::new();
        let mut vals = Vec::new();
        for k in &s.keys {
            let usage = hex_bytes(&k.usage_qualifier)?;
            if !(1..=2).contains(&usage.len()) {
                return Err("usage_qualifier is 1 or 2 octets".into());
            }
            vals.push(self.val(&k.data)?);
            keys.push(KeyObject {
                usage_qualifier: usage,
                access: non_default(k.access, 0x00),
                identifier: k.identifier,
                version: k.version,
                counter: None,
                components: vec![KeyComponent {
                    key_type: hex_bytes(&k.key_type)?,
                    key_data: Secret::default(),
                    mac_length: non_default(k.mac_length, 8),
                }],
            });
        }
        let perso_data = match &s.perso_data {
            Some(list) if list.is_empty() => return Err("perso_data must not be empty".into()),
            Some(list) => Some(
                list.iter()
                    .map(|p| hex_bytes(p))
                    .collect::<Result<_, _>>()?,
            ),
            None => None,
        };
        let pe = SecurityDomain {
            header: header(s.identification, s.mandated, position)?,
            instance,
            keys: if keys.is_empty() { None } else { Some(keys) },
            perso_data,
            open_perso_data: None,
            cat_tp: None,
            extensions: Vec::new(),
        };
        let dynamic = vals.iter().any(Self::is_dynamic);
        Ok((PeT::Sd(pe, vals), dynamic))
    }
}

fn compile_fcp(s: &FcpSpec) -> Result<Fcp, String> {
    let sized = |v: &Option<String>,
                 min: usize,
                 max: usize,
                 what: &str|
     -> Result<Option<Vec<u8>>, String> {
        match hex_opt(v)? {
            Some(b) if !(min..=max).contains(&b.len()) => {
                Err(format!("{what} must be {min} to {max} octets"))
            }
            other => Ok(other),
        }
    };
    Ok(Fcp {
        file_descriptor: sized(&s.file_descriptor, 2, 4, "file_descriptor")?,
        file_id: s
            .file_id
            .as_deref()
            .map(|v| hex_fixed::<2>(v, "file_id"))
            .transpose()?,
        df_name: sized(&s.df_name, 5, 16, "df_name")?,
        lcsi: non_default(octet(&s.lcsi, "lcsi")?, 0x05),
        security_attributes_referenced: sized(
            &s.security_attributes_referenced,
            1,
            3,
            "security_attributes_referenced",
        )?,
        ef_file_size: hex_opt(&s.ef_file_size)?,
        pin_status_template_do: hex_opt(&s.pin_status_template_do)?,
        short_ef_id: sized(&s.short_ef_id, 0, 1, "short_ef_id")?,
        proprietary_ef_info: None,
        link_path: sized(&s.link_path, 0, 8, "link_path")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[template]
id = "t"
version = 1
spn = "x"
mnc_digits = 2

[[pe]]
type = "header"
major_version = 2
minor_version = 3

[[pe]]
type = "mf"
template_id = "2.23.143.1.2.1"
files = [
  { name = "mf" },
  { name = "ef-iccid", content = "$ef_iccid" },
  { name = "ef-dir" },
  { name = "ef-arr" },
]

[[pe]]
type = "usim"
template_id = "2.23.143.1.2.4"
files = [
  { name = "adf-usim" },
  { name = "ef-imsi", content = "$ef_imsi" },
  { name = "ef-arr" },
  { name = "ef-ust" },
  { name = "ef-spn", content = "$ef_spn" },
  { name = "ef-est" },
  { name = "ef-acc", content = "$ef_acc" },
  { name = "ef-ecc" },
]

[[pe]]
type = "akaParameter"
algorithm = "milenage"
key = "$ki"
opc = "$opc"

[[pe]]
type = "end"
"#;

    #[test]
    fn minimal_template_loads() {
        let t = Template::from_toml(MINIMAL).unwrap();
        assert_eq!(t.id(), "t");
        assert_eq!(
            t.params_used(),
            vec!["ef_iccid", "ef_imsi", "ef_acc", "ef_spn", "ki", "opc"]
        );
        // End is static, encoded once.
        assert!(matches!(t.parts.last(), Some(PeT::Static(_))));
    }

    #[test]
    fn errors_name_the_element() {
        let bad = MINIMAL.replace("\"$ki\"", "\"$kay\"");
        let err = Template::from_toml(&bad).unwrap_err();
        assert!(err.to_string().contains("pe #4 (akaParameter)"), "{err}");
        assert!(err.to_string().contains("$kay"), "{err}");

        let bad = MINIMAL.replace("{ name = \"ef-ecc\" },", "");
        let err = Template::from_toml(&bad).unwrap_err();
        assert!(
            err.to_string().contains("missing mandatory files: ef-ecc"),
            "{err}"
        );

        let bad = MINIMAL.replace("{ name = \"ef-est\" },", "{ name = \"ef-impi\" },");
        assert!(Template::from_toml(&bad)
            .unwrap_err()
            .to_string()
            .contains("no file `ef-impi`"));

        let bad = MINIMAL.replace("key = \"$ki\"", "key = \"00\"");
        assert!(Template::from_toml(&bad)
            .unwrap_err()
            .to_string()
            .contains("never uses $ki"));

        let bad = MINIMAL.replace("type = \"end\"", "type = \"ending\"");
        assert!(Template::from_toml(&bad)
            .unwrap_err()
            .to_string()
            .contains("unknown element type"));

        let bad = MINIMAL.replace("minor_version = 3", "minor_version = 3\ncolour = 1");
        assert!(Template::from_toml(&bad)
            .unwrap_err()
            .to_string()
            .contains("colour"));

        // The last element must be PE-End: the self-check decodes the sample.
        let bad = MINIMAL.replace("[[pe]]\ntype = \"end\"", "");
        assert!(matches!(
            Template::from_toml(&bad),
            Err(TemplateError::Package(SaipError::EndNotLast { .. }))
        ));
    }

    #[test]
    fn shipped_template_loads() {
        let t = Template::from_toml(include_str!("../../profiles/smdpplus-usim.toml")).unwrap();
        assert_eq!(t.id(), "smdpplus-usim");
        assert_eq!(t.profile_type(), Some("smdpplus-usim"));
        assert_eq!(t.params_used().len(), 21);
    }

    /// DER leaves out a component equal to its DEFAULT (X.690 §11.5): PIN
    /// and PUK attempt counters and attributes at their DEFAULT are not
    /// encoded (asn1tools re-encoding caught us writing them).
    #[test]
    fn defaults_are_left_out() {
        let with_codes = MINIMAL.replace(
            "[[pe]]\ntype = \"usim\"",
            r#"[[pe]]
type = "pukCodes"
puks = [
  { key_reference = 0x01, value = "$puk1", max_attempts = 10, retries = 10 },
  { key_reference = 0x81, value = "$puk2", max_attempts = 9, retries = 9 },
]

[[pe]]
type = "pinCodes"
pins = [
  { key_reference = 0x01, value = "$pin1", unblocking_reference = 0x01, attributes = 7, max_attempts = 3, retries = 3 },
  { key_reference = 0x0A, value = "$adm1", attributes = 3, max_attempts = 10, retries = 10 },
]

[[pe]]
type = "usim""#,
        );
        let t = Template::from_toml(&with_codes).unwrap();
        let mut seen = 0;
        for part in &t.parts {
            match part {
                PeT::Puks(pe, _) => {
                    seen += 1;
                    let a: Vec<_> = pe.codes.iter().map(|c| c.attempts).collect();
                    assert_eq!(a, vec![None, Some(0x99)]);
                }
                PeT::Pins(pe, _) => {
                    seen += 1;
                    let PinCodesChoice::Config(c) = &pe.codes else {
                        panic!("pin config");
                    };
                    assert_eq!((c[0].attributes, c[0].attempts), (None, None));
                    assert_eq!((c[1].attributes, c[1].attempts), (Some(3), Some(0xAA)));
                }
                _ => {}
            }
        }
        assert_eq!(seen, 2);
        assert_eq!(non_default(Some(0x05u8), 0x05), None);
        assert_eq!(non_default(Some(0x0Fu8), 0x07), Some(0x0F));
    }

    #[test]
    fn access_conditions() {
        assert_eq!(condition("adm1"), Ok(Condition::Key(0x0A)));
        assert_eq!(condition("adm5"), Ok(Condition::Key(0x0E)));
        assert_eq!(condition("adm6"), Ok(Condition::Key(0x8A)));
        assert_eq!(condition("adm10"), Ok(Condition::Key(0x8E)));
        assert!(condition("adm11").is_err());
        assert!(condition("pin3").is_err());
        assert_eq!(attempts(Some(3), Some(3)), Ok(Some(0x33)));
        assert!(attempts(Some(3), None).is_err());
        assert!(attempts(Some(16), Some(1)).is_err());
    }
}
