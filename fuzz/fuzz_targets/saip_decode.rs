//! Coverage-guided fuzzing of the SAIP profile-package decoder.
//!
//! `Profile::decode` faces packages we did not produce (operator imports,
//! `profiles add --package`), so for any input it must return, not panic.
//! Its module documents two round-trip guarantees, both checked here for
//! every input it accepts:
//!
//! - `encode(decode(b)) == b`: strict DER has a single encoding per value,
//!   DEFAULTs spelled out are remembered, and unknown PEs and extension
//!   additions are kept as received, so nothing may be dropped or
//!   normalised;
//! - `decode(encode(p)) == p`: the encoder's output decodes to the same
//!   typed value (`Profile: PartialEq`).
//!
//! Also, every PE of an accepted package re-encodes on its own to exactly
//! the bytes it was read from, which is what lets an error name a PE by
//! its byte offset.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smdpplus::asn1::der::DerCodec;
use smdpplus::profile::saip::{Profile, ProfileElement};

fuzz_target!(|data: &[u8]| {
    let Ok(profile) = Profile::decode(data) else {
        return;
    };

    let encoded = profile.encode();
    assert!(
        encoded == data,
        "encode(decode(b)) != b\n  in:  {}\n  out: {}",
        hex(data),
        hex(&encoded)
    );

    let again = Profile::decode(&encoded).expect("the encoder's output must decode");
    assert_eq!(again, profile, "decode(encode(p)) != p");

    let mut offset = 0;
    for (i, pe) in profile.elements.iter().enumerate() {
        let der = pe.to_der();
        let end = offset + der.len();
        assert_eq!(
            data.get(offset..end),
            Some(der.as_slice()),
            "PE #{i} ({}) at byte {offset} re-encodes differently",
            pe.name()
        );
        let alone = ProfileElement::from_der(&der).expect("a PE of an accepted package decodes");
        assert_eq!(
            &alone,
            pe,
            "PE #{i} ({}) decodes differently alone",
            pe.name()
        );
        offset = end;
    }
    assert_eq!(offset, data.len(), "the PEs do not cover the package");
});

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
