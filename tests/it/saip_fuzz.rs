//! Fuzz-style property tests for the SAIP decoder: random bytes, and
//! mutations and truncations of a real generated package, never panic;
//! whatever is accepted re-encodes to exactly the input; a truncated or
//! corrupted package gets an error that names the element.

use proptest::prelude::*;
use rand::SeedableRng;
use smdpplus::asn1::der::DerCodec;
use smdpplus::ids::Iccid;
use smdpplus::profile::params::Params;
use smdpplus::profile::saip::ef::Imsi;
use smdpplus::profile::saip::*;
use smdpplus::profile::template::Template;
use std::sync::OnceLock;

/// A personalized package of the shipped template.
fn package() -> &'static [u8] {
    static UPP: OnceLock<Vec<u8>> = OnceLock::new();
    UPP.get_or_init(|| {
        let t =
            Template::load(std::path::Path::new("profiles/smdpplus-usim.toml")).expect("template");
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let params = Params::random(
            Iccid::with_check_digit("899990000000000001").expect("iccid"),
            Imsi::parse("001010000000001").expect("imsi"),
            t.spn(),
            &mut rng,
        );
        t.personalize(&params).expect("personalize").to_vec()
    })
}

/// Every decoder on `input`: nothing panics, and an accepted input
/// re-encodes to itself.
fn decode_everything(input: &[u8]) {
    if let Ok(p) = Profile::decode(input) {
        assert_eq!(p.encode(), input, "Profile re-encodes differently");
    }
    macro_rules! check {
        ($($t:ty),+ $(,)?) => {$(
            if let Ok(v) = <$t>::from_der(input) {
                assert_eq!(v.to_der(), input, "{} re-encodes differently", stringify!($t));
            }
        )+};
    }
    check!(
        ProfileElement,
        ProfileHeader,
        FileSystemPe,
        GenericFileManagement,
        PinCodes,
        PukCodes,
        AkaParameter,
        SecurityDomain,
        End,
    );
}

/// The offsets of the PEs in the package.
fn pe_offsets(upp: &[u8]) -> Vec<usize> {
    let p = Profile::decode(upp).expect("valid");
    let mut at = 0;
    p.elements
        .iter()
        .map(|pe| {
            let start = at;
            at += pe.to_der().len();
            start
        })
        .collect()
}

#[test]
fn every_truncation_is_an_error() {
    let upp = package();
    let offsets = pe_offsets(upp);
    for len in 0..upp.len() {
        let err = Profile::decode(&upp[..len]).expect_err("a prefix is not a package");
        match err {
            // Cut at a PE boundary: the PEs are whole, but End is missing.
            SaipError::EndNotLast { .. } | SaipError::Empty => {
                assert!(offsets.contains(&len), "{len}: {err}")
            }
            // Cut inside a PE: the TLV framing runs past the end.
            SaipError::Framing { index, offset, .. } => {
                assert_eq!(offsets.get(index), Some(&offset), "{len}: {err}");
                assert!(offset < len);
            }
            other => panic!("{len}: unexpected {other}"),
        }
    }
}

#[test]
fn corruption_errors_name_the_element() {
    let upp = package();
    let offsets = pe_offsets(upp);
    let p = Profile::decode(upp).expect("valid");
    let usim_index = p
        .elements
        .iter()
        .position(|pe| pe.name() == "usim")
        .expect("usim");
    // The USIM's templateID (after its 4-octet outer header and 7-octet
    // PE header) becomes a BOOLEAN.
    let mut bad = upp.to_vec();
    let at = offsets[usim_index] + 4 + 7;
    assert_eq!(bad[at], 0x81, "templateID tag");
    bad[at] = 0x01;
    let err = Profile::decode(&bad).expect_err("corrupt");
    assert!(
        matches!(err, SaipError::Element { element: "usim", index, .. } if index == usim_index),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("usim") && msg.contains(&format!("byte {}", offsets[usim_index])),
        "{msg}"
    );

    // Garbage after PE-End.
    let mut trailing = upp.to_vec();
    trailing.push(0x00);
    assert!(matches!(
        Profile::decode(&trailing),
        Err(SaipError::Framing { .. })
    ));
    // A second package appended: the header is out of place.
    let mut twice = upp.to_vec();
    twice.extend_from_slice(upp);
    assert!(matches!(
        Profile::decode(&twice),
        Err(SaipError::Misplaced { element: "end", .. })
    ));
    // The header dropped.
    let headless = &upp[offsets[1]..];
    assert_eq!(
        Profile::decode(headless),
        Err(SaipError::HeaderNotFirst { found: "mf" })
    );
}

#[test]
fn every_single_byte_flip_is_handled() {
    // Not a proptest: exhaustive over positions, one flip pattern each.
    let upp = package();
    for i in 0..upp.len() {
        let mut m = upp.to_vec();
        m[i] ^= 0x5A;
        decode_everything(&m);
    }
}

proptest! {
    #![proptest_config(crate::common::props::config(512))]

    #[test]
    fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&input);
    }

    #[test]
    fn random_pe_like_bytes_never_panic(
        tag in prop_oneof![0xA0u8..=0xAF, 0xB0u8..=0xBE],
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        // A plausible outer TLV around random contents reaches the typed
        // decoders instead of failing at the framing.
        let mut input = vec![tag];
        smdpplus::asn1::der::write_length(body.len(), &mut input);
        input.extend_from_slice(&body);
        decode_everything(&input);
    }

    #[test]
    fn mutations_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let mut m = package().to_vec();
        for (at, byte, op) in edits {
            if m.is_empty() {
                break;
            }
            let i = at.index(m.len());
            match op {
                0 => m[i] = byte,
                1 => m.insert(i, byte),
                2 => { m.remove(i); }
                _ => m.truncate(i),
            }
        }
        decode_everything(&m);
    }

    #[test]
    fn every_pe_decoder_survives_mutated_pes(
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let upp = package();
        let p = Profile::decode(upp).expect("valid");
        let pe = which.get(&p.elements).to_der();
        let mut m = pe.clone();
        let i = at.index(m.len());
        m[i] = byte;
        decode_everything(&m);
        decode_everything(&pe[..i]);
    }
}
