//! `PE-SecurityDomain` (SAIP v3.3.1 PEDefinitions, §8.6): a GlobalPlatform
//! security domain of the profile, typically the MNO-SD, with its
//! instance parameters (`ApplicationInstance`, §8.7.3) and keys
//! (`KeyObject`, §8.6.3).

use super::{cons, extensions, octet, octets, prim, raw_contents, sized, uint16, uint8};
use super::{write_uint, PeHeader, Secret};
use crate::asn1::der::{DerCodec, Tag, Tlv, Writer};
use crate::asn1::Asn1Error;

/// `[APPLICATION 15]` (tag `4F`): an AID.
const AID: Tag = Tag::application(15, false);
/// `[PRIVATE n]` primitive.
const fn private(n: u8) -> Tag {
    Tag::new(0xC0 | n as u32)
}
/// `[PRIVATE n]` constructed.
const fn private_cons(n: u8) -> Tag {
    Tag::new(0xE0 | n as u32)
}

/// `ApplicationInstance` (§8.7.3): how to install an application or
/// security domain instance (GlobalPlatform INSTALL [for install]).
/// Its components carry explicit tags, so untagged ones keep universal tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplicationInstance {
    /// `applicationLoadPackageAID [APPLICATION 15]`.
    pub load_package_aid: Vec<u8>,
    /// `classAID [APPLICATION 15]`.
    pub class_aid: Vec<u8>,
    /// `instanceAID [APPLICATION 15]`.
    pub instance_aid: Vec<u8>,
    /// `extraditeSecurityDomainAID [APPLICATION 15] OPTIONAL`.
    pub extradite_sd_aid: Option<Vec<u8>>,
    /// `applicationPrivileges [2]` (GlobalPlatform privileges).
    pub privileges: Vec<u8>,
    /// `lifeCycleState [3] OCTET STRING (SIZE(1)) DEFAULT '07'H`.
    pub life_cycle_state: Option<u8>,
    /// `applicationSpecificParametersC9 [PRIVATE 9]`: the install
    /// parameters (tag `C9`).
    pub specific_parameters_c9: Vec<u8>,
    /// `systemSpecificParameters [PRIVATE 15]` (tag `EF`): its contents,
    /// kept undecoded.
    pub system_specific_parameters: Option<Vec<u8>>,
    /// `applicationParameters [PRIVATE 10]` (tag `EA`): its contents
    /// (UICC toolkit, access and admin parameters), kept undecoded.
    pub application_parameters: Option<Vec<u8>>,
    /// `processData SEQUENCE (SIZE (1..MAX)) OF OCTET STRING OPTIONAL`:
    /// APDUs sent to the instance after install.
    pub process_data: Option<Vec<Vec<u8>>>,
    /// `controlReferenceTemplate [16]` (tag `B0`): its contents, kept
    /// undecoded.
    pub control_reference_template: Option<Vec<u8>>,
}

impl ApplicationInstance {
    /// Decodes the components of an `ApplicationInstance` under any tag.
    pub(super) fn from_contents(tlv: &Tlv<'_>) -> Result<ApplicationInstance, Asn1Error> {
        const CTX: &str = "ApplicationInstance";
        let mut r = tlv.children(CTX)?;
        let aid = |t: Tlv<'_>| sized(&t, 5, 16, CTX);
        let out = ApplicationInstance {
            load_package_aid: aid(r.expect(AID)?)?,
            class_aid: aid(r.expect(AID)?)?,
            instance_aid: aid(r.expect(AID)?)?,
            extradite_sd_aid: r.optional(AID)?.map(aid).transpose()?,
            privileges: octets(&r.expect(prim(2))?, CTX)?,
            life_cycle_state: r.optional(prim(3))?.map(|t| octet(&t, CTX)).transpose()?,
            specific_parameters_c9: octets(&r.expect(private(9))?, CTX)?,
            system_specific_parameters: r
                .optional(private_cons(15))?
                .map(|t| raw_contents(&t, CTX))
                .transpose()?,
            application_parameters: r
                .optional(private_cons(10))?
                .map(|t| raw_contents(&t, CTX))
                .transpose()?,
            process_data: match r.optional(Tag::SEQUENCE)? {
                Some(t) => {
                    let mut list = t.children(CTX)?;
                    let mut apdus = Vec::new();
                    while let Some(e) = list.next_tlv()? {
                        e.expect_tag(Tag::OCTET_STRING, CTX)?;
                        apdus.push(octets(&e, CTX)?);
                    }
                    if apdus.is_empty() {
                        return Err(Asn1Error::invalid(CTX, "empty processData"));
                    }
                    Some(apdus)
                }
                None => None,
            },
            control_reference_template: r
                .optional(cons(16))?
                .map(|t| raw_contents(&t, CTX))
                .transpose()?,
        };
        r.finish()?;
        Ok(out)
    }

    /// Writes the instance under `tag`.
    pub(super) fn write_as(&self, tag: Tag, w: &mut Writer) {
        w.constructed(tag, |w| {
            w.tlv(AID, &self.load_package_aid);
            w.tlv(AID, &self.class_aid);
            w.tlv(AID, &self.instance_aid);
            if let Some(v) = &self.extradite_sd_aid {
                w.tlv(AID, v);
            }
            w.tlv(prim(2), &self.privileges);
            if let Some(v) = self.life_cycle_state {
                w.tlv(prim(3), &[v]);
            }
            w.tlv(private(9), &self.specific_parameters_c9);
            if let Some(v) = &self.system_specific_parameters {
                w.tlv(private_cons(15), v);
            }
            if let Some(v) = &self.application_parameters {
                w.tlv(private_cons(10), v);
            }
            if let Some(list) = &self.process_data {
                w.constructed(Tag::SEQUENCE, |w| {
                    for apdu in list {
                        w.tlv(Tag::OCTET_STRING, apdu);
                    }
                });
            }
            if let Some(v) = &self.control_reference_template {
                w.tlv(cons(16), v);
            }
        });
    }
}

/// One component of a key (`keyComponents` entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyComponent {
    /// `keyType [0]`: GlobalPlatform key type, `88` for AES.
    pub key_type: Vec<u8>,
    /// `keyData [6]`: the key value.
    pub key_data: Secret,
    /// `macLength [7] UInt8 DEFAULT 8`.
    pub mac_length: Option<u8>,
}

/// `KeyObject` (§8.6.3): one key of a security domain (GlobalPlatform
/// Card Specification §11.1.8 / §11.8 PUT KEY).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyObject {
    /// `keyUsageQualifier [21]` (1 or 2 octets), e.g. `18` C-ENC,
    /// `14` C-MAC, `48` DEK.
    pub usage_qualifier: Vec<u8>,
    /// `keyAccess [22] OCTET STRING (SIZE (1)) DEFAULT '00'H`.
    pub access: Option<u8>,
    /// `keyIdentifier [2]`.
    pub identifier: u8,
    /// `keyVersionNumber [3]`, e.g. `30` for an SCP03 key set.
    pub version: u8,
    /// `keyCounterValue [5] OPTIONAL`.
    pub counter: Option<Vec<u8>>,
    /// `keyComponents` (at least one).
    pub components: Vec<KeyComponent>,
}

impl KeyObject {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<KeyObject, Asn1Error> {
        const CTX: &str = "KeyObject";
        tlv.expect_tag(Tag::SEQUENCE, CTX)?;
        let mut r = tlv.children(CTX)?;
        let usage_qualifier = sized(&r.expect(prim(21))?, 1, 2, CTX)?;
        let access = r.optional(prim(22))?.map(|t| octet(&t, CTX)).transpose()?;
        let identifier = octet(&r.expect(prim(2))?, CTX)?;
        let version = octet(&r.expect(prim(3))?, CTX)?;
        let counter = r.optional(prim(5))?.map(|t| octets(&t, CTX)).transpose()?;
        let mut list = r.expect(Tag::SEQUENCE)?.children(CTX)?;
        let mut components = Vec::new();
        while let Some(c) = list.next_tlv()? {
            c.expect_tag(Tag::SEQUENCE, CTX)?;
            let mut cr = c.children(CTX)?;
            components.push(KeyComponent {
                key_type: octets(&cr.expect(prim(0))?, CTX)?,
                key_data: Secret::new(cr.expect(prim(6))?.octet_string(CTX)?),
                mac_length: cr.optional(prim(7))?.map(|t| uint8(&t, CTX)).transpose()?,
            });
            cr.finish()?;
        }
        if components.is_empty() {
            return Err(Asn1Error::invalid(
                CTX,
                "a key needs at least one component",
            ));
        }
        r.finish()?;
        Ok(KeyObject {
            usage_qualifier,
            access,
            identifier,
            version,
            counter,
            components,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(Tag::SEQUENCE, |w| {
            w.tlv(prim(21), &self.usage_qualifier);
            if let Some(v) = self.access {
                w.tlv(prim(22), &[v]);
            }
            w.tlv(prim(2), &[self.identifier]);
            w.tlv(prim(3), &[self.version]);
            if let Some(v) = &self.counter {
                w.tlv(prim(5), v);
            }
            w.constructed(Tag::SEQUENCE, |w| {
                for c in &self.components {
                    w.constructed(Tag::SEQUENCE, |w| {
                        w.tlv(prim(0), &c.key_type);
                        w.tlv(prim(6), c.key_data.expose());
                        if let Some(v) = c.mac_length {
                            write_uint(w, prim(7), u32::from(v));
                        }
                    });
                }
            });
        });
    }
}

/// `openPersoData` (§8.6.6).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct OpenPersoData {
    /// `restrictParameter [PRIVATE 25] OCTET STRING (SIZE(1)) OPTIONAL`.
    pub restrict_parameter: Option<u8>,
    /// `contactlessProtocolParameters OCTET STRING OPTIONAL` (universal).
    pub contactless_protocol_parameters: Option<Vec<u8>>,
}

/// `PE-SecurityDomain` (`securityDomain [6]`, tag `A6`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityDomain {
    /// `sd-Header`.
    pub header: PeHeader,
    /// `instance [1] ApplicationInstance`.
    pub instance: ApplicationInstance,
    /// `keyList [2] SEQUENCE (SIZE (1..MAX)) OF KeyObject OPTIONAL`.
    pub keys: Option<Vec<KeyObject>>,
    /// `sdPersoData [3] SEQUENCE (SIZE (1..MAX)) OF OCTET STRING OPTIONAL`
    /// (§8.6.4): STORE DATA payloads.
    pub perso_data: Option<Vec<Vec<u8>>>,
    /// `openPersoData [4] OPTIONAL`.
    pub open_perso_data: Option<OpenPersoData>,
    /// `catTpParameters [5] OPTIONAL` (§8.6.7): max SDU and PDU size.
    pub cat_tp: Option<(u16, u16)>,
    /// Extension additions, as received.
    pub extensions: Vec<Vec<u8>>,
}

impl SecurityDomain {
    /// The tag: `securityDomain [6]`.
    pub const TAG: Tag = Tag::context(6, true);
}

impl DerCodec for SecurityDomain {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<SecurityDomain, Asn1Error> {
        const CTX: &str = "PE-SecurityDomain";
        tlv.expect_tag(SecurityDomain::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let header = PeHeader::from_tlv(&r.expect(cons(0))?)?;
        let instance = ApplicationInstance::from_contents(&r.expect(cons(1))?)?;
        let keys = match r.optional(cons(2))? {
            Some(t) => {
                let mut list = t.children(CTX)?;
                let mut keys = Vec::new();
                while let Some(k) = list.next_tlv()? {
                    keys.push(KeyObject::from_tlv(&k)?);
                }
                if keys.is_empty() {
                    return Err(Asn1Error::invalid(CTX, "empty keyList"));
                }
                Some(keys)
            }
            None => None,
        };
        let perso_data = match r.optional(cons(3))? {
            Some(t) => {
                let mut list = t.children(CTX)?;
                let mut out = Vec::new();
                while let Some(e) = list.next_tlv()? {
                    e.expect_tag(Tag::OCTET_STRING, CTX)?;
                    out.push(octets(&e, CTX)?);
                }
                if out.is_empty() {
                    return Err(Asn1Error::invalid(CTX, "empty sdPersoData"));
                }
                Some(out)
            }
            None => None,
        };
        let open_perso_data = match r.optional(cons(4))? {
            Some(t) => {
                let mut o = t.children(CTX)?;
                let out = OpenPersoData {
                    restrict_parameter: o
                        .optional(private(25))?
                        .map(|t| octet(&t, CTX))
                        .transpose()?,
                    contactless_protocol_parameters: o
                        .optional(Tag::OCTET_STRING)?
                        .map(|t| octets(&t, CTX))
                        .transpose()?,
                };
                o.finish()?;
                Some(out)
            }
            None => None,
        };
        let cat_tp = match r.optional(cons(5))? {
            Some(t) => {
                let mut c = t.children(CTX)?;
                let sdu = uint16(&c.expect(prim(0))?, u16::MAX, CTX)?;
                let pdu = uint16(&c.expect(prim(1))?, u16::MAX, CTX)?;
                c.finish()?;
                Some((sdu, pdu))
            }
            None => None,
        };
        let extensions = extensions(&mut r, 5, CTX)?;
        Ok(SecurityDomain {
            header,
            instance,
            keys,
            perso_data,
            open_perso_data,
            cat_tp,
            extensions,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(SecurityDomain::TAG, |w| {
            self.header.write(w);
            self.instance.write_as(cons(1), w);
            if let Some(keys) = &self.keys {
                w.constructed(cons(2), |w| {
                    for k in keys {
                        k.write(w);
                    }
                });
            }
            if let Some(list) = &self.perso_data {
                w.constructed(cons(3), |w| {
                    for p in list {
                        w.tlv(Tag::OCTET_STRING, p);
                    }
                });
            }
            if let Some(o) = &self.open_perso_data {
                w.constructed(cons(4), |w| {
                    if let Some(v) = o.restrict_parameter {
                        w.tlv(private(25), &[v]);
                    }
                    if let Some(v) = &o.contactless_protocol_parameters {
                        w.tlv(Tag::OCTET_STRING, v);
                    }
                });
            }
            if let Some((sdu, pdu)) = self.cat_tp {
                w.constructed(cons(5), |w| {
                    write_uint(w, prim(0), u32::from(sdu));
                    write_uint(w, prim(1), u32::from(pdu));
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
    fn mno_sd_round_trip() {
        let sd = SecurityDomain {
            header: PeHeader::new(20, true),
            instance: ApplicationInstance {
                load_package_aid: hex::decode("A0000001515350").unwrap(),
                class_aid: hex::decode("A000000151535041").unwrap(),
                instance_aid: hex::decode("A000000151000000").unwrap(),
                extradite_sd_aid: None,
                privileges: vec![0x82, 0xDC, 0x00],
                life_cycle_state: Some(0x0F),
                specific_parameters_c9: vec![0x81, 0x02, 0x03, 0x70],
                system_specific_parameters: None,
                application_parameters: Some(vec![0x80, 0x01, 0x00]),
                process_data: Some(vec![vec![0x80, 0xE2, 0x88, 0x00]]),
                control_reference_template: None,
            },
            keys: Some(vec![KeyObject {
                usage_qualifier: vec![0x18],
                access: None,
                identifier: 1,
                version: 0x30,
                counter: None,
                components: vec![KeyComponent {
                    key_type: vec![0x88],
                    key_data: Secret::new(&[0x5A; 16]),
                    mac_length: None,
                }],
            }]),
            perso_data: None,
            open_perso_data: Some(OpenPersoData {
                restrict_parameter: Some(1),
                contactless_protocol_parameters: None,
            }),
            cat_tp: Some((1024, 1200)),
            extensions: vec![],
        };
        let der = sd.to_der();
        assert_eq!(SecurityDomain::from_der(&der).unwrap(), sd);
        assert!(!format!("{sd:?}").contains("90, 90"));
    }
}
