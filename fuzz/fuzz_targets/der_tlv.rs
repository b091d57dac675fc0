//! Coverage-guided fuzzing of the strict DER TLV layer (`asn1::der`) that
//! every decoder in the crate stands on.
//!
//! The input is read as a sequence of TLVs, and each constructed TLV's
//! contents again as a sequence (to a bounded depth). Nothing may panic,
//! and whatever is accepted must be canonical: the tag and length octets
//! written back by `Tag::write` and `write_length` are exactly the ones
//! received. The primitive readers are run on every primitive value, and
//! their results must re-encode to the contents octets they came from
//! (INTEGER, OBJECT IDENTIFIER, BIT STRING, BOOLEAN).

#![no_main]

use libfuzzer_sys::fuzz_target;
use smdpplus::asn1::der::{
    decode_integer, encode_integer, write_length, BitString, Oid, Reader, Tlv,
};

/// Deep enough for any real message; bounds the recursion on hostile input.
const MAX_DEPTH: usize = 32;

fuzz_target!(|data: &[u8]| {
    walk(Reader::new(data, "fuzz"), data.len(), 0);
});

/// Reads every TLV of `reader` (whose contents are `len` octets long);
/// stops quietly at the first framing error.
fn walk(mut reader: Reader<'_>, len: usize, depth: usize) {
    let mut consumed = 0;
    loop {
        let peeked = reader.peek_tag();
        match reader.next_tlv() {
            Ok(Some(tlv)) => {
                assert_eq!(peeked.ok().flatten(), Some(tlv.tag()), "peek disagrees");
                consumed += tlv.raw().len();
                check(&tlv, depth);
            }
            Ok(None) => {
                assert_eq!(consumed, len, "reader ended early");
                assert!(reader.finish().is_ok(), "finish after the last TLV");
                return;
            }
            Err(_) => {
                assert!(reader.finish().is_err(), "finish with bytes left over");
                return;
            }
        }
    }
}

fn check(tlv: &Tlv<'_>, depth: usize) {
    let tag = tlv.tag();
    assert!(tag.is_valid(), "parsed an invalid tag {tag:?}");

    let mut header = Vec::new();
    tag.write(&mut header);
    write_length(tlv.value().len(), &mut header);
    let (head, value) = tlv.raw().split_at(tlv.raw().len() - tlv.value().len());
    assert_eq!(head, header.as_slice(), "tag/length octets not canonical");
    assert_eq!(value, tlv.value());

    if tag.is_constructed() {
        assert!(tlv.primitive("fuzz").is_err());
        if depth < MAX_DEPTH {
            if let Ok(children) = tlv.children("fuzz") {
                walk(children, tlv.value().len(), depth + 1);
            }
        }
        return;
    }

    let contents = tlv.value();
    if let Ok(v) = decode_integer(contents, "fuzz") {
        assert_eq!(encode_integer(v), contents, "INTEGER {v}");
    }
    if let Ok(oid) = Oid::from_content(contents, "fuzz") {
        assert_eq!(oid.content(), contents);
        let again = Oid::from_arcs(&oid.arcs()).expect("the arcs of a valid OID");
        assert_eq!(again, oid, "OID {oid} via its arcs");
        let parsed: Oid = oid.to_string().parse().expect("dotted form parses");
        assert_eq!(parsed, oid, "OID {oid} via its dotted form");
    }
    if let Ok(bits) = BitString::from_content(contents, "fuzz") {
        let mut again = vec![bits.unused_bits()];
        again.extend_from_slice(bits.as_bytes());
        assert_eq!(again, contents, "BIT STRING");
        assert_eq!(
            BitString::new(bits.unused_bits(), bits.as_bytes()),
            Ok(bits)
        );
    }
    if let Ok(b) = tlv.boolean("fuzz") {
        assert_eq!(contents, [if b { 0xFF } else { 0x00 }]);
    }
    let _ = tlv.utf8("fuzz");
}
