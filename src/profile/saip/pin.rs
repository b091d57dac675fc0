//! `PE-PINCodes` and `PE-PUKCodes` (SAIP v3.3.1 PEDefinitions): the PIN,
//! ADM and PUK values of the file system context the PE follows (the MF,
//! or the last DF/ADF before it).

use super::{cons, extensions, prim, sized, uint8, write_uint, PeHeader, Secret};
use crate::asn1::der::{DerCodec, Tag, Tlv, Writer};
use crate::asn1::Asn1Error;

/// A key reference (`PINKeyReferenceValue` / `PUKKeyReferenceValue`):
/// `01`..`08` global PINs/PUKs, `0A`..`0E` and `8A`..`8E` ADM keys, `81`..`88`
/// local ("second") PINs/PUKs. Any octet value is accepted.
fn key_reference(tlv: &Tlv<'_>, ctx: &'static str) -> Result<u8, Asn1Error> {
    uint8(tlv, ctx)
}

/// `PINConfiguration`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinConfig {
    /// `keyReference [0]`: `01` PIN1, `81` PIN2, `0A` ADM1, ...
    pub key_reference: u8,
    /// `pinValue [1] OCTET STRING (SIZE (8))`: ASCII digits padded with
    /// `FF` (ETSI TS 102 221 §9.5.1).
    pub value: Secret,
    /// `unblockingPINReference [2]`: the PUK that unblocks it, if any.
    pub unblocking_reference: Option<u8>,
    /// `pinAttributes [3] UInt8 DEFAULT 7`.
    pub attributes: Option<u8>,
    /// `maxNumOfAttemps-retryNumLeft [4] UInt8 DEFAULT 51`: maximum
    /// attempts in the high nibble, attempts left in the low nibble.
    pub attempts: Option<u8>,
}

/// The `pinAttributes` DEFAULT (7).
pub const DEFAULT_PIN_ATTRIBUTES: u8 = 7;
/// The `maxNumOfAttemps-retryNumLeft` DEFAULT of a PIN: 51, 3 attempts of 3.
pub const DEFAULT_PIN_ATTEMPTS: u8 = 0x33;
/// The `maxNumOfAttemps-retryNumLeft` DEFAULT of a PUK: 170, 10 of 10.
pub const DEFAULT_PUK_ATTEMPTS: u8 = 0xAA;

/// The `pinCodes` CHOICE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinCodesChoice {
    /// `pinconfig [0] SEQUENCE (SIZE (1..26)) OF PINConfiguration`.
    Config(Vec<PinConfig>),
    /// `filePath [1] OCTET STRING (SIZE (0..8))`: share the PINs of that
    /// DF/ADF (an ADF by its temporary file ID).
    FilePath(Vec<u8>),
}

/// `PE-PINCodes` (`pinCodes [2]`, tag `A2`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinCodes {
    /// `pin-Header`.
    pub header: PeHeader,
    /// `pinCodes [1]` (explicitly tagged: a CHOICE).
    pub codes: PinCodesChoice,
    /// Extension additions, as received.
    pub extensions: Vec<Vec<u8>>,
}

impl PinCodes {
    /// The tag: `pinCodes [2]`.
    pub const TAG: Tag = Tag::context(2, true);
}

impl DerCodec for PinCodes {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<PinCodes, Asn1Error> {
        const CTX: &str = "PE-PINCodes";
        tlv.expect_tag(PinCodes::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let header = PeHeader::from_tlv(&r.expect(cons(0))?)?;
        let mut choice = r.expect(cons(1))?.children(CTX)?;
        let alt = choice
            .next_tlv()?
            .ok_or(Asn1Error::invalid(CTX, "empty pinCodes CHOICE"))?;
        let codes = match alt.tag() {
            t if t == cons(0) => {
                let mut list = alt.children(CTX)?;
                let mut pins = Vec::new();
                while let Some(entry) = list.next_tlv()? {
                    pins.push(PinConfig::from_tlv(&entry)?);
                }
                if !(1..=26).contains(&pins.len()) {
                    return Err(Asn1Error::invalid(CTX, "pinconfig must hold 1..26 PINs"));
                }
                PinCodesChoice::Config(pins)
            }
            t if t == prim(1) => PinCodesChoice::FilePath(sized(&alt, 0, 8, CTX)?),
            found => {
                return Err(Asn1Error::UnexpectedElement {
                    context: CTX,
                    found,
                })
            }
        };
        choice.finish()?;
        let extensions = extensions(&mut r, 1, CTX)?;
        Ok(PinCodes {
            header,
            codes,
            extensions,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(PinCodes::TAG, |w| {
            self.header.write(w);
            w.constructed(cons(1), |w| match &self.codes {
                PinCodesChoice::Config(pins) => w.constructed(cons(0), |w| {
                    for p in pins {
                        p.write(w);
                    }
                }),
                PinCodesChoice::FilePath(p) => w.tlv(prim(1), p),
            });
            for e in &self.extensions {
                w.raw(e);
            }
        });
    }
}

impl PinConfig {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<PinConfig, Asn1Error> {
        const CTX: &str = "PINConfiguration";
        tlv.expect_tag(Tag::SEQUENCE, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = PinConfig {
            key_reference: key_reference(&r.expect(prim(0))?, CTX)?,
            value: Secret::new(&r.expect(prim(1))?.octets::<8>(CTX)?),
            unblocking_reference: r
                .optional(prim(2))?
                .map(|t| key_reference(&t, CTX))
                .transpose()?,
            attributes: r.optional(prim(3))?.map(|t| uint8(&t, CTX)).transpose()?,
            attempts: r.optional(prim(4))?.map(|t| uint8(&t, CTX)).transpose()?,
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(Tag::SEQUENCE, |w| {
            write_uint(w, prim(0), u32::from(self.key_reference));
            w.tlv(prim(1), self.value.expose());
            if let Some(v) = self.unblocking_reference {
                write_uint(w, prim(2), u32::from(v));
            }
            if let Some(v) = self.attributes {
                write_uint(w, prim(3), u32::from(v));
            }
            if let Some(v) = self.attempts {
                write_uint(w, prim(4), u32::from(v));
            }
        });
    }
}

/// `PUKConfiguration`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PukConfig {
    /// `keyReference [0]`: `01` PUK1, `81` PUK2, ...
    pub key_reference: u8,
    /// `pukValue [1] OCTET STRING (SIZE (8))`: eight ASCII digits.
    pub value: Secret,
    /// `maxNumOfAttemps-retryNumLeft [2] UInt8 DEFAULT 170`.
    pub attempts: Option<u8>,
}

/// `PE-PUKCodes` (`pukCodes [3]`, tag `A3`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PukCodes {
    /// `puk-Header`.
    pub header: PeHeader,
    /// `pukCodes [1] SEQUENCE (SIZE (1..16)) OF PUKConfiguration`.
    pub codes: Vec<PukConfig>,
    /// Extension additions, as received.
    pub extensions: Vec<Vec<u8>>,
}

impl PukCodes {
    /// The tag: `pukCodes [3]`.
    pub const TAG: Tag = Tag::context(3, true);
}

impl DerCodec for PukCodes {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<PukCodes, Asn1Error> {
        const CTX: &str = "PE-PUKCodes";
        const ENTRY: &str = "PUKConfiguration";
        tlv.expect_tag(PukCodes::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let header = PeHeader::from_tlv(&r.expect(cons(0))?)?;
        let mut list = r.expect(cons(1))?.children(CTX)?;
        let mut codes = Vec::new();
        while let Some(entry) = list.next_tlv()? {
            entry.expect_tag(Tag::SEQUENCE, ENTRY)?;
            let mut e = entry.children(ENTRY)?;
            codes.push(PukConfig {
                key_reference: key_reference(&e.expect(prim(0))?, ENTRY)?,
                value: Secret::new(&e.expect(prim(1))?.octets::<8>(ENTRY)?),
                attempts: e.optional(prim(2))?.map(|t| uint8(&t, ENTRY)).transpose()?,
            });
            e.finish()?;
        }
        if !(1..=16).contains(&codes.len()) {
            return Err(Asn1Error::invalid(CTX, "pukCodes must hold 1..16 PUKs"));
        }
        let extensions = extensions(&mut r, 1, CTX)?;
        Ok(PukCodes {
            header,
            codes,
            extensions,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(PukCodes::TAG, |w| {
            self.header.write(w);
            w.constructed(cons(1), |w| {
                for p in &self.codes {
                    w.constructed(Tag::SEQUENCE, |w| {
                        write_uint(w, prim(0), u32::from(p.key_reference));
                        w.tlv(prim(1), p.value.expose());
                        if let Some(v) = p.attempts {
                            write_uint(w, prim(2), u32::from(v));
                        }
                    });
                }
            });
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
    fn pin_codes_wire_form() {
        let pins = PinCodes {
            header: PeHeader::new(3, true),
            codes: PinCodesChoice::Config(vec![PinConfig {
                key_reference: 0x81,
                value: Secret::new(b"1234\xFF\xFF\xFF\xFF"),
                unblocking_reference: Some(0x81),
                attributes: None,
                attempts: Some(0x33),
            }]),
            extensions: vec![],
        };
        let der = pins.to_der();
        // A2 { A0 {80 00, 81 01 03}, A1 { A0 { 30 { 80 02 0081, 81 08 .., 82 02 0081, 84 01 33 } } } }
        assert_eq!(
            &der[..9],
            &[0xA2, 0x22, 0xA0, 0x05, 0x80, 0x00, 0x81, 0x01, 0x03]
        );
        assert_eq!(&der[9..15], &[0xA1, 0x19, 0xA0, 0x17, 0x30, 0x15]);
        assert_eq!(&der[15..19], &[0x80, 0x02, 0x00, 0x81]);
        assert_eq!(PinCodes::from_der(&der).unwrap(), pins);
        assert!(!format!("{pins:?}").contains("49, 50"));

        let shared = PinCodes {
            header: PeHeader::new(9, false),
            codes: PinCodesChoice::FilePath(vec![0x7F, 0xF1]),
            extensions: vec![],
        };
        assert_eq!(PinCodes::from_der(&shared.to_der()).unwrap(), shared);
    }

    #[test]
    fn puk_list_size_is_checked() {
        let empty = PukCodes {
            header: PeHeader::new(2, true),
            codes: vec![],
            extensions: vec![],
        };
        assert!(PukCodes::from_der(&empty.to_der()).is_err());
    }
}
