//! `PE-AKAParameter` (SAIP v3.3.1 PEDefinitions): the network access
//! authentication of the NAA the PE follows: Milenage (3GPP TS 35.206) or
//! TUAK with the subscriber key and OPc, or a mapping onto another NAA's
//! parameters.

use super::{cons, extensions, octet, prim, sized, uint8, write_uint, PeHeader, Secret};
use crate::asn1::der::{DerCodec, Tag, Tlv, Writer};
use crate::asn1::rsp::named_integer;
use crate::asn1::Asn1Error;

named_integer! {
    /// `algorithmID INTEGER { milenage(1), tuak(2), usim-test-algorithm(3) }`.
    AlgorithmId {
        /// Milenage (3GPP TS 35.205/35.206).
        Milenage = 1,
        /// TUAK (3GPP TS 35.231).
        Tuak = 2,
        /// The USIM test algorithm (3GPP TS 34.108 §8.1.2).
        UsimTestAlgorithm = 3,
    }
}

/// The Milenage rotation constants r1..r5 in bits, `DEFAULT
/// '4000204060'H` (3GPP TS 35.206 §4.1: 64, 0, 32, 64, 96).
pub const DEFAULT_ROTATION_CONSTANTS: [u8; 5] = [0x40, 0x00, 0x20, 0x40, 0x60];

/// The Milenage XOR constants c1..c5 (16 octets each), the default of
/// `xoringConstants` (3GPP TS 35.206 §4.1: c1 = 0, c2 = 1, c3 = 2, c4 = 4,
/// c5 = 8 in the last octet).
pub const DEFAULT_XORING_CONSTANTS: [u8; 80] = {
    let mut c = [0u8; 80];
    c[31] = 1;
    c[47] = 2;
    c[63] = 4;
    c[79] = 8;
    c
};

/// `AlgoParameter`: the algorithm and its secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlgoParameter {
    /// `algorithmID [0]`.
    pub algorithm_id: AlgorithmId,
    /// `algorithmOptions [1] OCTET STRING (SIZE(1))`.
    pub algorithm_options: u8,
    /// `key [2] OCTET STRING`: K (Ki), 16 octets for Milenage.
    pub key: Secret,
    /// `opc [3] OCTET STRING`: OPc for Milenage, TOPc for TUAK.
    pub opc: Secret,
    /// `rotationConstants [4] OCTET STRING (SIZE (5)) DEFAULT
    /// '4000204060'H` (Milenage only); `None` when absent.
    pub rotation_constants: Option<[u8; 5]>,
    /// `xoringConstants [5] OCTET STRING (SIZE (80)) DEFAULT c1..c5`
    /// (Milenage only); `None` when absent.
    pub xoring_constants: Option<Box<[u8; 80]>>,
    /// `authCounterMax [6] OCTET STRING (SIZE(3)) OPTIONAL`.
    pub auth_counter_max: Option<[u8; 3]>,
    /// `numberOfKeccak [7] UInt8 DEFAULT 1` (TUAK only).
    pub number_of_keccak: Option<u8>,
}

impl AlgoParameter {
    /// The rotation constants in force (the default when absent).
    pub fn effective_rotation_constants(&self) -> [u8; 5] {
        self.rotation_constants
            .unwrap_or(DEFAULT_ROTATION_CONSTANTS)
    }

    /// The XOR constants in force (the default when absent).
    pub fn effective_xoring_constants(&self) -> [u8; 80] {
        self.xoring_constants
            .as_deref()
            .copied()
            .unwrap_or(DEFAULT_XORING_CONSTANTS)
    }

    fn from_tlv(tlv: &Tlv<'_>) -> Result<AlgoParameter, Asn1Error> {
        const CTX: &str = "AlgoParameter";
        let mut r = tlv.children(CTX)?;
        let out = AlgoParameter {
            algorithm_id: AlgorithmId::from_i64(r.expect(prim(0))?.integer(CTX)?),
            algorithm_options: octet(&r.expect(prim(1))?, CTX)?,
            key: Secret::new(r.expect(prim(2))?.octet_string(CTX)?),
            opc: Secret::new(r.expect(prim(3))?.octet_string(CTX)?),
            rotation_constants: r
                .optional(prim(4))?
                .map(|t| t.octets::<5>(CTX))
                .transpose()?,
            xoring_constants: r
                .optional(prim(5))?
                .map(|t| t.octets::<80>(CTX).map(Box::new))
                .transpose()?,
            auth_counter_max: r
                .optional(prim(6))?
                .map(|t| t.octets::<3>(CTX))
                .transpose()?,
            number_of_keccak: r.optional(prim(7))?.map(|t| uint8(&t, CTX)).transpose()?,
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(cons(1), |w| {
            w.integer(prim(0), self.algorithm_id.to_i64());
            w.tlv(prim(1), &[self.algorithm_options]);
            w.tlv(prim(2), self.key.expose());
            w.tlv(prim(3), self.opc.expose());
            if let Some(v) = &self.rotation_constants {
                w.tlv(prim(4), v);
            }
            if let Some(v) = &self.xoring_constants {
                w.tlv(prim(5), v.as_slice());
            }
            if let Some(v) = &self.auth_counter_max {
                w.tlv(prim(6), v);
            }
            if let Some(v) = self.number_of_keccak {
                write_uint(w, prim(7), u32::from(v));
            }
        });
    }
}

/// `MappingParameter`: reuse the algorithm parameters of another NAA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingParameter {
    /// `mappingOptions [0] OCTET STRING (SIZE(1))`.
    pub options: u8,
    /// `mappingSource [1] ApplicationIdentifier`: the AID of the NAA whose
    /// parameters are used.
    pub source: Vec<u8>,
}

/// The `algoConfiguration` CHOICE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlgoConfiguration {
    /// `mappingParameter [0]`.
    Mapping(MappingParameter),
    /// `algoParameter [1]`.
    Algo(AlgoParameter),
}

/// `PE-AKAParameter` (`akaParameter [4]`, tag `A4`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AkaParameter {
    /// `aka-header`.
    pub header: PeHeader,
    /// `algoConfiguration [1]` (explicitly tagged: a CHOICE).
    pub algo: AlgoConfiguration,
    /// `sqnOptions [2] OCTET STRING (SIZE(1)) DEFAULT '02'H`.
    pub sqn_options: Option<u8>,
    /// `sqnDelta [3] OCTET STRING (SIZE(6)) DEFAULT '000010000000'H`.
    pub sqn_delta: Option<[u8; 6]>,
    /// `sqnAgeLimit [4] OCTET STRING (SIZE(6)) DEFAULT '000010000000'H`.
    pub sqn_age_limit: Option<[u8; 6]>,
    /// `sqnInit [5] SEQUENCE (SIZE (32)) OF OCTET STRING (SIZE (6))`.
    pub sqn_init: Option<Vec<[u8; 6]>>,
    /// Extension additions, as received.
    pub extensions: Vec<Vec<u8>>,
}

impl AkaParameter {
    /// The tag: `akaParameter [4]`.
    pub const TAG: Tag = Tag::context(4, true);

    /// A Milenage configuration with K and OPc and the standard constants
    /// left to their defaults.
    pub fn milenage(header: PeHeader, algorithm_options: u8, key: Secret, opc: Secret) -> Self {
        AkaParameter {
            header,
            algo: AlgoConfiguration::Algo(AlgoParameter {
                algorithm_id: AlgorithmId::Milenage,
                algorithm_options,
                key,
                opc,
                rotation_constants: None,
                xoring_constants: None,
                auth_counter_max: None,
                number_of_keccak: None,
            }),
            sqn_options: None,
            sqn_delta: None,
            sqn_age_limit: None,
            sqn_init: None,
            extensions: Vec::new(),
        }
    }
}

impl DerCodec for AkaParameter {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<AkaParameter, Asn1Error> {
        const CTX: &str = "PE-AKAParameter";
        tlv.expect_tag(AkaParameter::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let header = PeHeader::from_tlv(&r.expect(cons(0))?)?;
        let mut choice = r.expect(cons(1))?.children(CTX)?;
        let alt = choice
            .next_tlv()?
            .ok_or(Asn1Error::invalid(CTX, "empty algoConfiguration"))?;
        let algo = match alt.tag() {
            t if t == cons(0) => {
                const MAP: &str = "MappingParameter";
                let mut m = alt.children(MAP)?;
                let options = octet(&m.expect(prim(0))?, MAP)?;
                let source = sized(&m.expect(prim(1))?, 5, 16, MAP)?;
                m.finish()?;
                AlgoConfiguration::Mapping(MappingParameter { options, source })
            }
            t if t == cons(1) => AlgoConfiguration::Algo(AlgoParameter::from_tlv(&alt)?),
            found => {
                return Err(Asn1Error::UnexpectedElement {
                    context: CTX,
                    found,
                })
            }
        };
        choice.finish()?;
        let sqn_options = r.optional(prim(2))?.map(|t| octet(&t, CTX)).transpose()?;
        let sqn_delta = r
            .optional(prim(3))?
            .map(|t| t.octets::<6>(CTX))
            .transpose()?;
        let sqn_age_limit = r
            .optional(prim(4))?
            .map(|t| t.octets::<6>(CTX))
            .transpose()?;
        let sqn_init = match r.optional(cons(5))? {
            Some(t) => {
                let mut list = t.children(CTX)?;
                let mut out = Vec::with_capacity(32);
                while let Some(e) = list.next_tlv()? {
                    e.expect_tag(Tag::OCTET_STRING, CTX)?;
                    out.push(e.octets::<6>(CTX)?);
                }
                if out.len() != 32 {
                    return Err(Asn1Error::invalid(CTX, "sqnInit must hold 32 values"));
                }
                Some(out)
            }
            None => None,
        };
        let extensions = extensions(&mut r, 5, CTX)?;
        Ok(AkaParameter {
            header,
            algo,
            sqn_options,
            sqn_delta,
            sqn_age_limit,
            sqn_init,
            extensions,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(AkaParameter::TAG, |w| {
            self.header.write(w);
            w.constructed(cons(1), |w| match &self.algo {
                AlgoConfiguration::Mapping(m) => w.constructed(cons(0), |w| {
                    w.tlv(prim(0), &[m.options]);
                    w.tlv(prim(1), &m.source);
                }),
                AlgoConfiguration::Algo(a) => a.write(w),
            });
            if let Some(v) = self.sqn_options {
                w.tlv(prim(2), &[v]);
            }
            if let Some(v) = &self.sqn_delta {
                w.tlv(prim(3), v);
            }
            if let Some(v) = &self.sqn_age_limit {
                w.tlv(prim(4), v);
            }
            if let Some(list) = &self.sqn_init {
                w.constructed(cons(5), |w| {
                    for v in list {
                        w.tlv(Tag::OCTET_STRING, v);
                    }
                });
            }
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
    fn milenage_round_trip_and_no_key_in_debug() {
        let mut aka = AkaParameter::milenage(
            PeHeader::new(7, true),
            0,
            Secret::new(&[0x11; 16]),
            Secret::new(&[0x22; 16]),
        );
        let der = aka.to_der();
        assert_eq!(&der[..2], &[0xA4, 0x35]);
        assert_eq!(AkaParameter::from_der(&der).unwrap(), aka);
        let shown = format!("{aka:?}");
        assert!(!shown.contains("17, 17") && !shown.contains("34, 34"));

        // Defaults spelled out survive as such.
        if let AlgoConfiguration::Algo(a) = &mut aka.algo {
            a.rotation_constants = Some(DEFAULT_ROTATION_CONSTANTS);
            a.xoring_constants = Some(Box::new(DEFAULT_XORING_CONSTANTS));
            assert_eq!(a.effective_xoring_constants()[79], 8);
        }
        aka.sqn_init = Some(vec![[0; 6]; 32]);
        let der = aka.to_der();
        assert_eq!(AkaParameter::from_der(&der).unwrap(), aka);

        aka.sqn_init = Some(vec![[0; 6]; 31]);
        assert!(AkaParameter::from_der(&aka.to_der()).is_err());
    }
}
