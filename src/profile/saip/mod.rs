//! The eUICC profile package (TCA "SAIP", eUICC Profile Package:
//! Interoperable Format Technical Specification v3.3.1): typed DER encode
//! and decode of the Profile Elements (PEs) an SM-DP+ prepares.
//!
//! An unprotected profile package (UPP, SGP.22 §2.5.5) is the concatenation
//! of `ProfileElement` TLVs (PEDefinitions `ProfileElement ::= CHOICE`), the
//! ProfileHeader first and PE-End last. Each CHOICE alternative is a
//! context-specific constructed tag (`AUTOMATIC TAGS`): `A0` header, `A1`
//! genericFileManagement, `A2` pinCodes, `A3` pukCodes, `A4` akaParameter,
//! `A6` securityDomain, `AA` end, `B0`..`BF21` the template-based file
//! systems (mf, telecom, usim, isim, ...).
//!
//! Layering follows [`crate::asn1`]: this module only uses the strict DER
//! layer ([`crate::asn1::der`]), so a decode consumes all of its input or
//! fails, and every accepted encoding is canonical. Where the ASN.1 gives a
//! component a `DEFAULT`, the typed value keeps an `Option` so a package
//! that spells the default out (many producers do) re-encodes to the same
//! bytes. Extension additions (the module is `EXTENSIBILITY IMPLIED`) at
//! the end of a PE are kept as received TLVs, and PEs this module does not
//! type (cdmaParameter, rfm, application, nonStandard, future alternatives)
//! are kept whole ([`UnknownElement`]). Hence `encode(decode(b)) == b` for
//! every accepted `b`, and `decode(encode(x)) == x` for every valid `x`.
//!
//! Decoding never panics: every rejection is a [`SaipError`] naming the PE
//! (index, byte offset, CHOICE alternative) and what is wrong with it.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "decoders face untrusted input: no panics outside tests"
    )
)]

mod aka;
pub mod ef;
mod file;
mod header;
mod pin;
pub mod schema;
mod sd;
mod secret;

pub use aka::{
    AkaParameter, AlgoConfiguration, AlgoParameter, AlgorithmId, MappingParameter,
    DEFAULT_ROTATION_CONSTANTS, DEFAULT_XORING_CONSTANTS,
};
pub use file::{
    Fcp, File, FileElement, FileManagementCmd, FileSystemPe, FsKind, GenericFileManagement,
    ProprietaryInfo,
};
pub use header::{End, MandatoryAid, PeHeader, ProfileHeader, Service, ServicesList};
pub use pin::{
    PinCodes, PinCodesChoice, PinConfig, PukCodes, PukConfig, DEFAULT_PIN_ATTEMPTS,
    DEFAULT_PIN_ATTRIBUTES, DEFAULT_PUK_ATTEMPTS,
};
pub use sd::{ApplicationInstance, KeyComponent, KeyObject, OpenPersoData, SecurityDomain};
pub use secret::Secret;

use crate::asn1::der::{parse_one, Class, DerCodec, Reader, Tag, Tlv, Writer};
use crate::asn1::Asn1Error;
use crate::ids::Iccid;

/// Why a profile package was rejected. All variants are the package's
/// fault (malformed or not a SAIP profile package).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SaipError {
    /// No bytes at all.
    #[error("empty profile package")]
    Empty,
    /// The TLV framing breaks at this point (truncated, bad length, ...).
    #[error("profile element #{index} at byte {offset}: {source}")]
    Framing {
        /// 0-based index of the PE being read.
        index: usize,
        /// Byte offset of the PE in the package.
        offset: usize,
        /// What is wrong with the TLV.
        source: Asn1Error,
    },
    /// A PE whose TLV is well formed but whose contents are not.
    #[error("profile element #{index} ({element}) at byte {offset}: {source}")]
    Element {
        /// 0-based index of the PE.
        index: usize,
        /// Byte offset of the PE in the package.
        offset: usize,
        /// The CHOICE alternative (`usim`, `pinCodes`, ...).
        element: &'static str,
        /// What is wrong inside it.
        source: Asn1Error,
    },
    /// The package does not start with the ProfileHeader (SAIP: the header
    /// is the first PE).
    #[error("the first profile element is {found}, not the ProfileHeader")]
    HeaderNotFirst {
        /// What the first PE is.
        found: &'static str,
    },
    /// The package does not end with PE-End (SAIP: PE-End is the last PE).
    #[error("the last profile element is {found}, not PE-End")]
    EndNotLast {
        /// What the last PE is.
        found: &'static str,
    },
    /// A file name that is not a component of the PE type.
    #[error("{pe} has no file {file}")]
    NoSuchFile {
        /// The PE type, e.g. `PE-USIM`.
        pe: &'static str,
        /// The name asked for.
        file: String,
    },
    /// A second ProfileHeader, or a PE-End before the last PE.
    #[error("profile element #{index} ({element}) is out of place")]
    Misplaced {
        /// 0-based index of the PE.
        index: usize,
        /// `header` or `end`.
        element: &'static str,
    },
}

/// The names of the `ProfileElement` CHOICE alternatives, by tag number.
const CHOICE_NAMES: [&str; 34] = [
    "header",
    "genericFileManagement",
    "pinCodes",
    "pukCodes",
    "akaParameter",
    "cdmaParameter",
    "securityDomain",
    "rfm",
    "application",
    "nonStandard",
    "end",
    "rfu1",
    "rfu2",
    "rfu3",
    "rfu4",
    "rfu5",
    "mf",
    "cd",
    "telecom",
    "usim",
    "opt-usim",
    "isim",
    "opt-isim",
    "phonebook",
    "gsm-access",
    "csim",
    "opt-csim",
    "eap",
    "df-5gs",
    "df-saip",
    "df-snpn",
    "df-5gprose",
    "iot",
    "opt-iot",
];

/// The CHOICE alternative a tag selects, for messages.
fn choice_name(tag: Tag) -> &'static str {
    if tag.class() != Class::Context || !tag.is_constructed() {
        return "not a ProfileElement";
    }
    usize::try_from(tag.number())
        .ok()
        .and_then(|n| CHOICE_NAMES.get(n).copied())
        .unwrap_or("extension")
}

/// One Profile Element (PEDefinitions `ProfileElement ::= CHOICE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileElement {
    /// `header [0] ProfileHeader`.
    Header(ProfileHeader),
    /// `genericFileManagement [1] PE-GenericFileManagement`.
    GenericFileManagement(GenericFileManagement),
    /// `pinCodes [2] PE-PINCodes`.
    PinCodes(PinCodes),
    /// `pukCodes [3] PE-PUKCodes`.
    PukCodes(PukCodes),
    /// `akaParameter [4] PE-AKAParameter`.
    AkaParameter(AkaParameter),
    /// `securityDomain [6] PE-SecurityDomain`.
    SecurityDomain(SecurityDomain),
    /// `end [10] PE-End`.
    End(End),
    /// A template-based file system, `mf [16]` to `opt-iot [33]`.
    FileSystem(FileSystemPe),
    /// Any other alternative, kept as received.
    Unknown(UnknownElement),
}

impl ProfileElement {
    /// The CHOICE alternative name (`header`, `usim`, `pinCodes`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            ProfileElement::Header(_) => "header",
            ProfileElement::GenericFileManagement(_) => "genericFileManagement",
            ProfileElement::PinCodes(_) => "pinCodes",
            ProfileElement::PukCodes(_) => "pukCodes",
            ProfileElement::AkaParameter(_) => "akaParameter",
            ProfileElement::SecurityDomain(_) => "securityDomain",
            ProfileElement::End(_) => "end",
            ProfileElement::FileSystem(fs) => fs.kind().name(),
            ProfileElement::Unknown(u) => choice_name(u.tag()),
        }
    }
}

impl DerCodec for ProfileElement {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<ProfileElement, Asn1Error> {
        let tag = tlv.tag();
        if tag.class() != Class::Context || !tag.is_constructed() {
            return Err(Asn1Error::invalid(
                "ProfileElement",
                "not a ProfileElement (expected a context-specific constructed tag)",
            ));
        }
        Ok(match tag.number() {
            0 => ProfileElement::Header(ProfileHeader::from_tlv(tlv)?),
            1 => ProfileElement::GenericFileManagement(GenericFileManagement::from_tlv(tlv)?),
            2 => ProfileElement::PinCodes(PinCodes::from_tlv(tlv)?),
            3 => ProfileElement::PukCodes(PukCodes::from_tlv(tlv)?),
            4 => ProfileElement::AkaParameter(AkaParameter::from_tlv(tlv)?),
            6 => ProfileElement::SecurityDomain(SecurityDomain::from_tlv(tlv)?),
            10 => ProfileElement::End(End::from_tlv(tlv)?),
            n => match FsKind::from_tag_number(n) {
                Some(_) => ProfileElement::FileSystem(FileSystemPe::from_tlv(tlv)?),
                None => ProfileElement::Unknown(UnknownElement {
                    raw: tlv.raw().to_vec(),
                    tag,
                }),
            },
        })
    }

    fn write(&self, w: &mut Writer) {
        match self {
            ProfileElement::Header(v) => v.write(w),
            ProfileElement::GenericFileManagement(v) => v.write(w),
            ProfileElement::PinCodes(v) => v.write(w),
            ProfileElement::PukCodes(v) => v.write(w),
            ProfileElement::AkaParameter(v) => v.write(w),
            ProfileElement::SecurityDomain(v) => v.write(w),
            ProfileElement::End(v) => v.write(w),
            ProfileElement::FileSystem(v) => v.write(w),
            ProfileElement::Unknown(v) => w.raw(&v.raw),
        }
    }
}

/// A PE this module does not type (cdmaParameter, rfm, application,
/// nonStandard, the rfu alternatives, later additions to the CHOICE), kept
/// exactly as received so it survives a decode/encode unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownElement {
    tag: Tag,
    raw: Vec<u8>,
}

impl UnknownElement {
    /// Wraps one encoded PE: a single TLV with a context-specific
    /// constructed tag that this module does not decode.
    pub fn from_der(raw: &[u8]) -> Result<UnknownElement, Asn1Error> {
        let tlv = parse_one(raw, "ProfileElement")?;
        match ProfileElement::from_tlv(&tlv)? {
            ProfileElement::Unknown(u) => Ok(u),
            _ => Err(Asn1Error::invalid(
                "ProfileElement",
                "a supported element, not an unknown one",
            )),
        }
    }

    /// The tag (the CHOICE alternative).
    pub fn tag(&self) -> Tag {
        self.tag
    }

    /// The whole TLV as received.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

/// An unprotected profile package: the Profile Elements in order.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Profile {
    /// The PEs, ProfileHeader first and PE-End last.
    pub elements: Vec<ProfileElement>,
}

impl Profile {
    /// Decodes a profile package: a sequence of DER `ProfileElement` TLVs,
    /// the ProfileHeader first and PE-End last, nothing after it.
    pub fn decode(bytes: &[u8]) -> Result<Profile, SaipError> {
        if bytes.is_empty() {
            return Err(SaipError::Empty);
        }
        let mut reader = Reader::new(bytes, "profile package");
        let mut elements = Vec::new();
        let mut offset = 0usize;
        loop {
            let index = elements.len();
            let tlv = match reader.next_tlv() {
                Ok(Some(tlv)) => tlv,
                Ok(None) => break,
                Err(source) => {
                    return Err(SaipError::Framing {
                        index,
                        offset,
                        source,
                    })
                }
            };
            let pe = ProfileElement::from_tlv(&tlv).map_err(|source| SaipError::Element {
                index,
                offset,
                element: choice_name(tlv.tag()),
                source,
            })?;
            offset += tlv.raw().len();
            elements.push(pe);
        }
        let profile = Profile { elements };
        profile.check_structure()?;
        Ok(profile)
    }

    /// Checks the order rules: the ProfileHeader first, PE-End last, and
    /// neither anywhere else.
    pub fn check_structure(&self) -> Result<(), SaipError> {
        let first = self.elements.first().ok_or(SaipError::Empty)?;
        if !matches!(first, ProfileElement::Header(_)) {
            return Err(SaipError::HeaderNotFirst {
                found: first.name(),
            });
        }
        let last_index = self.elements.len() - 1;
        for (index, pe) in self.elements.iter().enumerate() {
            let misplaced = match pe {
                ProfileElement::Header(_) => index != 0,
                ProfileElement::End(_) => index != last_index,
                _ => false,
            };
            if misplaced {
                return Err(SaipError::Misplaced {
                    index,
                    element: pe.name(),
                });
            }
        }
        match self.elements.last() {
            Some(ProfileElement::End(_)) => Ok(()),
            Some(other) => Err(SaipError::EndNotLast {
                found: other.name(),
            }),
            None => Err(SaipError::Empty),
        }
    }

    /// Encodes the PEs, in order, as canonical DER.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        for pe in &self.elements {
            pe.write(&mut w);
        }
        w.into_bytes()
    }

    /// The ProfileHeader, if the first PE is one.
    pub fn header(&self) -> Option<&ProfileHeader> {
        match self.elements.first() {
            Some(ProfileElement::Header(h)) => Some(h),
            _ => None,
        }
    }

    /// The ICCID named by the ProfileHeader.
    pub fn iccid(&self) -> Option<Iccid> {
        self.header().and_then(ProfileHeader::iccid)
    }

    /// The first file-system PE of a kind (e.g. the USIM).
    pub fn file_system(&self, kind: FsKind) -> Option<&FileSystemPe> {
        self.elements.iter().find_map(|pe| match pe {
            ProfileElement::FileSystem(fs) if fs.kind() == kind => Some(fs),
            _ => None,
        })
    }
}

// ---------------------------------------------------------------------------
// Codec helpers shared by the PE modules.

/// `[n]` primitive.
const fn prim(n: u32) -> Tag {
    Tag::context(n, false)
}

/// `[n]` constructed.
const fn cons(n: u32) -> Tag {
    Tag::context(n, true)
}

/// A NULL: empty contents (X.690 §8.8).
fn null(tlv: &Tlv<'_>, ctx: &'static str) -> Result<(), Asn1Error> {
    if tlv.primitive(ctx)?.is_empty() {
        Ok(())
    } else {
        Err(Asn1Error::invalid(ctx, "NULL with contents"))
    }
}

/// An INTEGER constrained to `0..=max` (UInt8, UInt15, UInt16, ...).
fn uint(tlv: &Tlv<'_>, max: u32, ctx: &'static str) -> Result<u32, Asn1Error> {
    let v = tlv.integer(ctx)?;
    u32::try_from(v)
        .ok()
        .filter(|v| *v <= max)
        .ok_or(Asn1Error::invalid(ctx, "INTEGER out of range"))
}

/// A `UInt8`.
fn uint8(tlv: &Tlv<'_>, ctx: &'static str) -> Result<u8, Asn1Error> {
    u8::try_from(uint(tlv, 255, ctx)?).map_err(|_| Asn1Error::invalid(ctx, "INTEGER out of range"))
}

/// A `UInt16` (or `UInt15` with `max = 32767`).
fn uint16(tlv: &Tlv<'_>, max: u16, ctx: &'static str) -> Result<u16, Asn1Error> {
    u16::try_from(uint(tlv, u32::from(max), ctx)?)
        .map_err(|_| Asn1Error::invalid(ctx, "INTEGER out of range"))
}

/// An `OCTET STRING (SIZE(1))` as its octet.
fn octet(tlv: &Tlv<'_>, ctx: &'static str) -> Result<u8, Asn1Error> {
    let [b] = tlv.octets::<1>(ctx)?;
    Ok(b)
}

/// An OCTET STRING with a size constraint, copied.
fn sized(tlv: &Tlv<'_>, min: usize, max: usize, ctx: &'static str) -> Result<Vec<u8>, Asn1Error> {
    Ok(tlv.octets_sized(min, max, ctx)?.to_vec())
}

/// An OCTET STRING without a size constraint, copied.
fn octets(tlv: &Tlv<'_>, ctx: &'static str) -> Result<Vec<u8>, Asn1Error> {
    Ok(tlv.octet_string(ctx)?.to_vec())
}

/// Writes a non-negative INTEGER.
fn write_uint(w: &mut Writer, tag: Tag, v: u32) {
    w.integer(tag, i64::from(v));
}

/// The contents of a constructed value kept undecoded: they must still be
/// a well-formed sequence of TLVs.
fn raw_contents(tlv: &Tlv<'_>, ctx: &'static str) -> Result<Vec<u8>, Asn1Error> {
    let mut r = tlv.children(ctx)?;
    while r.next_tlv()?.is_some() {}
    Ok(tlv.value().to_vec())
}

/// The extension additions at the end of an automatically tagged SEQUENCE
/// whose last root component is `[last]`: context-specific tags above
/// `last`, in increasing order, kept as received. Anything else (a root
/// component out of order, a universal tag) is an error.
fn extensions(r: &mut Reader<'_>, last: u32, ctx: &'static str) -> Result<Vec<Vec<u8>>, Asn1Error> {
    let mut out = Vec::new();
    let mut after = last;
    while let Some(tag) = r.peek_tag()? {
        if tag.class() != Class::Context || tag.number() <= after {
            return Err(Asn1Error::UnexpectedElement {
                context: ctx,
                found: tag,
            });
        }
        after = tag.number();
        if let Some(tlv) = r.next_tlv()? {
            out.push(tlv.raw().to_vec());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_must_follow_the_root_in_order() {
        let bytes = [0x85, 0x00, 0xA7, 0x00];
        let mut r = Reader::new(&bytes, "t");
        assert_eq!(extensions(&mut r, 4, "t").unwrap().len(), 2);
        let mut r = Reader::new(&bytes, "t");
        assert!(extensions(&mut r, 5, "t").is_err());
        let swapped = [0xA7, 0x00, 0x85, 0x00];
        let mut r = Reader::new(&swapped, "t");
        assert!(extensions(&mut r, 4, "t").is_err());
        let universal = [0x04, 0x00];
        let mut r = Reader::new(&universal, "t");
        assert!(extensions(&mut r, 4, "t").is_err());
    }

    #[test]
    fn structure_errors_name_the_element() {
        assert_eq!(Profile::decode(&[]), Err(SaipError::Empty));
        // A lone PE-End: the header is missing.
        let end = [0xAA, 0x05, 0xA0, 0x03, 0x81, 0x01, 0x01];
        assert_eq!(
            Profile::decode(&end),
            Err(SaipError::HeaderNotFirst { found: "end" })
        );
        // Truncated framing.
        match Profile::decode(&end[..4]) {
            Err(SaipError::Framing {
                index: 0,
                offset: 0,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        // A universal SEQUENCE is no ProfileElement.
        match Profile::decode(&[0x30, 0x00]) {
            Err(SaipError::Element { element, .. }) => {
                assert_eq!(element, "not a ProfileElement")
            }
            other => panic!("{other:?}"),
        }
    }
}
