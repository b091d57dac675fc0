//! A small, strict DER TLV layer (ITU-T X.690 §8 with the DER restrictions
//! of §10 and §11).
//!
//! What "strict" means here, and why:
//! - tags: low-tag form for numbers 0..=30, high-tag form only for >= 31 and
//!   without a leading `80` octet (X.690 §8.1.2), at most 4 identifier octets
//!   (SGP.22 uses at most 2, e.g. `BF20`, `5F37`);
//! - lengths: definite and minimal only (X.690 §10.1); the indefinite form,
//!   long forms that could be shorter, and lengths that run past the end of
//!   the enclosing value are errors;
//! - a [`Reader`] walks the children of a constructed value and
//!   [`Reader::finish`] refuses anything left over, so a decode consumes all
//!   of its input or fails;
//! - primitive values are checked the DER way (minimal INTEGERs, BOOLEAN only
//!   `00`/`FF`, BIT STRING unused bits zero, well-formed OIDs, valid UTF-8).
//!
//! Because every accepted encoding is the canonical one, a decoded value
//! re-encodes to exactly the bytes it came from. The RSP types rely on that
//! (and the property tests check it), but wherever a signature covers a value
//! the received bytes are kept anyway ([`Signed`]): SGP.22 §2.6.7.2 signs the
//! DER the signer produced, and we never re-encode before verifying.
//!
//! The [`Writer`] emits canonical DER: minimal lengths, children in the order
//! the caller writes them (the order of the ASN.1 SEQUENCE).

use std::fmt;
use std::str::FromStr;

use super::Asn1Error;

/// An identifier (tag), kept as its identifier octets read big-endian, the
/// way SGP.22 writes tags: `0x30`, `0x80`, `0xBF20`, `0x5F37`.
///
/// Values come from [`Tag::new`] (for constants written as in the spec) or
/// from parsing, which only accepts DER identifier octets.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(u32);

/// The class of a tag (X.690 §8.1.2.2, Table 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Universal (`00xxxxxx`).
    Universal,
    /// Application (`01xxxxxx`), e.g. `5F37` = `[APPLICATION 55]`.
    Application,
    /// Context-specific (`10xxxxxx`), e.g. `80` = `[0]`.
    Context,
    /// Private (`11xxxxxx`).
    Private,
}

impl Tag {
    /// BOOLEAN.
    pub const BOOLEAN: Tag = Tag(0x01);
    /// INTEGER.
    pub const INTEGER: Tag = Tag(0x02);
    /// BIT STRING.
    pub const BIT_STRING: Tag = Tag(0x03);
    /// OCTET STRING.
    pub const OCTET_STRING: Tag = Tag(0x04);
    /// OBJECT IDENTIFIER.
    pub const OID: Tag = Tag(0x06);
    /// ENUMERATED.
    pub const ENUMERATED: Tag = Tag(0x0A);
    /// UTF8String.
    pub const UTF8_STRING: Tag = Tag(0x0C);
    /// SEQUENCE / SEQUENCE OF (constructed).
    pub const SEQUENCE: Tag = Tag(0x30);

    /// A tag written as its identifier octets, e.g. `Tag::new(0xBF20)`.
    /// Meant for constants taken from the spec; [`Tag::is_valid`] says
    /// whether the octets are a DER identifier.
    pub const fn new(octets: u32) -> Tag {
        Tag(octets)
    }

    /// The identifier octets read big-endian.
    pub const fn value(self) -> u32 {
        self.0
    }

    /// A context-specific tag `[n]`, primitive or constructed.
    pub const fn context(number: u32, constructed: bool) -> Tag {
        Tag::build(0x80, number, constructed)
    }

    /// An application tag `[APPLICATION n]`, primitive or constructed.
    pub const fn application(number: u32, constructed: bool) -> Tag {
        Tag::build(0x40, number, constructed)
    }

    const fn build(class_bits: u8, number: u32, constructed: bool) -> Tag {
        let first = class_bits | if constructed { 0x20 } else { 0 };
        if number <= 30 {
            Tag((first as u32) | number)
        } else if number < 0x80 {
            Tag((((first | 0x1F) as u32) << 8) | number)
        } else if number < 0x4000 {
            Tag((((first | 0x1F) as u32) << 16) | ((0x80 | (number >> 7)) << 8) | (number & 0x7F))
        } else {
            Tag((((first | 0x1F) as u32) << 24)
                | ((0x80 | ((number >> 14) & 0x7F)) << 16)
                | ((0x80 | ((number >> 7) & 0x7F)) << 8)
                | (number & 0x7F))
        }
    }

    /// The identifier octets, most significant first.
    fn octets(self) -> ([u8; 4], usize) {
        let bytes = self.0.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count().min(3);
        let mut out = [0u8; 4];
        let len = 4 - skip;
        for (dst, src) in out.iter_mut().zip(bytes.iter().skip(skip)) {
            *dst = *src;
        }
        (out, len)
    }

    fn first_octet(self) -> u8 {
        self.octets().0[0]
    }

    /// Whether the encoding is constructed (bit 6 of the first octet).
    pub fn is_constructed(self) -> bool {
        self.first_octet() & 0x20 != 0
    }

    /// The tag class.
    pub fn class(self) -> Class {
        match self.first_octet() >> 6 {
            0 => Class::Universal,
            1 => Class::Application,
            2 => Class::Context,
            _ => Class::Private,
        }
    }

    /// The tag number.
    pub fn number(self) -> u32 {
        let (octets, len) = self.octets();
        if len == 1 {
            return u32::from(octets[0] & 0x1F);
        }
        octets
            .iter()
            .take(len)
            .skip(1)
            .fold(0u32, |acc, b| (acc << 7) | u32::from(b & 0x7F))
    }

    /// Whether these identifier octets are what DER would produce.
    pub fn is_valid(self) -> bool {
        let (octets, len) = self.octets();
        matches!(parse_tag(octets.get(..len).unwrap_or(&[])), Ok((t, n)) if t == self && n == len)
    }

    /// Appends the identifier octets.
    pub fn write(self, out: &mut Vec<u8>) {
        let (octets, len) = self.octets();
        out.extend_from_slice(octets.get(..len).unwrap_or(&[]));
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({self})")
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (octets, len) = self.octets();
        for b in octets.iter().take(len) {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

/// Parses identifier octets at the start of `input` (X.690 §8.1.2).
/// Returns the tag and the number of octets it took.
fn parse_tag(input: &[u8]) -> Result<(Tag, usize), Asn1Error> {
    let first = *input.first().ok_or(Asn1Error::Truncated)?;
    if first == 0 {
        // Universal 0 is reserved for end-of-contents (BER indefinite form).
        return Err(Asn1Error::InvalidTag);
    }
    if first & 0x1F != 0x1F {
        return Ok((Tag(u32::from(first)), 1));
    }
    let mut value = u32::from(first);
    let mut number: u32 = 0;
    for (i, b) in input.iter().enumerate().skip(1) {
        if i == 1 && *b == 0x80 {
            // §8.1.2.4.2 c): the first subsequent octet shall not be 0x80.
            return Err(Asn1Error::InvalidTag);
        }
        if i > 3 {
            return Err(Asn1Error::TagTooLong);
        }
        value = (value << 8) | u32::from(*b);
        number = (number << 7) | u32::from(b & 0x7F);
        if b & 0x80 == 0 {
            if number < 31 {
                // §8.1.2.2: numbers up to 30 take the one-octet form.
                return Err(Asn1Error::InvalidTag);
            }
            return Ok((Tag(value), i + 1));
        }
    }
    Err(Asn1Error::Truncated)
}

/// Parses length octets at the start of `input` (X.690 §8.1.3, DER §10.1).
/// Returns the length and the number of octets it took.
fn parse_length(input: &[u8]) -> Result<(usize, usize), Asn1Error> {
    let first = *input.first().ok_or(Asn1Error::Truncated)?;
    if first < 0x80 {
        return Ok((usize::from(first), 1));
    }
    if first == 0x80 {
        return Err(Asn1Error::IndefiniteLength);
    }
    let count = usize::from(first & 0x7F);
    if count > 4 {
        // 0xFF is reserved; more than 4 octets cannot describe input we take.
        return Err(Asn1Error::LengthTooLarge);
    }
    let octets = input.get(1..1 + count).ok_or(Asn1Error::Truncated)?;
    if octets.first() == Some(&0) {
        return Err(Asn1Error::NonMinimalLength);
    }
    let len = octets
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    if len < 0x80 {
        return Err(Asn1Error::NonMinimalLength);
    }
    let len = usize::try_from(len).map_err(|_| Asn1Error::LengthTooLarge)?;
    Ok((len, 1 + count))
}

/// Appends DER length octets.
pub fn write_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        // `len < 0x80` fits a byte.
        out.push(len as u8);
        return;
    }
    let bytes = (len as u64).to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let significant = bytes.get(skip..).unwrap_or(&[]);
    out.push(0x80 | significant.len() as u8);
    out.extend_from_slice(significant);
}

/// One TLV borrowed from the input: its tag, its value octets, and all of
/// its octets (tag and length included) as they were received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    tag: Tag,
    value: &'a [u8],
    raw: &'a [u8],
}

/// Reads the TLV at the start of `input`; returns it and what follows.
fn read_tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), Asn1Error> {
    let (tag, tag_len) = parse_tag(input)?;
    let after_tag = input.get(tag_len..).ok_or(Asn1Error::Truncated)?;
    let (len, len_len) = parse_length(after_tag)?;
    let header = tag_len + len_len;
    let available = input.len().saturating_sub(header);
    if len > available {
        return Err(Asn1Error::LengthPastEnd {
            length: len,
            available,
        });
    }
    let (raw, rest) = input
        .split_at_checked(header + len)
        .ok_or(Asn1Error::Truncated)?;
    let value = raw.get(header..).ok_or(Asn1Error::Truncated)?;
    Ok((Tlv { tag, value, raw }, rest))
}

/// Parses `input` as exactly one TLV: anything after it is an error.
pub fn parse_one<'a>(input: &'a [u8], context: &'static str) -> Result<Tlv<'a>, Asn1Error> {
    let (tlv, rest) = read_tlv(input)?;
    if !rest.is_empty() {
        return Err(Asn1Error::TrailingBytes {
            context,
            count: rest.len(),
        });
    }
    Ok(tlv)
}

impl<'a> Tlv<'a> {
    /// The tag.
    pub fn tag(&self) -> Tag {
        self.tag
    }

    /// The value (contents) octets.
    pub fn value(&self) -> &'a [u8] {
        self.value
    }

    /// The whole TLV as received, tag and length included.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Fails unless the tag is `expected`.
    pub fn expect_tag(&self, expected: Tag, context: &'static str) -> Result<(), Asn1Error> {
        if self.tag == expected {
            Ok(())
        } else {
            Err(Asn1Error::UnexpectedTag {
                context,
                expected,
                found: self.tag,
            })
        }
    }

    /// A reader over the children of a constructed value.
    pub fn children(&self, context: &'static str) -> Result<Reader<'a>, Asn1Error> {
        if !self.tag.is_constructed() {
            return Err(Asn1Error::invalid(
                context,
                "expected a constructed encoding",
            ));
        }
        Ok(Reader::new(self.value, context))
    }

    /// The value octets of a primitive encoding (DER forbids the constructed
    /// form of strings, X.690 §10.2).
    pub fn primitive(&self, context: &'static str) -> Result<&'a [u8], Asn1Error> {
        if self.tag.is_constructed() {
            return Err(Asn1Error::invalid(context, "expected a primitive encoding"));
        }
        Ok(self.value)
    }

    /// An OCTET STRING (any tag, primitive).
    pub fn octet_string(&self, context: &'static str) -> Result<&'a [u8], Asn1Error> {
        self.primitive(context)
    }

    /// An OCTET STRING of exactly `N` octets, e.g. `Octet16`.
    pub fn octets<const N: usize>(&self, context: &'static str) -> Result<[u8; N], Asn1Error> {
        let v = self.primitive(context)?;
        v.try_into().map_err(|_| Asn1Error::WrongSize {
            context,
            expected: N,
            found: v.len(),
        })
    }

    /// An OCTET STRING whose size lies in `min..=max`.
    pub fn octets_sized(
        &self,
        min: usize,
        max: usize,
        context: &'static str,
    ) -> Result<&'a [u8], Asn1Error> {
        let v = self.primitive(context)?;
        if (min..=max).contains(&v.len()) {
            Ok(v)
        } else {
            Err(Asn1Error::invalid(
                context,
                "OCTET STRING size out of range",
            ))
        }
    }

    /// A UTF8String.
    pub fn utf8(&self, context: &'static str) -> Result<&'a str, Asn1Error> {
        std::str::from_utf8(self.primitive(context)?)
            .map_err(|_| Asn1Error::invalid(context, "invalid UTF-8"))
    }

    /// A BOOLEAN: DER allows only `00` and `FF` (X.690 §11.1).
    pub fn boolean(&self, context: &'static str) -> Result<bool, Asn1Error> {
        match self.primitive(context)? {
            [0x00] => Ok(false),
            [0xFF] => Ok(true),
            _ => Err(Asn1Error::invalid(context, "BOOLEAN must be 00 or FF")),
        }
    }

    /// An INTEGER (or ENUMERATED) that fits an `i64`, minimally encoded
    /// (X.690 §8.3.2).
    pub fn integer(&self, context: &'static str) -> Result<i64, Asn1Error> {
        decode_integer(self.primitive(context)?, context)
    }

    /// An OBJECT IDENTIFIER.
    pub fn oid(&self, context: &'static str) -> Result<Oid, Asn1Error> {
        Oid::from_content(self.primitive(context)?, context)
    }

    /// A BIT STRING.
    pub fn bit_string(&self, context: &'static str) -> Result<BitString, Asn1Error> {
        BitString::from_content(self.primitive(context)?, context)
    }

    /// A `VersionType` (OCTET STRING (SIZE(3))).
    pub fn version(&self, context: &'static str) -> Result<Version, Asn1Error> {
        Ok(Version(self.octets::<3>(context)?))
    }
}

/// Decodes INTEGER contents into an `i64`.
pub fn decode_integer(content: &[u8], context: &'static str) -> Result<i64, Asn1Error> {
    match content {
        [] => Err(Asn1Error::invalid(context, "empty INTEGER")),
        [0x00, next, ..] if next & 0x80 == 0 => {
            Err(Asn1Error::invalid(context, "INTEGER not minimally encoded"))
        }
        [0xFF, next, ..] if next & 0x80 != 0 => {
            Err(Asn1Error::invalid(context, "INTEGER not minimally encoded"))
        }
        _ if content.len() > 8 => Err(Asn1Error::invalid(context, "INTEGER out of range")),
        [first, ..] => {
            let init: i64 = if first & 0x80 != 0 { -1 } else { 0 };
            Ok(content
                .iter()
                .fold(init, |acc, b| (acc << 8) | i64::from(*b)))
        }
    }
}

/// Encodes an `i64` as minimal INTEGER contents.
pub fn encode_integer(value: i64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (Some(b), Some(next)) = (bytes.get(start), bytes.get(start + 1)) else {
            break;
        };
        let redundant = (*b == 0x00 && next & 0x80 == 0) || (*b == 0xFF && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    bytes.get(start..).unwrap_or(&[]).to_vec()
}

/// Walks the TLVs of a constructed value's contents, in order.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
    context: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `contents`; `context` names the ASN.1 type for errors.
    pub fn new(contents: &'a [u8], context: &'static str) -> Reader<'a> {
        Reader {
            rest: contents,
            context,
        }
    }

    /// Whether all children have been read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The tag of the next child, if any.
    pub fn peek_tag(&self) -> Result<Option<Tag>, Asn1Error> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        parse_tag(self.rest).map(|(t, _)| Some(t))
    }

    /// The next child, whatever its tag.
    pub fn next_tlv(&mut self) -> Result<Option<Tlv<'a>>, Asn1Error> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let (tlv, rest) = read_tlv(self.rest)?;
        self.rest = rest;
        Ok(Some(tlv))
    }

    /// The next child, which must be present and carry `tag`.
    pub fn expect(&mut self, tag: Tag) -> Result<Tlv<'a>, Asn1Error> {
        match self.peek_tag()? {
            None => Err(Asn1Error::MissingElement {
                context: self.context,
                expected: tag,
            }),
            Some(found) if found != tag => Err(Asn1Error::UnexpectedTag {
                context: self.context,
                expected: tag,
                found,
            }),
            Some(_) => self.next_tlv()?.ok_or(Asn1Error::MissingElement {
                context: self.context,
                expected: tag,
            }),
        }
    }

    /// The next child if it carries `tag` (an OPTIONAL component).
    pub fn optional(&mut self, tag: Tag) -> Result<Option<Tlv<'a>>, Asn1Error> {
        if self.peek_tag()? == Some(tag) {
            self.next_tlv()
        } else {
            Ok(None)
        }
    }

    /// All remaining children as received TLVs: the extension additions a
    /// newer eUICC may append to an extensible SEQUENCE (the RSP module is
    /// `EXTENSIBILITY IMPLIED`). Each must still be a well-formed TLV.
    pub fn extensions(&mut self) -> Result<Vec<Vec<u8>>, Asn1Error> {
        let mut out = Vec::new();
        while let Some(tlv) = self.next_tlv()? {
            out.push(tlv.raw().to_vec());
        }
        Ok(out)
    }

    /// Fails if any bytes are left: a decode consumes all of its input.
    pub fn finish(self) -> Result<(), Asn1Error> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            // Tell a malformed leftover apart from a well-formed extra element.
            match parse_tag(self.rest) {
                Ok((found, _)) => Err(Asn1Error::UnexpectedElement {
                    context: self.context,
                    found,
                }),
                Err(_) => Err(Asn1Error::TrailingBytes {
                    context: self.context,
                    count: self.rest.len(),
                }),
            }
        }
    }
}

/// Builds canonical DER.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// A TLV with the given value octets.
    pub fn tlv(&mut self, tag: Tag, value: &[u8]) {
        tag.write(&mut self.buf);
        write_length(value.len(), &mut self.buf);
        self.buf.extend_from_slice(value);
    }

    /// A constructed TLV whose children `f` writes.
    pub fn constructed(&mut self, tag: Tag, f: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::new();
        f(&mut inner);
        self.tlv(tag, &inner.buf);
    }

    /// Already encoded TLVs, copied as they are (received signed data,
    /// certificates, extensions).
    pub fn raw(&mut self, tlvs: &[u8]) {
        self.buf.extend_from_slice(tlvs);
    }

    /// A UTF8String (or any string type) under `tag`.
    pub fn utf8(&mut self, tag: Tag, s: &str) {
        self.tlv(tag, s.as_bytes());
    }

    /// A BOOLEAN under `tag` (`FF` for true, X.690 §11.1).
    pub fn boolean(&mut self, tag: Tag, b: bool) {
        self.tlv(tag, &[if b { 0xFF } else { 0x00 }]);
    }

    /// An INTEGER (or ENUMERATED) under `tag`.
    pub fn integer(&mut self, tag: Tag, v: i64) {
        self.tlv(tag, &encode_integer(v));
    }

    /// An OBJECT IDENTIFIER under `tag`.
    pub fn oid(&mut self, tag: Tag, oid: &Oid) {
        self.tlv(tag, oid.content());
    }

    /// A BIT STRING under `tag`.
    pub fn bit_string(&mut self, tag: Tag, bits: &BitString) {
        let mut content = Vec::with_capacity(bits.bytes.len() + 1);
        content.push(bits.unused);
        content.extend_from_slice(&bits.bytes);
        self.tlv(tag, &content);
    }

    /// A `VersionType` under `tag`.
    pub fn version(&mut self, tag: Tag, v: Version) {
        self.tlv(tag, &v.0);
    }
}

/// An OBJECT IDENTIFIER, kept as its (validated) contents octets.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Oid(Vec<u8>);

impl Oid {
    /// Validates OID contents (X.690 §8.19): non-empty, each subidentifier
    /// minimally encoded (no leading `80`) and terminated, fitting a `u64`.
    pub fn from_content(content: &[u8], context: &'static str) -> Result<Oid, Asn1Error> {
        if content.is_empty() {
            return Err(Asn1Error::invalid(context, "empty OBJECT IDENTIFIER"));
        }
        let mut at_start = true;
        let mut value = 0u64;
        for b in content {
            if at_start && *b == 0x80 {
                return Err(Asn1Error::invalid(context, "OID subidentifier not minimal"));
            }
            if value > u64::MAX >> 7 {
                return Err(Asn1Error::invalid(context, "OID arc too large"));
            }
            value = (value << 7) | u64::from(b & 0x7F);
            at_start = b & 0x80 == 0;
            if at_start {
                value = 0;
            }
        }
        if !at_start {
            return Err(Asn1Error::invalid(
                context,
                "OID ends inside a subidentifier",
            ));
        }
        Ok(Oid(content.to_vec()))
    }

    /// Builds an OID from its arcs, e.g. `[2, 999, 10]`.
    pub fn from_arcs(arcs: &[u64]) -> Result<Oid, Asn1Error> {
        const CTX: &str = "OBJECT IDENTIFIER";
        let (first, second, rest) = match arcs {
            [a, b, rest @ ..] => (*a, *b, rest),
            _ => return Err(Asn1Error::invalid(CTX, "an OID has at least two arcs")),
        };
        if first > 2 || (first < 2 && second >= 40) {
            return Err(Asn1Error::invalid(CTX, "invalid first arcs"));
        }
        let head = (first * 40)
            .checked_add(second)
            .ok_or(Asn1Error::invalid(CTX, "OID arc too large"))?;
        let mut content = Vec::new();
        for arc in std::iter::once(head).chain(rest.iter().copied()) {
            let mut groups = Vec::new();
            let mut v = arc;
            loop {
                groups.push((v & 0x7F) as u8);
                v >>= 7;
                if v == 0 {
                    break;
                }
            }
            let last = groups.len() - 1;
            for (i, g) in groups.iter().rev().enumerate() {
                content.push(if i == last { *g } else { g | 0x80 });
            }
        }
        Oid::from_content(&content, CTX)
    }

    /// The contents octets.
    pub fn content(&self) -> &[u8] {
        &self.0
    }

    /// The arcs, e.g. `[2, 999, 10]`.
    pub fn arcs(&self) -> Vec<u64> {
        let mut subids = Vec::new();
        let mut v = 0u64;
        for b in &self.0 {
            v = (v << 7) | u64::from(b & 0x7F);
            if b & 0x80 == 0 {
                subids.push(v);
                v = 0;
            }
        }
        let mut arcs = Vec::with_capacity(subids.len() + 1);
        let mut iter = subids.into_iter();
        if let Some(head) = iter.next() {
            let (a, b) = match head {
                0..=39 => (0, head),
                40..=79 => (1, head - 40),
                _ => (2, head - 80),
            };
            arcs.push(a);
            arcs.push(b);
        }
        arcs.extend(iter);
        arcs
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for arc in self.arcs() {
            if !first {
                f.write_str(".")?;
            }
            first = false;
            write!(f, "{arc}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid({self})")
    }
}

impl FromStr for Oid {
    type Err = Asn1Error;

    /// Parses dotted decimal, e.g. `2.999.10`.
    fn from_str(s: &str) -> Result<Oid, Asn1Error> {
        let arcs = s
            .split('.')
            .map(|a| {
                if a.is_empty() || !a.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Asn1Error::invalid(
                        "OBJECT IDENTIFIER",
                        "not dotted decimal",
                    ));
                }
                a.parse::<u64>()
                    .map_err(|_| Asn1Error::invalid("OBJECT IDENTIFIER", "OID arc too large"))
            })
            .collect::<Result<Vec<u64>, Asn1Error>>()?;
        Oid::from_arcs(&arcs)
    }
}

/// A BIT STRING: its octets and the number of unused bits in the last one.
///
/// Kept exactly as received. Bit `n` is the `n`-th bit from the most
/// significant bit of the first octet, which is how ASN.1 numbers the named
/// bits of `RspCapability`, `NotificationEvent` and the like.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct BitString {
    unused: u8,
    bytes: Vec<u8>,
}

impl BitString {
    /// Validates BIT STRING contents (X.690 §8.6, DER §11.2.1): an
    /// initial octet 0..=7, zero for an empty string, and unused bits zero.
    pub fn from_content(content: &[u8], context: &'static str) -> Result<BitString, Asn1Error> {
        let (unused, bytes) = content
            .split_first()
            .ok_or(Asn1Error::invalid(context, "empty BIT STRING contents"))?;
        BitString::from_parts(*unused, bytes).map_err(|reason| Asn1Error::invalid(context, reason))
    }

    fn from_parts(unused: u8, bytes: &[u8]) -> Result<BitString, &'static str> {
        if unused > 7 {
            return Err("BIT STRING unused-bit count above 7");
        }
        match bytes.last() {
            None if unused != 0 => Err("empty BIT STRING with unused bits"),
            Some(last) if last & ((1u8 << unused) - 1) != 0 => {
                Err("BIT STRING unused bits not zero")
            }
            _ => Ok(BitString {
                unused,
                bytes: bytes.to_vec(),
            }),
        }
    }

    /// A BIT STRING from octets and an unused-bit count.
    pub fn new(unused: u8, bytes: &[u8]) -> Result<BitString, Asn1Error> {
        BitString::from_parts(unused, bytes).map_err(|r| Asn1Error::invalid("BIT STRING", r))
    }

    /// The DER value of a named-bit list with the given bits set: trailing
    /// zero bits removed (X.690 §11.2.2).
    pub fn from_named_bits(bits: &[usize]) -> BitString {
        let Some(max) = bits.iter().copied().max() else {
            return BitString::default();
        };
        let mut bytes = vec![0u8; max / 8 + 1];
        for bit in bits {
            if let Some(b) = bytes.get_mut(bit / 8) {
                *b |= 0x80 >> (bit % 8);
            }
        }
        BitString {
            // `max % 8` is at most 7.
            unused: (7 - max % 8) as u8,
            bytes,
        }
    }

    /// Whether bit `n` is present and set.
    pub fn is_set(&self, n: usize) -> bool {
        n < self.bit_len()
            && self
                .bytes
                .get(n / 8)
                .is_some_and(|b| b & (0x80 >> (n % 8)) != 0)
    }

    /// The number of bits.
    pub fn bit_len(&self) -> usize {
        self.bytes.len() * 8 - usize::from(self.unused)
    }

    /// The numbers of the set bits, ascending.
    pub fn set_bits(&self) -> Vec<usize> {
        (0..self.bit_len()).filter(|n| self.is_set(*n)).collect()
    }

    /// The unused-bit count.
    pub fn unused_bits(&self) -> u8 {
        self.unused
    }

    /// The octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// `VersionType ::= OCTET STRING(SIZE(3))`: major, minor and revision as
/// binary, e.g. `02 02 00` for v2.2.0 (SGP.22 RSPDefinitions).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Version(pub [u8; 3]);

impl Version {
    /// A version from its three parts.
    pub const fn new(major: u8, minor: u8, revision: u8) -> Version {
        Version([major, minor, revision])
    }

    /// The major version.
    pub fn major(self) -> u8 {
        self.0[0]
    }

    /// The minor version.
    pub fn minor(self) -> u8 {
        self.0[1]
    }

    /// The revision.
    pub fn revision(self) -> u8 {
        self.0[2]
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0[0], self.0[1], self.0[2])
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({self})")
    }
}

/// A type with a DER codec: decoded from one TLV, written as one TLV.
pub trait DerCodec: Sized {
    /// Decodes the value from a TLV already split off the input. The tag is
    /// checked here: a type knows the tag(s) it may carry.
    fn from_tlv(tlv: &Tlv<'_>) -> Result<Self, Asn1Error>;

    /// Writes the value as one TLV.
    fn write(&self, w: &mut Writer);

    /// Decodes exactly one value from `input`; trailing bytes are an error.
    fn from_der(input: &[u8]) -> Result<Self, Asn1Error> {
        let tlv = parse_one(input, std::any::type_name::<Self>())?;
        Self::from_tlv(&tlv)
    }

    /// Encodes to DER.
    fn to_der(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.into_bytes()
    }
}

/// A value covered by a signature: the bytes exactly as received (tag and
/// length included), together with what they decode to.
///
/// SGP.22 §2.6.7.2 signs the DER the signer produced; verification must run
/// over those bytes, never over a re-encoding. Encoding a `Signed<T>` writes
/// the kept bytes unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed<T> {
    raw: Vec<u8>,
    value: T,
}

impl<T: DerCodec> Signed<T> {
    /// Wraps a value we produce: its bytes are its DER encoding.
    pub fn new(value: T) -> Signed<T> {
        Signed {
            raw: value.to_der(),
            value,
        }
    }

    /// Decodes a received TLV, keeping its bytes.
    pub fn from_tlv(tlv: &Tlv<'_>) -> Result<Signed<T>, Asn1Error> {
        Ok(Signed {
            value: T::from_tlv(tlv)?,
            raw: tlv.raw().to_vec(),
        })
    }

    /// Decodes exactly one received value, keeping its bytes.
    pub fn from_der(input: &[u8]) -> Result<Signed<T>, Asn1Error> {
        let tlv = parse_one(input, std::any::type_name::<T>())?;
        Signed::from_tlv(&tlv)
    }

    /// The signed bytes as received (what the signature covers).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The decoded value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The decoded value, dropping the bytes.
    pub fn into_value(self) -> T {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tlv(input: &[u8]) -> Result<Tlv<'_>, Asn1Error> {
        parse_one(input, "test")
    }

    #[test]
    fn tags_single_and_multi_byte() {
        let t = tlv(&[0xBF, 0x20, 0x00]).unwrap();
        assert_eq!(t.tag(), Tag::new(0xBF20));
        assert_eq!(t.tag().number(), 32);
        assert_eq!(t.tag().class(), Class::Context);
        assert!(t.tag().is_constructed());
        let t = tlv(&[0x5F, 0x37, 0x01, 0xAA]).unwrap();
        assert_eq!(t.tag(), Tag::new(0x5F37));
        assert_eq!(t.tag().class(), Class::Application);
        assert_eq!(t.tag().number(), 55);
        assert!(!t.tag().is_constructed());
        assert_eq!(t.value(), &[0xAA]);
        assert_eq!(Tag::context(32, true), Tag::new(0xBF20));
        assert_eq!(Tag::application(55, false), Tag::new(0x5F37));
        assert_eq!(Tag::application(73, false), Tag::new(0x5F49));
        assert_eq!(Tag::context(54, true), Tag::new(0xBF36));
        assert_eq!(Tag::context(0, false), Tag::new(0x80));
        assert_eq!(Tag::context(112, false), Tag::new(0x9F70));
        assert_eq!(Tag::context(200, false).to_string(), "9F8148");
        assert_eq!(Tag::context(200, false).number(), 200);
        assert_eq!(Tag::context(20000, true).number(), 20000);
        for t in [0x30, 0xBF20, 0x5F37, 0x9F8148, 0x80, 0x01] {
            assert!(Tag::new(t).is_valid(), "{t:X}");
        }
        for t in [0x1F, 0xBF1E, 0xBF8020, 0x00, 0xBF80] {
            assert!(!Tag::new(t).is_valid(), "{t:X}");
        }
    }

    #[test]
    fn rejects_bad_tags() {
        // High form for a number below 31.
        assert_eq!(tlv(&[0x9F, 0x1E, 0x00]), Err(Asn1Error::InvalidTag));
        // Leading 0x80 subsequent octet.
        assert_eq!(tlv(&[0x9F, 0x80, 0x20, 0x00]), Err(Asn1Error::InvalidTag));
        // End-of-contents.
        assert_eq!(tlv(&[0x00, 0x00]), Err(Asn1Error::InvalidTag));
        // Five identifier octets.
        assert_eq!(
            tlv(&[0x9F, 0x81, 0x81, 0x81, 0x01, 0x00]),
            Err(Asn1Error::TagTooLong)
        );
        // Unterminated.
        assert_eq!(tlv(&[0x9F, 0x81]), Err(Asn1Error::Truncated));
        assert_eq!(tlv(&[]), Err(Asn1Error::Truncated));
    }

    #[test]
    fn lengths() {
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(0u8, 0x80));
        assert_eq!(tlv(&long).unwrap().value().len(), 0x80);
        let mut two = vec![0x04, 0x82, 0x01, 0x00];
        two.extend(std::iter::repeat_n(0u8, 0x100));
        assert_eq!(tlv(&two).unwrap().value().len(), 0x100);
        // Indefinite.
        assert_eq!(
            tlv(&[0x30, 0x80, 0x00, 0x00]),
            Err(Asn1Error::IndefiniteLength)
        );
        // Long form for a short length.
        assert_eq!(
            tlv(&[0x04, 0x81, 0x01, 0xAA]),
            Err(Asn1Error::NonMinimalLength)
        );
        // Leading zero length octet.
        let mut lz = vec![0x04, 0x82, 0x00, 0x80];
        lz.extend(std::iter::repeat_n(0u8, 0x80));
        assert_eq!(tlv(&lz), Err(Asn1Error::NonMinimalLength));
        // Reserved / too many length octets.
        assert_eq!(tlv(&[0x04, 0xFF]), Err(Asn1Error::LengthTooLarge));
        assert_eq!(
            tlv(&[0x04, 0x85, 1, 0, 0, 0, 0]),
            Err(Asn1Error::LengthTooLarge)
        );
        // Past the end.
        assert_eq!(
            tlv(&[0x04, 0x03, 0xAA]),
            Err(Asn1Error::LengthPastEnd {
                length: 3,
                available: 1
            })
        );
        assert_eq!(
            tlv(&[0x04, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(Asn1Error::LengthPastEnd {
                length: 0xFFFF_FFFF,
                available: 0
            })
        );
        assert_eq!(tlv(&[0x04, 0x82, 0x01]), Err(Asn1Error::Truncated));
        // Trailing bytes.
        assert_eq!(
            tlv(&[0x04, 0x00, 0x00]),
            Err(Asn1Error::TrailingBytes {
                context: "test",
                count: 1
            })
        );
        let mut out = Vec::new();
        for len in [0usize, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000] {
            out.clear();
            write_length(len, &mut out);
            assert_eq!(parse_length(&out), Ok((len, out.len())));
        }
    }

    #[test]
    fn reader_walks_children_and_refuses_leftovers() {
        let input = [0x30, 0x06, 0x80, 0x01, 0x01, 0x81, 0x01, 0x02];
        let outer = tlv(&input).unwrap();
        let mut r = outer.children("SEQ").unwrap();
        assert_eq!(r.expect(Tag::new(0x80)).unwrap().value(), &[1]);
        assert!(r.optional(Tag::new(0x82)).unwrap().is_none());
        assert_eq!(
            r.clone().finish(),
            Err(Asn1Error::UnexpectedElement {
                context: "SEQ",
                found: Tag::new(0x81)
            })
        );
        assert_eq!(
            r.clone().expect(Tag::new(0x82)),
            Err(Asn1Error::UnexpectedTag {
                context: "SEQ",
                expected: Tag::new(0x82),
                found: Tag::new(0x81)
            })
        );
        r.expect(Tag::new(0x81)).unwrap();
        assert_eq!(
            r.clone().expect(Tag::new(0x82)),
            Err(Asn1Error::MissingElement {
                context: "SEQ",
                expected: Tag::new(0x82)
            })
        );
        r.finish().unwrap();
        // A child running past its parent.
        let bad = [0x30, 0x03, 0x80, 0x05, 0x01];
        let outer = tlv(&bad).unwrap();
        let mut r = outer.children("SEQ").unwrap();
        assert!(matches!(r.next_tlv(), Err(Asn1Error::LengthPastEnd { .. })));
        // Primitive has no children.
        assert!(tlv(&[0x04, 0x00]).unwrap().children("X").is_err());
    }

    #[test]
    fn integers() {
        for (v, enc) in [
            (0i64, vec![0x00]),
            (1, vec![0x01]),
            (127, vec![0x7F]),
            (128, vec![0x00, 0x80]),
            (256, vec![0x01, 0x00]),
            (-1, vec![0xFF]),
            (-128, vec![0x80]),
            (-129, vec![0xFF, 0x7F]),
            (
                i64::MAX,
                vec![0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            ),
            (i64::MIN, vec![0x80, 0, 0, 0, 0, 0, 0, 0]),
        ] {
            assert_eq!(encode_integer(v), enc, "{v}");
            assert_eq!(decode_integer(&enc, "i"), Ok(v));
        }
        assert!(decode_integer(&[], "i").is_err());
        assert!(decode_integer(&[0x00, 0x01], "i").is_err());
        assert!(decode_integer(&[0xFF, 0x80], "i").is_err());
        assert!(decode_integer(&[0x01, 0, 0, 0, 0, 0, 0, 0, 0], "i").is_err());
    }

    #[test]
    fn booleans_and_strings() {
        assert_eq!(tlv(&[0x01, 0x01, 0xFF]).unwrap().boolean("b"), Ok(true));
        assert_eq!(tlv(&[0x01, 0x01, 0x00]).unwrap().boolean("b"), Ok(false));
        assert!(tlv(&[0x01, 0x01, 0x01]).unwrap().boolean("b").is_err());
        assert!(tlv(&[0x01, 0x02, 0x00, 0x00])
            .unwrap()
            .boolean("b")
            .is_err());
        assert!(tlv(&[0x0C, 0x02, 0xC3, 0x28]).unwrap().utf8("s").is_err());
        assert_eq!(tlv(&[0x0C, 0x02, 0x68, 0x69]).unwrap().utf8("s"), Ok("hi"));
        // Constructed strings are BER, not DER.
        assert!(tlv(&[0x24, 0x03, 0x04, 0x01, 0xAA])
            .unwrap()
            .octet_string("o")
            .is_err());
        assert_eq!(
            tlv(&[0x04, 0x02, 1, 2]).unwrap().octets::<3>("v"),
            Err(Asn1Error::WrongSize {
                context: "v",
                expected: 3,
                found: 2
            })
        );
        assert_eq!(
            tlv(&[0x04, 0x03, 2, 2, 0]).unwrap().version("v"),
            Ok(Version::new(2, 2, 0))
        );
    }

    #[test]
    fn oids() {
        let oid: Oid = "2.999.10".parse().unwrap();
        assert_eq!(oid.content(), &[0x88, 0x37, 0x0A]);
        assert_eq!(oid.to_string(), "2.999.10");
        let ec: Oid = "1.2.840.10045.4.3.2".parse().unwrap();
        assert_eq!(
            ec.content(),
            &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02]
        );
        assert_eq!(ec.arcs(), vec![1, 2, 840, 10045, 4, 3, 2]);
        assert!(Oid::from_content(&[], "o").is_err());
        assert!(Oid::from_content(&[0x2A, 0x80, 0x01], "o").is_err());
        assert!(Oid::from_content(&[0x2A, 0x86], "o").is_err());
        assert!(Oid::from_content(&[0xFF; 10], "o").is_err());
        let max = Oid::from_arcs(&[1, 2, u64::MAX]).unwrap();
        assert_eq!(&max.content()[1..3], &[0x81, 0xFF]);
        assert_eq!(max.arcs(), vec![1, 2, u64::MAX]);
        let mut too_big = vec![0x2A, 0x82];
        too_big.extend_from_slice(&[0x80; 8]);
        too_big.push(0x00);
        assert!(Oid::from_content(&too_big, "o").is_err());
        assert!("1".parse::<Oid>().is_err());
        assert!("3.1".parse::<Oid>().is_err());
        assert!("1.40".parse::<Oid>().is_err());
        assert!("1..2".parse::<Oid>().is_err());
        assert!("1.2.x".parse::<Oid>().is_err());
    }

    #[test]
    fn bit_strings() {
        // NotificationEvent notificationInstall: 81 02 07 80.
        let b = BitString::from_named_bits(&[0]);
        assert_eq!((b.unused_bits(), b.as_bytes()), (7, &[0x80u8][..]));
        let b = BitString::from_named_bits(&[3]);
        assert_eq!((b.unused_bits(), b.as_bytes()), (4, &[0x10u8][..]));
        let b = BitString::from_named_bits(&[1, 2]);
        assert_eq!((b.unused_bits(), b.as_bytes()), (5, &[0x60u8][..]));
        assert_eq!(b.set_bits(), vec![1, 2]);
        let b = BitString::from_named_bits(&[]);
        assert_eq!((b.unused_bits(), b.as_bytes()), (0, &[][..]));
        assert!(BitString::from_content(&[], "b").is_err());
        assert!(BitString::from_content(&[8, 0], "b").is_err());
        assert!(BitString::from_content(&[1], "b").is_err());
        assert!(BitString::from_content(&[4, 0x11], "b").is_err());
        let b = BitString::from_content(&[6, 0x68, 0x04, 0xC0], "b").unwrap();
        assert_eq!(b.bit_len(), 18);
        assert!(b.is_set(1) && b.is_set(2) && b.is_set(4) && b.is_set(16) && b.is_set(17));
        assert!(!b.is_set(0) && !b.is_set(18) && !b.is_set(100));
    }

    #[test]
    fn writer_is_canonical() {
        let mut w = Writer::new();
        w.constructed(Tag::new(0xBF20), |w| {
            w.version(Tag::new(0x82), Version::new(2, 2, 0));
            w.constructed(Tag::new(0xA9), |w| w.tlv(Tag::OCTET_STRING, &[0xAB; 20]));
            w.integer(Tag::INTEGER, 128);
            w.boolean(Tag::BOOLEAN, true);
            w.tlv(Tag::new(0x5F37), &[0u8; 200]);
        });
        let out = w.into_bytes();
        assert_eq!(&out[..4], &[0xBF, 0x20, 0x81, 0xF0]);
        assert_eq!(out.len(), 4 + 0xF0);
        let outer = tlv(&out).unwrap();
        let mut r = outer.children("x").unwrap();
        assert_eq!(
            r.expect(Tag::new(0x82)).unwrap().version("v"),
            Ok(Version::new(2, 2, 0))
        );
        r.expect(Tag::new(0xA9)).unwrap();
        assert_eq!(r.expect(Tag::INTEGER).unwrap().integer("i"), Ok(128));
        assert_eq!(r.expect(Tag::BOOLEAN).unwrap().boolean("b"), Ok(true));
        assert_eq!(r.expect(Tag::new(0x5F37)).unwrap().value().len(), 200);
        r.finish().unwrap();
    }

    /// Walks every TLV recursively; used to make sure nothing panics.
    fn walk(input: &[u8], depth: usize) -> Result<usize, Asn1Error> {
        let mut r = Reader::new(input, "walk");
        let mut n = 0;
        while let Some(t) = r.next_tlv()? {
            n += 1;
            let _ = t.integer("i");
            let _ = t.oid("o");
            let _ = t.bit_string("b");
            let _ = t.utf8("u");
            let _ = t.boolean("b");
            let _ = t.version("v");
            if t.tag().is_constructed() && depth < 16 {
                n += walk(t.value(), depth + 1)?;
            }
        }
        Ok(n)
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = walk(&input, 0);
            let _ = parse_one(&input, "any");
            if let Ok(t) = parse_one(&input, "any") {
                // Whatever parses re-encodes to the same bytes.
                let mut w = Writer::new();
                w.tlv(t.tag(), t.value());
                prop_assert_eq!(w.into_bytes(), input);
            }
        }

        #[test]
        fn integer_round_trip(v in any::<i64>()) {
            prop_assert_eq!(decode_integer(&encode_integer(v), "i"), Ok(v));
        }

        #[test]
        fn oid_round_trip(first in 0u64..=2, second in 0u64..39, rest in proptest::collection::vec(any::<u64>().prop_map(|v| v >> 1), 0..6)) {
            let mut arcs = vec![first, second];
            arcs.extend(rest);
            let oid = Oid::from_arcs(&arcs).unwrap();
            prop_assert_eq!(oid.arcs(), arcs);
            prop_assert_eq!(oid.to_string().parse::<Oid>().unwrap(), oid);
        }

        #[test]
        fn tag_round_trip(number in 0u32..(1 << 21), class in 1u8..4, constructed in any::<bool>()) {
            let tag = match class {
                1 => Tag::application(number, constructed),
                _ => Tag::context(number, constructed),
            };
            prop_assert!(tag.is_valid());
            prop_assert_eq!(tag.number(), number);
            prop_assert_eq!(tag.is_constructed(), constructed);
        }
    }
}
