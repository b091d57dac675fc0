//! Writes the seed corpus of the `saip_decode` target: real packages from
//! the shipped template, a hand-written package that exercises what the
//! template does not (unknown PEs, extension additions, DEFAULTs spelled
//! out), and small packages holding one PE each between the header and
//! PE-End, which the fuzzer mutates faster than a whole profile.
//!
//! cargo run --manifest-path fuzz/Cargo.toml --example make_seeds -- fuzz/seeds/saip_decode
//!
//! Output is deterministic (fixed RNG seeds), so re-running it only
//! rewrites the same files.

use rand::SeedableRng;
use smdpplus::asn1::der::{Tag, Writer};
use smdpplus::ids::Iccid;
use smdpplus::profile::params::Params;
use smdpplus::profile::saip::ef::Imsi;
use smdpplus::profile::saip::Profile;
use smdpplus::profile::template::Template;
use std::path::{Path, PathBuf};

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "seeds/saip_decode".into()),
    );
    std::fs::create_dir_all(&out).expect("create the output directory");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let template = Template::load(&root.join("profiles/smdpplus-usim.toml")).expect("template");

    let full = personalize(&template, "894400000000000001", "001010000000042", 3);
    write(&out, "template-usim-isim.der", &full);
    let other = personalize(&template, "899990000000000123", "310260123456789", 7);
    write(&out, "template-usim-isim-2.der", &other);
    write(&out, "hand-written.der", &hand_written());

    // One PE of each kind the template has, between its header and End.
    let profile = Profile::decode(&full).expect("the template package decodes");
    let (header, end) = match (profile.elements.first(), profile.elements.last()) {
        (Some(h), Some(e)) => (h.clone(), e.clone()),
        _ => panic!("empty package"),
    };
    write(
        &out,
        "header-end.der",
        &Profile {
            elements: vec![header.clone(), end.clone()],
        }
        .encode(),
    );
    let mut seen = Vec::new();
    for pe in &profile.elements[1..profile.elements.len() - 1] {
        if seen.contains(&pe.name()) {
            continue;
        }
        seen.push(pe.name());
        let single = Profile {
            elements: vec![header.clone(), pe.clone(), end.clone()],
        };
        write(&out, &format!("single-{}.der", pe.name()), &single.encode());
    }
}

fn personalize(template: &Template, iccid: &str, imsi: &str, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let params = Params::random(
        Iccid::with_check_digit(iccid).expect("iccid"),
        Imsi::parse(imsi).expect("imsi"),
        template.spn(),
        &mut rng,
    );
    template.personalize(&params).expect("personalize").to_vec()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    // Only packages the decoder accepts, and that round-trip, are seeds.
    let p = Profile::decode(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(p.encode(), bytes, "{name} does not round-trip");
    std::fs::write(dir.join(name), bytes).expect("write seed");
    println!("{name}: {} bytes, {} PEs", bytes.len(), p.elements.len());
}

/// `[n]` with the given contents.
fn tlv(n: u32, constructed: bool, value: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.tlv(Tag::context(n, constructed), value);
    w.into_bytes()
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).expect("hex")
}

/// Header, an MF with the DEFAULT lcsi written out, a cdmaParameter and an
/// rfm (kept whole), a USIM with an extension addition, PIN codes with the
/// DEFAULT attempt counter written out, a CHOICE alternative from the
/// future (`[40]`), and an End carrying an extension.
fn hand_written() -> Vec<u8> {
    let mut w = Writer::new();
    w.constructed(Tag::context(0, true), |w| {
        w.tlv(Tag::context(0, false), &[2]);
        w.tlv(Tag::context(1, false), &[3]);
        w.tlv(Tag::context(3, false), &h("89 44 00 00 00 00 00 00 00 1F"));
        w.constructed(Tag::context(5, true), |w| {
            w.tlv(Tag::context(1, false), &[])
        });
        w.constructed(Tag::context(6, true), |w| {
            w.tlv(Tag::OID, &h("67 81 0F 01 02 01"))
        });
    });
    w.constructed(Tag::context(16, true), |w| {
        w.constructed(Tag::context(0, true), |w| {
            w.tlv(Tag::context(0, false), &[]);
            w.tlv(Tag::context(1, false), &[1]);
        });
        w.tlv(Tag::context(1, false), &h("67 81 0F 01 02 01"));
        w.constructed(Tag::context(2, true), |w| {
            w.constructed(Tag::context(1, true), |w| {
                w.tlv(Tag::context(10, false), &[5])
            });
        });
        for n in [4u8, 5, 6] {
            w.constructed(Tag::context(u32::from(n), true), |w| {
                w.tlv(Tag::context(3, false), &[n])
            });
        }
    });
    w.raw(&tlv(
        5,
        true,
        &h("A0 03 81 01 02 80 08 01 02 03 04 05 06 07 08"),
    ));
    w.raw(&tlv(7, true, &h("A0 03 81 01 03 4F 05 A0 00 00 00 01")));
    w.constructed(Tag::context(19, true), |w| {
        w.constructed(Tag::context(0, true), |w| {
            w.tlv(Tag::context(1, false), &[4])
        });
        w.tlv(Tag::context(1, false), &h("67 81 0F 01 02 04"));
        for n in [2u8, 3, 4, 8, 13, 14, 18, 22] {
            w.constructed(Tag::context(u32::from(n), true), |w| {
                w.tlv(Tag::context(3, false), &[n])
            });
        }
        w.tlv(Tag::context(30, false), &h("DE AD"));
    });
    w.constructed(Tag::context(2, true), |w| {
        w.constructed(Tag::context(0, true), |w| {
            w.tlv(Tag::context(1, false), &[5])
        });
        w.constructed(Tag::context(1, true), |w| {
            w.constructed(Tag::context(0, true), |w| {
                w.constructed(Tag::SEQUENCE, |w| {
                    w.tlv(Tag::context(0, false), &[1]);
                    w.tlv(Tag::context(1, false), b"0000\xFF\xFF\xFF\xFF");
                    w.tlv(Tag::context(3, false), &[7]);
                    w.tlv(Tag::context(4, false), &[51]);
                });
            });
        });
    });
    w.raw(&tlv(40, true, &h("80 01 00")));
    w.constructed(Tag::context(10, true), |w| {
        w.constructed(Tag::context(0, true), |w| {
            w.tlv(Tag::context(1, false), &[9])
        });
        w.tlv(Tag::context(1, false), &[0xAB]);
    });
    w.into_bytes()
}
