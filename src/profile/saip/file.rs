//! File system PEs (SAIP v3.3.1 PEDefinitions): `Fcp`, `File`, the
//! template-based PEs (`PE-MF`, `PE-TELECOM`, `PE-USIM`, `PE-ISIM`, ...) and
//! `PE-GenericFileManagement`.
//!
//! A template-based PE names a file structure template by OID (`templateID`,
//! SAIP Annex A): the template defines each file's identifier, type, size
//! and access rules, and the PE only adds what the template leaves open
//! (an ADF's AID, record counts, contents) or overrides. Each file is a
//! `File ::= SEQUENCE OF CHOICE { doNotCreate, fileDescriptor Fcp,
//! fillFileOffset, fillFileContent }`.

use std::collections::BTreeMap;

use super::schema::{self, FileSlot};
use super::{
    cons, extensions, null, octet, octets, prim, sized, uint16, write_uint, PeHeader, SaipError,
};
use crate::asn1::der::{DerCodec, Oid, Tag, Tlv, Writer};
use crate::asn1::Asn1Error;

/// `[PRIVATE n]` primitive.
const fn private(n: u8) -> Tag {
    Tag::new(0xC0 | n as u32)
}

/// `ProprietaryInfo` (`proprietaryEFInfo [5]` of an Fcp, tag `A5`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ProprietaryInfo {
    /// `specialFileInformation [PRIVATE 0] OCTET STRING (SIZE (1)) DEFAULT
    /// '00'H`; `None` when absent.
    pub special_file_information: Option<u8>,
    /// `fillPattern [PRIVATE 1]` (1 to 200 octets).
    pub fill_pattern: Option<Vec<u8>>,
    /// `repeatPattern [PRIVATE 2]` (1 to 200 octets).
    pub repeat_pattern: Option<Vec<u8>>,
    /// `maximumFileSize [6]` (BER-TLV files).
    pub maximum_file_size: Option<Vec<u8>>,
    /// `fileDetails [4] OCTET STRING (SIZE(1)) DEFAULT '01'H`.
    pub file_details: Option<u8>,
}

impl ProprietaryInfo {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<ProprietaryInfo, Asn1Error> {
        const CTX: &str = "ProprietaryInfo";
        let mut r = tlv.children(CTX)?;
        let out = ProprietaryInfo {
            special_file_information: r
                .optional(private(0))?
                .map(|t| octet(&t, CTX))
                .transpose()?,
            fill_pattern: r
                .optional(private(1))?
                .map(|t| sized(&t, 1, 200, CTX))
                .transpose()?,
            repeat_pattern: r
                .optional(private(2))?
                .map(|t| sized(&t, 1, 200, CTX))
                .transpose()?,
            maximum_file_size: r.optional(prim(6))?.map(|t| octets(&t, CTX)).transpose()?,
            file_details: r.optional(prim(4))?.map(|t| octet(&t, CTX)).transpose()?,
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(cons(5), |w| {
            if let Some(v) = self.special_file_information {
                w.tlv(private(0), &[v]);
            }
            if let Some(v) = &self.fill_pattern {
                w.tlv(private(1), v);
            }
            if let Some(v) = &self.repeat_pattern {
                w.tlv(private(2), v);
            }
            if let Some(v) = &self.maximum_file_size {
                w.tlv(prim(6), v);
            }
            if let Some(v) = self.file_details {
                w.tlv(prim(4), &[v]);
            }
        });
    }
}

/// `Fcp`: the file control parameters of one file, coded as in ETSI TS
/// 102 222 (CREATE FILE). Every component is optional: in a template-based
/// PE the template supplies what is absent.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Fcp {
    /// `fileDescriptor [2]` (2 to 4 octets), e.g. `4121` transparent,
    /// `42 21 00 20` linear fixed with 32-octet records, `7821` DF.
    pub file_descriptor: Option<Vec<u8>>,
    /// `fileID [3]` (2 octets); for an ADF a temporary ID used in paths.
    pub file_id: Option<[u8; 2]>,
    /// `dfName [4]`: an ADF's AID (5 to 16 octets).
    pub df_name: Option<Vec<u8>>,
    /// `lcsi [10] OCTET STRING (SIZE (1)) DEFAULT '05'H`.
    pub lcsi: Option<u8>,
    /// `securityAttributesReferenced [11]` (1 to 3 octets): EF.ARR ID and
    /// record number, or the record number only.
    pub security_attributes_referenced: Option<Vec<u8>>,
    /// `efFileSize [0]`, big-endian on the fewest octets.
    pub ef_file_size: Option<Vec<u8>>,
    /// `pinStatusTemplateDO [PRIVATE 6]`: the key references of the
    /// DF's PIN status template.
    pub pin_status_template_do: Option<Vec<u8>>,
    /// `shortEFID [8]` (0 or 1 octet; empty = no SFI).
    pub short_ef_id: Option<Vec<u8>>,
    /// `proprietaryEFInfo [5]`.
    pub proprietary_ef_info: Option<ProprietaryInfo>,
    /// `linkPath [PRIVATE 7]` (0 to 8 octets).
    pub link_path: Option<Vec<u8>>,
}

impl Fcp {
    /// Decodes an Fcp under whatever tag the context gives it (`[1]` in a
    /// `File`, `[APPLICATION 2]` in a FileManagement command).
    pub(super) fn from_contents(tlv: &Tlv<'_>) -> Result<Fcp, Asn1Error> {
        const CTX: &str = "Fcp";
        let mut r = tlv.children(CTX)?;
        let out = Fcp {
            file_descriptor: r
                .optional(prim(2))?
                .map(|t| sized(&t, 2, 4, CTX))
                .transpose()?,
            file_id: r
                .optional(prim(3))?
                .map(|t| t.octets::<2>(CTX))
                .transpose()?,
            df_name: r
                .optional(prim(4))?
                .map(|t| sized(&t, 5, 16, CTX))
                .transpose()?,
            lcsi: r.optional(prim(10))?.map(|t| octet(&t, CTX)).transpose()?,
            security_attributes_referenced: r
                .optional(prim(11))?
                .map(|t| sized(&t, 1, 3, CTX))
                .transpose()?,
            ef_file_size: r.optional(prim(0))?.map(|t| octets(&t, CTX)).transpose()?,
            pin_status_template_do: r
                .optional(private(6))?
                .map(|t| octets(&t, CTX))
                .transpose()?,
            short_ef_id: r
                .optional(prim(8))?
                .map(|t| sized(&t, 0, 1, CTX))
                .transpose()?,
            proprietary_ef_info: r
                .optional(cons(5))?
                .map(|t| ProprietaryInfo::from_tlv(&t))
                .transpose()?,
            link_path: r
                .optional(private(7))?
                .map(|t| sized(&t, 0, 8, CTX))
                .transpose()?,
        };
        r.finish()?;
        Ok(out)
    }

    /// Writes the Fcp under `tag`.
    pub(super) fn write_as(&self, tag: Tag, w: &mut Writer) {
        w.constructed(tag, |w| {
            if let Some(v) = &self.file_descriptor {
                w.tlv(prim(2), v);
            }
            if let Some(v) = &self.file_id {
                w.tlv(prim(3), v);
            }
            if let Some(v) = &self.df_name {
                w.tlv(prim(4), v);
            }
            if let Some(v) = self.lcsi {
                w.tlv(prim(10), &[v]);
            }
            if let Some(v) = &self.security_attributes_referenced {
                w.tlv(prim(11), v);
            }
            if let Some(v) = &self.ef_file_size {
                w.tlv(prim(0), v);
            }
            if let Some(v) = &self.pin_status_template_do {
                w.tlv(private(6), v);
            }
            if let Some(v) = &self.short_ef_id {
                w.tlv(prim(8), v);
            }
            if let Some(v) = &self.proprietary_ef_info {
                v.write(w);
            }
            if let Some(v) = &self.link_path {
                w.tlv(private(7), v);
            }
        });
    }

    /// The file size, if `efFileSize` is present and fits.
    pub fn file_size(&self) -> Option<usize> {
        let bytes = self.ef_file_size.as_deref()?;
        if bytes.is_empty() || bytes.len() > 4 {
            return None;
        }
        Some(
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
        )
    }

    /// `efFileSize` for `size` octets, on the fewest octets.
    pub fn encode_file_size(size: usize) -> Vec<u8> {
        let bytes = (size as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
        bytes.get(skip..).unwrap_or(&[0]).to_vec()
    }
}

/// One element of a `File`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileElement {
    /// `doNotCreate [0] NULL`: the file of a "created by default" template
    /// is not created.
    DoNotCreate,
    /// `fileDescriptor [1] Fcp` (boxed: it is much larger than the rest).
    Fcp(Box<Fcp>),
    /// `fillFileOffset [2] UInt16`: skip this many octets (or records).
    FillFileOffset(u16),
    /// `fillFileContent [3] OCTET STRING`: the next octets of the file.
    FillFileContent(Vec<u8>),
}

/// `File ::= SEQUENCE OF CHOICE {...}`: what a PE says about one file.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct File(pub Vec<FileElement>);

impl File {
    /// A file given only by its contents (the template defines the rest).
    pub fn with_content(content: Vec<u8>) -> File {
        File(vec![FileElement::FillFileContent(content)])
    }

    /// The Fcp, if the file has one.
    pub fn fcp(&self) -> Option<&Fcp> {
        self.0.iter().find_map(|e| match e {
            FileElement::Fcp(f) => Some(f.as_ref()),
            _ => None,
        })
    }

    /// The contents written by the fill elements, offsets filled with
    /// `pad` (what a freshly created file holds, usually `FF`).
    pub fn content(&self, pad: u8) -> Vec<u8> {
        let mut out = Vec::new();
        for e in &self.0 {
            match e {
                FileElement::FillFileOffset(n) => {
                    out.extend(std::iter::repeat_n(pad, usize::from(*n)))
                }
                FileElement::FillFileContent(c) => out.extend_from_slice(c),
                FileElement::DoNotCreate | FileElement::Fcp(_) => {}
            }
        }
        out
    }

    fn from_tlv(tlv: &Tlv<'_>, ctx: &'static str) -> Result<File, Asn1Error> {
        let mut r = tlv.children(ctx)?;
        let mut out = Vec::new();
        while let Some(t) = r.next_tlv()? {
            let e = match t.tag() {
                tag if tag == prim(0) => {
                    null(&t, ctx)?;
                    FileElement::DoNotCreate
                }
                tag if tag == cons(1) => FileElement::Fcp(Box::new(Fcp::from_contents(&t)?)),
                tag if tag == prim(2) => FileElement::FillFileOffset(uint16(&t, u16::MAX, ctx)?),
                tag if tag == prim(3) => FileElement::FillFileContent(octets(&t, ctx)?),
                found => {
                    return Err(Asn1Error::UnexpectedElement {
                        context: ctx,
                        found,
                    })
                }
            };
            out.push(e);
        }
        Ok(File(out))
    }

    fn write_as(&self, tag: Tag, w: &mut Writer) {
        w.constructed(tag, |w| {
            for e in &self.0 {
                match e {
                    FileElement::DoNotCreate => w.tlv(prim(0), &[]),
                    FileElement::Fcp(f) => f.write_as(cons(1), w),
                    FileElement::FillFileOffset(n) => write_uint(w, prim(2), u32::from(*n)),
                    FileElement::FillFileContent(c) => w.tlv(prim(3), c),
                }
            }
        });
    }
}

/// The template-based file-system PEs: their CHOICE tag, ASN.1 type and
/// `File` components.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FsKind {
    /// `mf [16] PE-MF`.
    Mf,
    /// `cd [17] PE-CD`.
    Cd,
    /// `telecom [18] PE-TELECOM`.
    Telecom,
    /// `usim [19] PE-USIM`.
    Usim,
    /// `opt-usim [20] PE-OPT-USIM`.
    OptUsim,
    /// `isim [21] PE-ISIM`.
    Isim,
    /// `opt-isim [22] PE-OPT-ISIM`.
    OptIsim,
    /// `phonebook [23] PE-PHONEBOOK`.
    Phonebook,
    /// `gsm-access [24] PE-GSM-ACCESS`.
    GsmAccess,
    /// `csim [25] PE-CSIM`.
    Csim,
    /// `opt-csim [26] PE-OPT-CSIM`.
    OptCsim,
    /// `eap [27] PE-EAP`.
    Eap,
    /// `df-5gs [28] PE-DF-5GS`.
    Df5gs,
    /// `df-saip [29] PE-DF-SAIP`.
    DfSaip,
    /// `df-snpn [30] PE-DF-SNPN`.
    DfSnpn,
    /// `df-5gprose [31] PE-DF-5GPROSE`.
    Df5gProse,
    /// `iot [32] PE-IoT`.
    Iot,
    /// `opt-iot [33] PE-OPT-IoT`.
    OptIot,
}

impl FsKind {
    /// Every kind, in tag order.
    pub const ALL: [FsKind; 18] = [
        FsKind::Mf,
        FsKind::Cd,
        FsKind::Telecom,
        FsKind::Usim,
        FsKind::OptUsim,
        FsKind::Isim,
        FsKind::OptIsim,
        FsKind::Phonebook,
        FsKind::GsmAccess,
        FsKind::Csim,
        FsKind::OptCsim,
        FsKind::Eap,
        FsKind::Df5gs,
        FsKind::DfSaip,
        FsKind::DfSnpn,
        FsKind::Df5gProse,
        FsKind::Iot,
        FsKind::OptIot,
    ];

    /// The kind a `ProfileElement` tag number selects.
    pub fn from_tag_number(n: u32) -> Option<FsKind> {
        let i = n.checked_sub(16)?;
        FsKind::ALL.get(usize::try_from(i).ok()?).copied()
    }

    /// The kind of a CHOICE alternative name (`usim`, `opt-isim`, ...).
    pub fn from_name(name: &str) -> Option<FsKind> {
        FsKind::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// The CHOICE tag number.
    pub fn tag_number(self) -> u32 {
        // The position in ALL; the table is in tag order from 16.
        16 + FsKind::ALL.iter().position(|k| *k == self).unwrap_or(0) as u32
    }

    /// The CHOICE tag.
    pub fn tag(self) -> Tag {
        cons(self.tag_number())
    }

    /// The CHOICE alternative name.
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Mf => "mf",
            FsKind::Cd => "cd",
            FsKind::Telecom => "telecom",
            FsKind::Usim => "usim",
            FsKind::OptUsim => "opt-usim",
            FsKind::Isim => "isim",
            FsKind::OptIsim => "opt-isim",
            FsKind::Phonebook => "phonebook",
            FsKind::GsmAccess => "gsm-access",
            FsKind::Csim => "csim",
            FsKind::OptCsim => "opt-csim",
            FsKind::Eap => "eap",
            FsKind::Df5gs => "df-5gs",
            FsKind::DfSaip => "df-saip",
            FsKind::DfSnpn => "df-snpn",
            FsKind::Df5gProse => "df-5gprose",
            FsKind::Iot => "iot",
            FsKind::OptIot => "opt-iot",
        }
    }

    /// The ASN.1 type name, e.g. `PE-USIM`.
    pub fn type_name(self) -> &'static str {
        match self {
            FsKind::Mf => "PE-MF",
            FsKind::Cd => "PE-CD",
            FsKind::Telecom => "PE-TELECOM",
            FsKind::Usim => "PE-USIM",
            FsKind::OptUsim => "PE-OPT-USIM",
            FsKind::Isim => "PE-ISIM",
            FsKind::OptIsim => "PE-OPT-ISIM",
            FsKind::Phonebook => "PE-PHONEBOOK",
            FsKind::GsmAccess => "PE-GSM-ACCESS",
            FsKind::Csim => "PE-CSIM",
            FsKind::OptCsim => "PE-OPT-CSIM",
            FsKind::Eap => "PE-EAP",
            FsKind::Df5gs => "PE-DF-5GS",
            FsKind::DfSaip => "PE-DF-SAIP",
            FsKind::DfSnpn => "PE-DF-SNPN",
            FsKind::Df5gProse => "PE-DF-5GPROSE",
            FsKind::Iot => "PE-IoT",
            FsKind::OptIot => "PE-OPT-IoT",
        }
    }

    /// The `File` components, from `[2]` on.
    pub fn slots(self) -> &'static [FileSlot] {
        match self {
            FsKind::Mf => schema::MF,
            FsKind::Cd => schema::CD,
            FsKind::Telecom => schema::TELECOM,
            FsKind::Usim => schema::USIM,
            FsKind::OptUsim => schema::OPT_USIM,
            FsKind::Isim => schema::ISIM,
            FsKind::OptIsim => schema::OPT_ISIM,
            FsKind::Phonebook => schema::PHONEBOOK,
            FsKind::GsmAccess => schema::GSM_ACCESS,
            FsKind::Csim => schema::CSIM,
            FsKind::OptCsim => schema::OPT_CSIM,
            FsKind::Eap => schema::EAP,
            FsKind::Df5gs => schema::DF_5GS,
            FsKind::DfSaip => schema::DF_SAIP,
            FsKind::DfSnpn => schema::DF_SNPN,
            FsKind::Df5gProse => schema::DF_5GPROSE,
            FsKind::Iot => schema::IOT,
            FsKind::OptIot => schema::OPT_IOT,
        }
    }

    /// The component index of a file name.
    fn slot_of(self, name: &str) -> Option<usize> {
        self.slots().iter().position(|s| s.name == name)
    }
}

/// A template-based file-system PE (`PE-MF`, `PE-TELECOM`, `PE-USIM`,
/// `PE-ISIM`, ...): `SEQUENCE { header PEHeader, templateID OBJECT
/// IDENTIFIER, <file> File, ... }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSystemPe {
    kind: FsKind,
    /// The PE header (`mf-header`, `usim-header`, ...).
    pub header: PeHeader,
    /// `templateID [1]`: the file structure template (SAIP Annex A), e.g.
    /// `2.23.143.1.2.4` for ADF USIM.
    pub template_id: Oid,
    /// The files present, by component index into [`FsKind::slots`].
    files: BTreeMap<usize, File>,
    /// Extension additions after the last component, as received.
    pub extensions: Vec<Vec<u8>>,
}

impl FileSystemPe {
    /// An empty PE of a kind (add the mandatory files before encoding).
    pub fn new(kind: FsKind, header: PeHeader, template_id: Oid) -> FileSystemPe {
        FileSystemPe {
            kind,
            header,
            template_id,
            files: BTreeMap::new(),
            extensions: Vec::new(),
        }
    }

    /// The kind.
    pub fn kind(&self) -> FsKind {
        self.kind
    }

    /// A file by its ASN.1 component name (`ef-imsi`).
    pub fn file(&self, name: &str) -> Option<&File> {
        self.files.get(&self.kind.slot_of(name)?)
    }

    /// Sets a file; the name must be a component of this kind.
    pub fn set_file(&mut self, name: &str, file: File) -> Result<(), SaipError> {
        let slot = self
            .kind
            .slot_of(name)
            .ok_or_else(|| SaipError::NoSuchFile {
                pe: self.kind.type_name(),
                file: name.to_owned(),
            })?;
        self.files.insert(slot, file);
        Ok(())
    }

    /// Removes a file.
    pub fn remove_file(&mut self, name: &str) -> Option<File> {
        self.files.remove(&self.kind.slot_of(name)?)
    }

    /// The files present, in ASN.1 order, with their names.
    pub fn files(&self) -> impl Iterator<Item = (&'static str, &File)> {
        let slots = self.kind.slots();
        self.files
            .iter()
            .filter_map(move |(i, f)| slots.get(*i).map(|s| (s.name, f)))
    }

    /// The mandatory files that are missing (empty for a valid PE).
    pub fn missing_mandatory(&self) -> Vec<&'static str> {
        self.kind
            .slots()
            .iter()
            .enumerate()
            .filter(|(i, s)| s.mandatory && !self.files.contains_key(i))
            .map(|(_, s)| s.name)
            .collect()
    }
}

impl DerCodec for FileSystemPe {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<FileSystemPe, Asn1Error> {
        let kind = FsKind::from_tag_number(tlv.tag().number())
            .filter(|k| k.tag() == tlv.tag())
            .ok_or(Asn1Error::invalid("FileSystemPe", "not a file-system PE"))?;
        let ctx = kind.type_name();
        let mut r = tlv.children(ctx)?;
        let header = PeHeader::from_tlv(&r.expect(cons(0))?)?;
        let template_id = r.expect(prim(1))?.oid(ctx)?;
        let slots = kind.slots();
        let mut files = BTreeMap::new();
        let mut next = 0usize;
        while let Some(tag) = r.peek_tag()? {
            let Some(index) = usize::try_from(tag.number())
                .ok()
                .and_then(|n| n.checked_sub(2))
                .filter(|i| *i >= next && *i < slots.len() && tag == cons(tag.number()))
            else {
                break;
            };
            let path = slots.get(index).map_or(ctx, |s| s.path);
            if let Some(t) = r.next_tlv()? {
                files.insert(index, File::from_tlv(&t, path)?);
            }
            next = index + 1;
        }
        if let Some((i, slot)) = slots
            .iter()
            .enumerate()
            .find(|(i, s)| s.mandatory && !files.contains_key(i))
        {
            return Err(Asn1Error::MissingElement {
                context: slot.path,
                expected: cons(i as u32 + 2),
            });
        }
        let last = slots.len() as u32 + 1;
        let extensions = extensions(&mut r, last, ctx)?;
        Ok(FileSystemPe {
            kind,
            header,
            template_id,
            files,
            extensions,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(self.kind.tag(), |w| {
            self.header.write(w);
            w.oid(prim(1), &self.template_id);
            for (i, f) in &self.files {
                f.write_as(cons(*i as u32 + 2), w);
            }
            for e in &self.extensions {
                w.raw(e);
            }
        });
    }
}

/// One command of a `FileManagement` sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileManagementCmd {
    /// `filePath [0] OCTET STRING (SIZE (0..8))`: select the DF (path from
    /// the MF; an ADF by its temporary file ID).
    FilePath(Vec<u8>),
    /// `createFCP [APPLICATION 2] Fcp` (tag `62`): create a file (boxed:
    /// it is much larger than the rest).
    CreateFcp(Box<Fcp>),
    /// `fillFileOffset UInt16` (universal INTEGER: the CHOICE has tagged
    /// alternatives, so it is not automatically tagged).
    FillFileOffset(u16),
    /// `fillFileContent [1] OCTET STRING`.
    FillFileContent(Vec<u8>),
}

/// `PE-GenericFileManagement` (`genericFileManagement [1]`, tag `A1`):
/// file system changes outside the templates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenericFileManagement {
    /// `gfm-header`.
    pub header: PeHeader,
    /// `fileManagementCMD`: at least one sequence of at least one command.
    pub commands: Vec<Vec<FileManagementCmd>>,
    /// Extension additions, as received.
    pub extensions: Vec<Vec<u8>>,
}

impl GenericFileManagement {
    /// The tag: `genericFileManagement [1]`.
    pub const TAG: Tag = Tag::context(1, true);
}

impl DerCodec for GenericFileManagement {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<GenericFileManagement, Asn1Error> {
        const CTX: &str = "PE-GenericFileManagement";
        const CREATE_FCP: Tag = Tag::application(2, true);
        tlv.expect_tag(GenericFileManagement::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let header = PeHeader::from_tlv(&r.expect(cons(0))?)?;
        let mut list = r.expect(cons(1))?.children(CTX)?;
        let mut commands = Vec::new();
        while let Some(seq) = list.next_tlv()? {
            seq.expect_tag(Tag::SEQUENCE, CTX)?;
            let mut cr = seq.children(CTX)?;
            let mut cmds = Vec::new();
            while let Some(t) = cr.next_tlv()? {
                cmds.push(match t.tag() {
                    tag if tag == prim(0) => FileManagementCmd::FilePath(sized(&t, 0, 8, CTX)?),
                    CREATE_FCP => FileManagementCmd::CreateFcp(Box::new(Fcp::from_contents(&t)?)),
                    Tag::INTEGER => FileManagementCmd::FillFileOffset(uint16(&t, u16::MAX, CTX)?),
                    tag if tag == prim(1) => FileManagementCmd::FillFileContent(octets(&t, CTX)?),
                    found => {
                        return Err(Asn1Error::UnexpectedElement {
                            context: CTX,
                            found,
                        })
                    }
                });
            }
            if cmds.is_empty() {
                return Err(Asn1Error::invalid(CTX, "empty FileManagement"));
            }
            commands.push(cmds);
        }
        if commands.is_empty() {
            return Err(Asn1Error::invalid(CTX, "empty fileManagementCMD"));
        }
        let extensions = extensions(&mut r, 1, CTX)?;
        Ok(GenericFileManagement {
            header,
            commands,
            extensions,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(GenericFileManagement::TAG, |w| {
            self.header.write(w);
            w.constructed(cons(1), |w| {
                for cmds in &self.commands {
                    w.constructed(Tag::SEQUENCE, |w| {
                        for c in cmds {
                            match c {
                                FileManagementCmd::FilePath(p) => w.tlv(prim(0), p),
                                FileManagementCmd::CreateFcp(f) => {
                                    f.write_as(Tag::application(2, true), w)
                                }
                                FileManagementCmd::FillFileOffset(n) => {
                                    write_uint(w, Tag::INTEGER, u32::from(*n))
                                }
                                FileManagementCmd::FillFileContent(c) => w.tlv(prim(1), c),
                            }
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
    use crate::asn1::der::parse_one;

    #[test]
    fn kinds_and_tags() {
        assert_eq!(FsKind::Mf.tag(), Tag::new(0xB0));
        assert_eq!(FsKind::Usim.tag(), Tag::new(0xB3));
        assert_eq!(FsKind::Isim.tag(), Tag::new(0xB5));
        assert_eq!(FsKind::Df5gProse.tag(), Tag::new(0xBF1F));
        assert_eq!(FsKind::OptIot.tag(), Tag::new(0xBF21));
        for k in FsKind::ALL {
            assert_eq!(FsKind::from_tag_number(k.tag_number()), Some(k));
            assert_eq!(FsKind::from_name(k.name()), Some(k));
        }
        assert_eq!(FsKind::from_tag_number(15), None);
        assert_eq!(FsKind::from_tag_number(34), None);
        assert_eq!(FsKind::Usim.slots()[1].name, "ef-imsi");
        assert_eq!(FsKind::OptUsim.slots().len(), 86);
    }

    #[test]
    fn usim_needs_its_mandatory_files() {
        let mut pe = FileSystemPe::new(
            FsKind::Usim,
            PeHeader::new(5, true),
            "2.23.143.1.2.4".parse().unwrap(),
        );
        assert!(pe.missing_mandatory().contains(&"ef-imsi"));
        for name in [
            "adf-usim", "ef-imsi", "ef-arr", "ef-ust", "ef-spn", "ef-est", "ef-acc",
        ] {
            pe.set_file(name, File::with_content(vec![1])).unwrap();
        }
        assert_eq!(pe.missing_mandatory(), vec!["ef-ecc"]);
        let der = pe.to_der();
        let err = FileSystemPe::from_der(&der).unwrap_err();
        assert_eq!(
            err,
            Asn1Error::MissingElement {
                context: "PE-USIM.ef-ecc",
                expected: Tag::context(22, true)
            }
        );
        pe.set_file("ef-ecc", File::default()).unwrap();
        let der = pe.to_der();
        assert_eq!(FileSystemPe::from_der(&der).unwrap(), pe);
        assert!(pe.set_file("ef-impi", File::default()).is_err());
    }

    #[test]
    fn fcp_round_trip_and_sizes() {
        let fcp = Fcp {
            file_descriptor: Some(vec![0x42, 0x21, 0x00, 0x20]),
            file_id: Some([0x2F, 0x06]),
            lcsi: Some(5),
            ef_file_size: Some(Fcp::encode_file_size(0x1C0)),
            proprietary_ef_info: Some(ProprietaryInfo {
                special_file_information: Some(0x40),
                fill_pattern: Some(vec![0xFF]),
                ..ProprietaryInfo::default()
            }),
            ..Fcp::default()
        };
        assert_eq!(fcp.file_size(), Some(0x1C0));
        let mut w = Writer::new();
        fcp.write_as(cons(1), &mut w);
        let der = w.into_bytes();
        let tlv = parse_one(&der, "t").unwrap();
        assert_eq!(Fcp::from_contents(&tlv).unwrap(), fcp);
        assert_eq!(Fcp::encode_file_size(0), vec![0]);
        assert_eq!(Fcp::encode_file_size(0x80), vec![0x80]);
        assert_eq!(Fcp::encode_file_size(0x100), vec![1, 0]);
    }

    #[test]
    fn file_content_with_offsets() {
        let f = File(vec![
            FileElement::FillFileContent(vec![1, 2]),
            FileElement::FillFileOffset(2),
            FileElement::FillFileContent(vec![3]),
        ]);
        assert_eq!(f.content(0xFF), vec![1, 2, 0xFF, 0xFF, 3]);
    }
}
