//! `PEHeader`, `ProfileHeader` (with its `ServicesList`) and `PE-End`
//! (SAIP v3.3.1 PEDefinitions).

use super::{cons, extensions, null, prim, sized, uint16, uint8, write_uint};
use crate::asn1::der::{DerCodec, Oid, Tag, Tlv, Writer};
use crate::asn1::Asn1Error;
use crate::ids::Iccid;

/// `PEHeader ::= SEQUENCE { mandated NULL OPTIONAL, identification UInt15 }`:
/// every PE but the ProfileHeader starts with one, as `[0]` (tag `A0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PeHeader {
    /// `mandated [0] NULL OPTIONAL`: the eUICC must support this PE.
    pub mandated: bool,
    /// `identification [1] UInt15`: the PE's number, echoed in `PEStatus`.
    pub identification: u16,
}

impl PeHeader {
    /// A header; `identification` must be at most 32767 (`UInt15`).
    pub const fn new(identification: u16, mandated: bool) -> PeHeader {
        PeHeader {
            mandated,
            identification,
        }
    }

    /// Decodes the PEHeader under `[0]` (tag `A0`).
    pub(super) fn from_tlv(tlv: &Tlv<'_>) -> Result<PeHeader, Asn1Error> {
        const CTX: &str = "PEHeader";
        tlv.expect_tag(cons(0), CTX)?;
        let mut r = tlv.children(CTX)?;
        let mandated = match r.optional(prim(0))? {
            Some(t) => {
                null(&t, CTX)?;
                true
            }
            None => false,
        };
        let identification = uint16(&r.expect(prim(1))?, 32767, CTX)?;
        r.finish()?;
        Ok(PeHeader {
            mandated,
            identification,
        })
    }

    /// Writes the PEHeader as `[0]` (tag `A0`).
    pub(super) fn write(&self, w: &mut Writer) {
        w.constructed(cons(0), |w| {
            if self.mandated {
                w.tlv(prim(0), &[]);
            }
            write_uint(w, prim(1), u32::from(self.identification));
        });
    }
}

/// A service of `ServicesList`, in ASN.1 order (component `[n]` is the
/// `n`-th name).
pub type Service = &'static str;

/// The `ServicesList` component names, in order: `[0]` is `contactless`.
pub const SERVICE_NAMES: [Service; 30] = [
    "contactless",
    "usim",
    "isim",
    "csim",
    "milenage",
    "tuak128",
    "cave",
    "gba-usim",
    "gba-isim",
    "mbms",
    "eap",
    "javacard",
    "multos",
    "multiple-usim",
    "multiple-isim",
    "multiple-csim",
    "tuak256",
    "usim-test-algorithm",
    "ber-tlv",
    "dfLink",
    "cat-tp",
    "get-identity",
    "profile-a-x25519",
    "profile-b-p256",
    "suciCalculatorApi",
    "dns-resolution",
    "scp11ac",
    "scp11c-authorization-mechanism",
    "s16mode",
    "eaka",
];

/// `ServicesList ::= SEQUENCE { contactless NULL OPTIONAL, usim NULL
/// OPTIONAL, ... }`: the services the eUICC must support to install the
/// profile (`eUICC-Mandatory-services`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ServicesList {
    /// Bit `n` set = component `[n]` present.
    bits: u32,
    /// Extension additions after `eaka [29]`, as received.
    pub extensions: Vec<Vec<u8>>,
}

impl ServicesList {
    /// A list of the named services; unknown names are refused.
    pub fn from_names<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<ServicesList, &'a str> {
        let mut list = ServicesList::default();
        for name in names {
            let n = SERVICE_NAMES.iter().position(|s| *s == name).ok_or(name)?;
            list.bits |= 1 << n;
        }
        Ok(list)
    }

    /// The names of the services present, in ASN.1 order.
    pub fn names(&self) -> Vec<Service> {
        SERVICE_NAMES
            .iter()
            .enumerate()
            .filter(|(n, _)| self.bits & (1 << n) != 0)
            .map(|(_, s)| *s)
            .collect()
    }

    /// Whether a service is present.
    pub fn contains(&self, name: &str) -> bool {
        SERVICE_NAMES
            .iter()
            .position(|s| *s == name)
            .is_some_and(|n| self.bits & (1 << n) != 0)
    }

    /// Decodes `[5] ServicesList` (tag `A5`).
    fn from_tlv(tlv: &Tlv<'_>) -> Result<ServicesList, Asn1Error> {
        const CTX: &str = "ServicesList";
        tlv.expect_tag(cons(5), CTX)?;
        let mut r = tlv.children(CTX)?;
        let mut bits = 0u32;
        let mut next = 0u32;
        while let Some(tag) = r.peek_tag()? {
            let n = tag.number();
            if tag != prim(n) || n < next || n >= 30 {
                break;
            }
            if let Some(t) = r.next_tlv()? {
                null(&t, CTX)?;
            }
            bits |= 1 << n;
            next = n + 1;
        }
        let extensions = extensions(&mut r, 29, CTX)?;
        Ok(ServicesList { bits, extensions })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(cons(5), |w| {
            for n in 0..30u32 {
                if self.bits & (1 << n) != 0 {
                    w.tlv(prim(n), &[]);
                }
            }
            for e in &self.extensions {
                w.raw(e);
            }
        });
    }
}

/// An entry of `eUICC-Mandatory-AIDs`: an application the eUICC must
/// already hold, and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MandatoryAid {
    /// `aid [0] ApplicationIdentifier` (5 to 16 octets).
    pub aid: Vec<u8>,
    /// `version [1] OCTET STRING (SIZE(2))`.
    pub version: [u8; 2],
}

/// `ProfileHeader` (`header [0]`, tag `A0`): the first PE of every
/// package. It names the ICCID and what the eUICC must support.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileHeader {
    /// `major-version [0] UInt8`.
    pub major_version: u8,
    /// `minor-version [1] UInt8`.
    pub minor_version: u8,
    /// `profileType [2] UTF8String (SIZE (1..100)) OPTIONAL`.
    pub profile_type: Option<String>,
    /// `iccid [3] OCTET STRING (SIZE (10))`: the ICCID digits in order, two
    /// per octet (first digit in the high nibble), padded with `F`; not
    /// nibble-swapped like EF.ICCID (see [`super::ef::header_iccid`]).
    pub iccid: [u8; 10],
    /// `pol [4] OCTET STRING OPTIONAL`.
    pub pol: Option<Vec<u8>>,
    /// `eUICC-Mandatory-services [5] ServicesList`.
    pub mandatory_services: ServicesList,
    /// `eUICC-Mandatory-GFSTEList [6] SEQUENCE OF OBJECT IDENTIFIER`: the
    /// file structure templates the eUICC must know.
    pub mandatory_gfste: Vec<Oid>,
    /// `connectivityParameters [7] OCTET STRING OPTIONAL`.
    pub connectivity_parameters: Option<Vec<u8>>,
    /// `eUICC-Mandatory-AIDs [8] ... OPTIONAL`.
    pub mandatory_aids: Option<Vec<MandatoryAid>>,
    /// `iotOptions [9] IotOptions OPTIONAL`: the `pix [0]` (7 to 11 octets).
    pub iot_pix: Option<Vec<u8>>,
    /// Extension additions, as received.
    pub extensions: Vec<Vec<u8>>,
}

impl ProfileHeader {
    /// The tag: `header [0]`.
    pub const TAG: Tag = Tag::context(0, true);

    /// The ICCID, if the header's digits form one (19 or 20 digits).
    pub fn iccid(&self) -> Option<Iccid> {
        super::ef::iccid_from_header(&self.iccid)
    }
}

impl DerCodec for ProfileHeader {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<ProfileHeader, Asn1Error> {
        const CTX: &str = "ProfileHeader";
        tlv.expect_tag(ProfileHeader::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let major_version = uint8(&r.expect(prim(0))?, CTX)?;
        let minor_version = uint8(&r.expect(prim(1))?, CTX)?;
        let profile_type = match r.optional(prim(2))? {
            Some(t) => {
                let s = t.utf8(CTX)?;
                if !(1..=100).contains(&s.chars().count()) {
                    return Err(Asn1Error::invalid(CTX, "profileType size out of 1..100"));
                }
                Some(s.to_owned())
            }
            None => None,
        };
        let iccid = r.expect(prim(3))?.octets::<10>(CTX)?;
        let pol = r
            .optional(prim(4))?
            .map(|t| sized(&t, 0, usize::MAX, CTX))
            .transpose()?;
        let mandatory_services = ServicesList::from_tlv(&r.expect(cons(5))?)?;
        let mut gfste = r.expect(cons(6))?.children(CTX)?;
        let mut mandatory_gfste = Vec::new();
        while let Some(t) = gfste.next_tlv()? {
            t.expect_tag(Tag::OID, CTX)?;
            mandatory_gfste.push(t.oid(CTX)?);
        }
        let connectivity_parameters = r
            .optional(prim(7))?
            .map(|t| sized(&t, 0, usize::MAX, CTX))
            .transpose()?;
        let mandatory_aids = match r.optional(cons(8))? {
            Some(t) => {
                let mut list = t.children(CTX)?;
                let mut aids = Vec::new();
                while let Some(entry) = list.next_tlv()? {
                    entry.expect_tag(Tag::SEQUENCE, CTX)?;
                    let mut e = entry.children(CTX)?;
                    let aid = sized(&e.expect(prim(0))?, 5, 16, CTX)?;
                    let version = e.expect(prim(1))?.octets::<2>(CTX)?;
                    e.finish()?;
                    aids.push(MandatoryAid { aid, version });
                }
                Some(aids)
            }
            None => None,
        };
        let iot_pix = match r.optional(cons(9))? {
            Some(t) => {
                let mut io = t.children(CTX)?;
                let pix = sized(&io.expect(prim(0))?, 7, 11, CTX)?;
                io.finish()?;
                Some(pix)
            }
            None => None,
        };
        let extensions = extensions(&mut r, 9, CTX)?;
        Ok(ProfileHeader {
            major_version,
            minor_version,
            profile_type,
            iccid,
            pol,
            mandatory_services,
            mandatory_gfste,
            connectivity_parameters,
            mandatory_aids,
            iot_pix,
            extensions,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(ProfileHeader::TAG, |w| {
            write_uint(w, prim(0), u32::from(self.major_version));
            write_uint(w, prim(1), u32::from(self.minor_version));
            if let Some(p) = &self.profile_type {
                w.utf8(prim(2), p);
            }
            w.tlv(prim(3), &self.iccid);
            if let Some(p) = &self.pol {
                w.tlv(prim(4), p);
            }
            self.mandatory_services.write(w);
            w.constructed(cons(6), |w| {
                for oid in &self.mandatory_gfste {
                    w.oid(Tag::OID, oid);
                }
            });
            if let Some(c) = &self.connectivity_parameters {
                w.tlv(prim(7), c);
            }
            if let Some(aids) = &self.mandatory_aids {
                w.constructed(cons(8), |w| {
                    for a in aids {
                        w.constructed(Tag::SEQUENCE, |w| {
                            w.tlv(prim(0), &a.aid);
                            w.tlv(prim(1), &a.version);
                        });
                    }
                });
            }
            if let Some(pix) = &self.iot_pix {
                w.constructed(cons(9), |w| w.tlv(prim(0), pix));
            }
            for e in &self.extensions {
                w.raw(e);
            }
        });
    }
}

/// `PE-End ::= SEQUENCE { end-header PEHeader }` (`end [10]`, tag `AA`):
/// the last PE of every package.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct End {
    /// `end-header`.
    pub header: PeHeader,
    /// Extension additions, as received.
    pub extensions: Vec<Vec<u8>>,
}

impl End {
    /// The tag: `end [10]`.
    pub const TAG: Tag = Tag::context(10, true);
}

impl DerCodec for End {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<End, Asn1Error> {
        const CTX: &str = "PE-End";
        tlv.expect_tag(End::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let header = PeHeader::from_tlv(&r.expect(cons(0))?)?;
        let extensions = extensions(&mut r, 0, CTX)?;
        Ok(End { header, extensions })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(End::TAG, |w| {
            self.header.write(w);
            for e in &self.extensions {
                w.raw(e);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pe_header_encoding() {
        let h = PeHeader::new(300, true);
        let mut w = Writer::new();
        h.write(&mut w);
        let bytes = w.into_bytes();
        assert_eq!(bytes, [0xA0, 0x06, 0x80, 0x00, 0x81, 0x02, 0x01, 0x2C]);
        let tlv = crate::asn1::der::parse_one(&bytes, "t").unwrap();
        assert_eq!(PeHeader::from_tlv(&tlv).unwrap(), h);
        // identification is a UInt15.
        let big = [0xA0, 0x05, 0x81, 0x03, 0x00, 0x80, 0x00];
        let tlv = crate::asn1::der::parse_one(&big, "t").unwrap();
        assert!(PeHeader::from_tlv(&tlv).is_err());
        // mandated is a NULL.
        let bad = [0xA0, 0x06, 0x80, 0x01, 0x00, 0x81, 0x01, 0x01];
        let tlv = crate::asn1::der::parse_one(&bad, "t").unwrap();
        assert!(PeHeader::from_tlv(&tlv).is_err());
    }

    #[test]
    fn services_by_name() {
        let s = ServicesList::from_names(["usim", "milenage", "eaka"]).unwrap();
        assert_eq!(s.names(), vec!["usim", "milenage", "eaka"]);
        assert!(s.contains("usim") && !s.contains("isim"));
        assert_eq!(ServicesList::from_names(["usim", "nope"]), Err("nope"));
        let mut w = Writer::new();
        s.write(&mut w);
        assert_eq!(
            w.into_bytes(),
            [0xA5, 0x06, 0x81, 0x00, 0x84, 0x00, 0x9D, 0x00]
        );
    }
}
