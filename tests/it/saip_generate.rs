//! Generation and personalization: every ICCID carries a valid Luhn digit
//! and the ICCIDs and IMSIs are consecutive; secrets are unique and land
//! where the template says; the same values always give byte-identical
//! packages; the operator's CSV is 0600 and matches; a generated package
//! protected at rest decrypts back to the same bytes.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rand::SeedableRng;
use smdpplus::asn1::der::DerCodec;
use smdpplus::ids::Iccid;
use smdpplus::profile::generate::{
    generate, params_iter, write_operator_csv, GenerateError, OperatorCsv,
};
use smdpplus::profile::params::{Params, Pin};
use smdpplus::profile::protect::{Keyring, MasterKey, ProtectedPackage};
use smdpplus::profile::saip::ef::{self, Imsi};
use smdpplus::profile::saip::*;
use smdpplus::profile::template::Template;

fn template() -> Template {
    Template::load(Path::new("profiles/smdpplus-usim.toml")).expect("template")
}

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// The values a package carries, read back through the decoder.
struct Read {
    iccid_header: Iccid,
    iccid_ef: Iccid,
    imsi: Imsi,
    acc: Vec<u8>,
    spn: Vec<u8>,
    keys: Vec<(Vec<u8>, Vec<u8>)>,
    pins: Vec<(u8, Vec<u8>)>,
    puks: Vec<(u8, Vec<u8>)>,
    sd_keys: Vec<(u8, u8, Vec<u8>)>,
    impi: Vec<u8>,
}

fn read(upp: &[u8]) -> Read {
    let p = Profile::decode(upp).expect("valid package");
    let mf = p.file_system(FsKind::Mf).expect("mf");
    let usim = p.file_system(FsKind::Usim).expect("usim");
    let isim = p.file_system(FsKind::Isim).expect("isim");
    let content = |fs: &FileSystemPe, name: &str| fs.file(name).expect(name).content(0xFF);
    let mut r = Read {
        iccid_header: p.iccid().expect("header ICCID"),
        iccid_ef: ef::iccid_from_ef(&content(mf, "ef-iccid")).expect("EF.ICCID"),
        imsi: ef::imsi_from_ef(&content(usim, "ef-imsi")).expect("EF.IMSI"),
        acc: content(usim, "ef-acc"),
        spn: content(usim, "ef-spn"),
        keys: Vec::new(),
        pins: Vec::new(),
        puks: Vec::new(),
        sd_keys: Vec::new(),
        impi: content(isim, "ef-impi"),
    };
    for pe in &p.elements {
        match pe {
            ProfileElement::AkaParameter(AkaParameter {
                algo: AlgoConfiguration::Algo(a),
                ..
            }) => {
                assert_eq!(a.algorithm_id, AlgorithmId::Milenage);
                assert_eq!(a.effective_rotation_constants(), DEFAULT_ROTATION_CONSTANTS);
                assert_eq!(a.effective_xoring_constants(), DEFAULT_XORING_CONSTANTS);
                r.keys
                    .push((a.key.expose().to_vec(), a.opc.expose().to_vec()));
            }
            ProfileElement::PinCodes(PinCodes {
                codes: PinCodesChoice::Config(pins),
                ..
            }) => r.pins.extend(
                pins.iter()
                    .map(|c| (c.key_reference, c.value.expose().to_vec())),
            ),
            ProfileElement::PukCodes(puks) => r.puks.extend(
                puks.codes
                    .iter()
                    .map(|c| (c.key_reference, c.value.expose().to_vec())),
            ),
            ProfileElement::SecurityDomain(sd) => {
                for k in sd.keys.iter().flatten() {
                    r.sd_keys.push((
                        k.version,
                        k.identifier,
                        k.components[0].key_data.expose().to_vec(),
                    ));
                }
            }
            _ => {}
        }
    }
    r
}

fn stored(pin: &Pin) -> Vec<u8> {
    pin.value().to_vec()
}

#[test]
fn generated_profiles_are_consecutive_luhn_and_carry_their_values() {
    let t = template();
    let count = 300u64;
    let out = generate(
        &t,
        count,
        "899990000000000098",
        "001010000000998",
        &mut rng(1),
    )
    .expect("generate");
    assert_eq!(out.len(), count as usize);
    for (i, g) in out.iter().enumerate() {
        let p = &g.params;
        // ICCID: the body counts up across the carry, the Luhn digit is valid.
        let body: u64 = p.iccid.as_str()[..18].parse().expect("digits");
        assert_eq!(body, 899990000000000098 + i as u64);
        assert!(p.iccid.luhn_ok(), "{}", p.iccid);
        assert_eq!(p.iccid.as_str().len(), 19);
        let imsi: u64 = p.imsi.as_str().parse().expect("digits");
        assert_eq!(imsi, 1010000000998 + i as u64);
        assert_eq!(p.imsi.as_str().len(), 15);
        assert_eq!(p.spn, "smdpplus");

        let r = read(&g.upp);
        assert_eq!(r.iccid_header, p.iccid);
        assert_eq!(r.iccid_ef, p.iccid);
        assert_eq!(r.imsi, p.imsi);
        assert_eq!(r.acc, ef::ef_acc(&p.imsi).to_vec());
        assert_eq!(r.spn, ef::ef_spn(0, "smdpplus").expect("spn").to_vec());
        let ki = p.ki.expose().to_vec();
        let opc = p.opc.expose().to_vec();
        // USIM and ISIM both authenticate with K and OPc.
        assert_eq!(r.keys, vec![(ki.clone(), opc.clone()), (ki, opc)]);
        assert_eq!(
            r.pins,
            vec![
                (0x01, stored(&p.pin1)),
                (0x0A, stored(&p.adm1)),
                (0x81, stored(&p.pin2)),
            ]
        );
        assert_eq!(
            r.puks,
            vec![(0x01, stored(&p.puk1)), (0x81, stored(&p.puk2))]
        );
        let k = &p.sd_keys;
        let expect: Vec<(u8, u8, Vec<u8>)> = [
            (0x01, 1, &k.scp80_kic),
            (0x01, 2, &k.scp80_kid),
            (0x01, 3, &k.scp80_kik),
            (0x30, 1, &k.scp03_enc),
            (0x30, 2, &k.scp03_mac),
            (0x30, 3, &k.scp03_dek),
        ]
        .into_iter()
        .map(|(v, id, key)| (v, id, key.expose().to_vec()))
        .collect();
        assert_eq!(r.sd_keys, expect);
        assert_eq!(r.impi, ef::ef_impi(&p.imsi, 2).expect("impi"));
    }
}

#[test]
fn secrets_are_unique_and_random() {
    let t = template();
    let params: Vec<Params> = params_iter(
        &t,
        2000,
        "899990000000000000",
        "001010000000000",
        &mut rng(2),
    )
    .expect("range")
    .collect();
    let mut keys = HashSet::new();
    for p in &params {
        for k in [
            &p.ki,
            &p.opc,
            &p.sd_keys.scp80_kic,
            &p.sd_keys.scp80_kid,
            &p.sd_keys.scp80_kik,
            &p.sd_keys.scp03_enc,
            &p.sd_keys.scp03_mac,
            &p.sd_keys.scp03_dek,
        ] {
            assert!(keys.insert(*k.expose()), "a 128-bit key repeated");
        }
    }
    assert_eq!(keys.len(), 8 * params.len());
    let iccids: HashSet<_> = params.iter().map(|p| p.iccid.clone()).collect();
    let imsis: HashSet<_> = params.iter().map(|p| p.imsi.clone()).collect();
    assert_eq!(iccids.len(), params.len());
    assert_eq!(imsis.len(), params.len());
    // 8-digit codes: collisions are possible but rare; 4-digit PINs spread
    // over the whole range.
    let puks: HashSet<_> = params.iter().map(|p| p.puk1.expose().to_owned()).collect();
    let adms: HashSet<_> = params.iter().map(|p| p.adm1.expose().to_owned()).collect();
    assert!(puks.len() > 1990 && adms.len() > 1990);
    let pins: HashSet<_> = params.iter().map(|p| p.pin1.expose().to_owned()).collect();
    assert!(pins.len() > 1500, "{}", pins.len());
    for p in &params {
        for pin in [&p.pin1, &p.pin2, &p.puk1, &p.puk2, &p.adm1] {
            assert!(pin.expose().bytes().all(|b| b.is_ascii_digit()));
        }
    }
    // Every digit position of PIN1 takes every value.
    for pos in 0..4 {
        let digits: HashSet<u8> = params
            .iter()
            .map(|p| p.pin1.expose().as_bytes()[pos])
            .collect();
        assert_eq!(digits.len(), 10);
    }
}

#[test]
fn regeneration_is_byte_identical() {
    let t = template();
    let a = generate(&t, 50, "899990000000000000", "001010000000000", &mut rng(9)).expect("a");
    let b = generate(&t, 50, "899990000000000000", "001010000000000", &mut rng(9)).expect("b");
    assert_eq!(a, b, "same seed, same profiles");
    // From stored values, with a freshly loaded template.
    let t2 = template();
    assert_eq!(t.digest(), t2.digest());
    for g in &a {
        let again = t2.personalize(&g.params.clone()).expect("personalize");
        assert_eq!(again, g.upp);
    }
    // Different values, different packages.
    let c = generate(
        &t,
        50,
        "899990000000000000",
        "001010000000000",
        &mut rng(10),
    )
    .expect("c");
    assert!(a.iter().zip(&c).all(|(x, y)| x.upp != y.upp));
    // The same one profile, one or many cores: the same bytes.
    let single =
        generate(&t, 1, "899990000000000000", "001010000000000", &mut rng(9)).expect("one");
    assert_eq!(single[0], a[0]);
}

#[test]
fn a_protected_package_decrypts_to_the_same_bytes() {
    let t = template();
    let master = Keyring::single(0, MasterKey::from_bytes([0x42; 32]));
    for g in
        generate(&t, 5, "899990000000000000", "001010000000000", &mut rng(4)).expect("generate")
    {
        let context = g.params.iccid.as_str().as_bytes();
        let ppp = ProtectedPackage::protect(&master, &g.upp, context).expect("protect");
        assert!(ppp.segments.iter().all(|s| s.0.len() <= 1020));
        let stored = ppp.to_bytes();
        // No secret in clear in the stored record.
        for secret in [g.params.ki.expose(), g.params.opc.expose()] {
            assert!(!stored.windows(16).any(|w| w == secret));
        }
        let back = ProtectedPackage::from_bytes(&stored)
            .expect("parse")
            .decrypt(&master, context)
            .expect("decrypt");
        assert_eq!(back.as_slice(), g.upp.as_slice());
        assert_eq!(read(&back).iccid_header, g.params.iccid);
    }
}

#[test]
fn the_operator_csv_is_private_and_matches() {
    let t = template();
    let out =
        generate(&t, 20, "899990000000000000", "001010000000000", &mut rng(5)).expect("generate");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("out.csv");
    let rows = write_operator_csv(&path, out.iter().map(|g| &g.params)).expect("write");
    assert_eq!(rows, 20);
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).expect("read");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("ICCID,IMSI,KI,OPC"));
    for (line, g) in lines.zip(&out) {
        let p = &g.params;
        assert_eq!(
            line,
            format!(
                "{},{},{},{}",
                p.iccid,
                p.imsi,
                p.ki.to_hex().as_str(),
                p.opc.to_hex().as_str()
            )
        );
    }
    assert_eq!(text.lines().count(), 21);
    // Never overwritten.
    assert!(OperatorCsv::create(&path).is_err());
    assert_eq!(std::fs::read_to_string(&path).expect("read"), text);
}

#[test]
fn a_large_csv_is_written_in_full() {
    // More rows than the writer buffers at once.
    let t = template();
    let params: Vec<Params> = params_iter(
        &t,
        3000,
        "899990000000000000",
        "001010000000000",
        &mut rng(6),
    )
    .expect("range")
    .collect();
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("big.csv");
    let mut csv = OperatorCsv::create(&path).expect("create");
    for p in &params {
        csv.write(p).expect("row");
    }
    let (written, rows) = csv.finish().expect("finish");
    assert_eq!((written, rows), (path.clone(), 3000));
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count(), 3001);
    assert!(text.ends_with('\n'));
    assert!(text
        .lines()
        .last()
        .expect("last")
        .starts_with(params[2999].iccid.as_str()));
}

#[test]
fn bad_ranges_are_refused() {
    let t = template();
    let mut r = rng(7);
    let err = |iccid: &str, imsi: &str, count: u64, r: &mut rand::rngs::StdRng| {
        generate(&t, count, iccid, imsi, r).expect_err("refused")
    };
    assert_eq!(
        err("89999000000000000", "001010000000000", 1, &mut r),
        GenerateError::IccidStart
    );
    assert_eq!(
        err("89999000000000000x", "001010000000000", 1, &mut r),
        GenerateError::IccidStart
    );
    assert_eq!(
        err("899990000000000000", "00101", 1, &mut r),
        GenerateError::ImsiStart
    );
    assert!(matches!(
        err("999999999999999999", "001010000000000", 2, &mut r),
        GenerateError::Exhausted { what: "ICCID", .. }
    ));
    assert!(matches!(
        err("899990000000000000", "999999999999999", 2, &mut r),
        GenerateError::Exhausted { what: "IMSI", .. }
    ));
    assert!(
        generate(&t, 0, "899990000000000000", "001010000000000", &mut r)
            .expect("empty")
            .is_empty()
    );
    // 19 digits before the check digit: a 20-digit ICCID.
    let long =
        generate(&t, 2, "8999900000000000001", "001010000000000", &mut r).expect("20 digits");
    assert_eq!(long[1].params.iccid.as_str().len(), 20);
    assert!(long.iter().all(|g| g.params.iccid.luhn_ok()));
    assert_eq!(read(&long[1].upp).iccid_header, long[1].params.iccid);
}

#[test]
fn debug_output_never_shows_secrets() {
    let t = template();
    let out = generate(&t, 1, "899990000000000000", "001010000000000", &mut rng(8)).expect("one");
    let g = &out[0];
    let p = Profile::decode(&g.upp).expect("decode");
    let shown = format!("{g:?} {:?} {p:?} {t:?}", g.params);
    for secret in [
        g.params.ki.to_hex(),
        g.params.opc.to_hex(),
        g.params.sd_keys.scp03_dek.to_hex(),
    ] {
        assert!(!shown.contains(secret.as_str()));
        assert!(!shown.to_lowercase().contains(&secret.to_lowercase()));
    }
    // Decimal renderings of the key bytes as a list.
    let ki_list = format!("{:?}", g.params.ki.expose());
    assert!(!shown.contains(&ki_list[1..ki_list.len() - 1]));
    assert!(!shown.contains(g.params.adm1.expose()));
    // The typed AKA element stays redacted too.
    let aka = p
        .elements
        .iter()
        .find(|pe| pe.name() == "akaParameter")
        .expect("aka");
    assert!(format!("{aka:?}").contains("Secret(16 bytes)"));
    assert!(!aka.to_der().is_empty());
}
