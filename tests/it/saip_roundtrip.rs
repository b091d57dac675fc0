//! SAIP profile package round trips: for every supported Profile Element,
//! `decode(encode(x)) == x` for arbitrary valid values (proptest) and
//! `encode(decode(b)) == b` for packages as received, including unknown
//! PEs, extension additions and DEFAULT values spelled out.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use smdpplus::asn1::der::{DerCodec, Oid, Tag, Writer};
use smdpplus::profile::saip::*;

// ---------------------------------------------------------------------------
// Strategies.

fn bytes(min: usize, max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), min..=max)
}

fn secret(min: usize, max: usize) -> impl Strategy<Value = Secret> {
    bytes(min, max).prop_map(Secret::from_vec)
}

fn pe_header() -> impl Strategy<Value = PeHeader> {
    (0u16..=32767, any::<bool>()).prop_map(|(id, m)| PeHeader::new(id, m))
}

fn oid() -> impl Strategy<Value = Oid> {
    (0u64..3, 0u64..40, vec(0u64..100_000, 0..6)).prop_map(|(a, b, rest)| {
        let mut arcs = vec![a, b];
        arcs.extend(rest);
        Oid::from_arcs(&arcs).expect("valid arcs")
    })
}

/// One TLV with a context-specific tag `[n]` and any contents.
fn tlv(n: u32, constructed: bool, value: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.tlv(Tag::context(n, constructed), value);
    w.into_bytes()
}

/// Extension additions after root component `[last]`: increasing context
/// tags above it.
fn extensions(last: u32) -> impl Strategy<Value = Vec<Vec<u8>>> {
    vec((1u32..4, any::<bool>(), bytes(0, 6)), 0..3).prop_map(move |items| {
        let mut n = last;
        items
            .into_iter()
            .map(|(step, constructed, value)| {
                n += step;
                tlv(n, constructed, &value)
            })
            .collect()
    })
}

/// Well-formed TLV contents (what undecoded constructed values must hold).
fn tlv_contents() -> impl Strategy<Value = Vec<u8>> {
    vec((0u32..20, bytes(0, 8)), 0..4).prop_map(|items| {
        items
            .into_iter()
            .flat_map(|(n, v)| tlv(n, false, &v))
            .collect()
    })
}

fn proprietary() -> impl Strategy<Value = ProprietaryInfo> {
    (
        option::of(any::<u8>()),
        option::of(bytes(1, 200)),
        option::of(bytes(1, 20)),
        option::of(bytes(0, 4)),
        option::of(any::<u8>()),
    )
        .prop_map(|(s, f, r, m, d)| ProprietaryInfo {
            special_file_information: s,
            fill_pattern: f,
            repeat_pattern: r,
            maximum_file_size: m,
            file_details: d,
        })
}

fn fcp() -> impl Strategy<Value = Fcp> {
    (
        (
            option::of(bytes(2, 4)),
            option::of(any::<[u8; 2]>()),
            option::of(bytes(5, 16)),
            option::of(any::<u8>()),
            option::of(bytes(1, 3)),
        ),
        (
            option::of(bytes(0, 3)),
            option::of(bytes(0, 8)),
            option::of(bytes(0, 1)),
            option::of(proprietary()),
            option::of(bytes(0, 8)),
        ),
    )
        .prop_map(
            |((fd, id, name, lcsi, sec), (size, pin, sfi, prop, link))| Fcp {
                file_descriptor: fd,
                file_id: id,
                df_name: name,
                lcsi,
                security_attributes_referenced: sec,
                ef_file_size: size,
                pin_status_template_do: pin,
                short_ef_id: sfi,
                proprietary_ef_info: prop,
                link_path: link,
            },
        )
}

fn file() -> impl Strategy<Value = File> {
    vec(
        prop_oneof![
            Just(FileElement::DoNotCreate),
            fcp().prop_map(|f| FileElement::Fcp(Box::new(f))),
            any::<u16>().prop_map(FileElement::FillFileOffset),
            bytes(0, 40).prop_map(FileElement::FillFileContent),
        ],
        0..4,
    )
    .prop_map(File)
}

fn file_system() -> impl Strategy<Value = FileSystemPe> {
    (0..FsKind::ALL.len()).prop_flat_map(|i| {
        let kind = FsKind::ALL[i];
        let slots = kind.slots().len();
        (
            Just(kind),
            pe_header(),
            oid(),
            vec(option::weighted(0.3, file()), slots),
            extensions(slots as u32 + 1),
        )
            .prop_map(|(kind, header, template_id, files, ext)| {
                let mut pe = FileSystemPe::new(kind, header, template_id);
                for (slot, f) in kind.slots().iter().zip(files) {
                    match f {
                        Some(f) => pe.set_file(slot.name, f).expect("slot"),
                        None if slot.mandatory => {
                            pe.set_file(slot.name, File::default()).expect("slot")
                        }
                        None => {}
                    }
                }
                pe.extensions = ext;
                pe
            })
    })
}

fn services() -> impl Strategy<Value = ServicesList> {
    (vec(any::<bool>(), 30), extensions(29)).prop_map(|(bits, ext)| {
        let names = [
            "contactless",
            "usim",
            "isim",
            "csim",
            "milenage",
            "tuak128",
            "cave",
            "gba-usim",
            "gba-isim",
            "mbms",
            "eap",
            "javacard",
            "multos",
            "multiple-usim",
            "multiple-isim",
            "multiple-csim",
            "tuak256",
            "usim-test-algorithm",
            "ber-tlv",
            "dfLink",
            "cat-tp",
            "get-identity",
            "profile-a-x25519",
            "profile-b-p256",
            "suciCalculatorApi",
            "dns-resolution",
            "scp11ac",
            "scp11c-authorization-mechanism",
            "s16mode",
            "eaka",
        ];
        let mut list =
            ServicesList::from_names(names.iter().zip(bits).filter(|(_, b)| *b).map(|(n, _)| *n))
                .expect("known names");
        list.extensions = ext;
        list
    })
}

fn profile_header() -> impl Strategy<Value = ProfileHeader> {
    (
        (
            any::<u8>(),
            any::<u8>(),
            option::of("[a-zA-Z0-9 ._-]{1,100}"),
            any::<[u8; 10]>(),
            option::of(bytes(0, 8)),
        ),
        (
            services(),
            vec(oid(), 0..5),
            option::of(bytes(0, 16)),
            option::of(vec(
                (bytes(5, 16), any::<[u8; 2]>())
                    .prop_map(|(aid, version)| MandatoryAid { aid, version }),
                0..3,
            )),
            option::of(bytes(7, 11)),
            extensions(9),
        ),
    )
        .prop_map(
            |((major, minor, ptype, iccid, pol), (services, gfste, conn, aids, pix, ext))| {
                ProfileHeader {
                    major_version: major,
                    minor_version: minor,
                    profile_type: ptype,
                    iccid,
                    pol,
                    mandatory_services: services,
                    mandatory_gfste: gfste,
                    connectivity_parameters: conn,
                    mandatory_aids: aids,
                    iot_pix: pix,
                    extensions: ext,
                }
            },
        )
}

fn pin_codes() -> impl Strategy<Value = PinCodes> {
    let config = (
        any::<u8>(),
        secret(8, 8),
        option::of(any::<u8>()),
        option::of(any::<u8>()),
        option::of(any::<u8>()),
    )
        .prop_map(|(k, v, u, a, n)| PinConfig {
            key_reference: k,
            value: v,
            unblocking_reference: u,
            attributes: a,
            attempts: n,
        });
    (
        pe_header(),
        prop_oneof![
            vec(config, 1..=26).prop_map(PinCodesChoice::Config),
            bytes(0, 8).prop_map(PinCodesChoice::FilePath),
        ],
        extensions(1),
    )
        .prop_map(|(header, codes, extensions)| PinCodes {
            header,
            codes,
            extensions,
        })
}

fn puk_codes() -> impl Strategy<Value = PukCodes> {
    let config =
        (any::<u8>(), secret(8, 8), option::of(any::<u8>())).prop_map(|(k, v, n)| PukConfig {
            key_reference: k,
            value: v,
            attempts: n,
        });
    (pe_header(), vec(config, 1..=16), extensions(1)).prop_map(|(header, codes, extensions)| {
        PukCodes {
            header,
            codes,
            extensions,
        }
    })
}

fn aka() -> impl Strategy<Value = AkaParameter> {
    let algo = (
        (
            prop_oneof![Just(1i64), Just(2), Just(3), -5i64..100],
            any::<u8>(),
            secret(0, 32),
            secret(0, 32),
        ),
        (
            option::of(any::<[u8; 5]>()),
            option::of(vec(any::<u8>(), 80)),
            option::of(any::<[u8; 3]>()),
            option::of(any::<u8>()),
        ),
    )
        .prop_map(|((id, options, key, opc), (rot, xor, counter, keccak))| {
            AlgoConfiguration::Algo(AlgoParameter {
                algorithm_id: AlgorithmId::from_i64(id),
                algorithm_options: options,
                key,
                opc,
                rotation_constants: rot,
                xoring_constants: xor.map(|x| Box::new(x.try_into().expect("80 octets"))),
                auth_counter_max: counter,
                number_of_keccak: keccak,
            })
        });
    let mapping = (any::<u8>(), bytes(5, 16)).prop_map(|(options, source)| {
        AlgoConfiguration::Mapping(MappingParameter { options, source })
    });
    (
        pe_header(),
        prop_oneof![algo, mapping],
        (
            option::of(any::<u8>()),
            option::of(any::<[u8; 6]>()),
            option::of(any::<[u8; 6]>()),
            option::of(vec(any::<[u8; 6]>(), 32)),
        ),
        extensions(5),
    )
        .prop_map(
            |(header, algo, (opts, delta, age, init), extensions)| AkaParameter {
                header,
                algo,
                sqn_options: opts,
                sqn_delta: delta,
                sqn_age_limit: age,
                sqn_init: init,
                extensions,
            },
        )
}

fn security_domain() -> impl Strategy<Value = SecurityDomain> {
    let instance = (
        (
            bytes(5, 16),
            bytes(5, 16),
            bytes(5, 16),
            option::of(bytes(5, 16)),
            bytes(0, 4),
            option::of(any::<u8>()),
        ),
        (
            bytes(0, 12),
            option::of(tlv_contents()),
            option::of(tlv_contents()),
            option::of(vec(bytes(0, 10), 1..3)),
            option::of(tlv_contents()),
        ),
    )
        .prop_map(
            |((lp, class, inst, ext, priv_, lcs), (c9, sys, app, process, crt))| {
                ApplicationInstance {
                    load_package_aid: lp,
                    class_aid: class,
                    instance_aid: inst,
                    extradite_sd_aid: ext,
                    privileges: priv_,
                    life_cycle_state: lcs,
                    specific_parameters_c9: c9,
                    system_specific_parameters: sys,
                    application_parameters: app,
                    process_data: process,
                    control_reference_template: crt,
                }
            },
        );
    let component = (bytes(0, 2), secret(0, 32), option::of(any::<u8>())).prop_map(
        |(key_type, key_data, mac_length)| KeyComponent {
            key_type,
            key_data,
            mac_length,
        },
    );
    let key = (
        bytes(1, 2),
        option::of(any::<u8>()),
        any::<u8>(),
        any::<u8>(),
        option::of(bytes(0, 4)),
        vec(component, 1..3),
    )
        .prop_map(
            |(usage, access, id, version, counter, components)| KeyObject {
                usage_qualifier: usage,
                access,
                identifier: id,
                version,
                counter,
                components,
            },
        );
    (
        pe_header(),
        instance,
        option::of(vec(key, 1..4)),
        option::of(vec(bytes(0, 20), 1..3)),
        option::of(
            (option::of(any::<u8>()), option::of(bytes(0, 8))).prop_map(|(r, c)| OpenPersoData {
                restrict_parameter: r,
                contactless_protocol_parameters: c,
            }),
        ),
        option::of((any::<u16>(), any::<u16>())),
        extensions(5),
    )
        .prop_map(
            |(header, instance, keys, perso, open, cat_tp, extensions)| SecurityDomain {
                header,
                instance,
                keys,
                perso_data: perso,
                open_perso_data: open,
                cat_tp,
                extensions,
            },
        )
}

fn gfm() -> impl Strategy<Value = GenericFileManagement> {
    let cmd = prop_oneof![
        bytes(0, 8).prop_map(FileManagementCmd::FilePath),
        fcp().prop_map(|f| FileManagementCmd::CreateFcp(Box::new(f))),
        any::<u16>().prop_map(FileManagementCmd::FillFileOffset),
        bytes(0, 30).prop_map(FileManagementCmd::FillFileContent),
    ];
    (pe_header(), vec(vec(cmd, 1..5), 1..3), extensions(1)).prop_map(
        |(header, commands, extensions)| GenericFileManagement {
            header,
            commands,
            extensions,
        },
    )
}

fn end() -> impl Strategy<Value = End> {
    (pe_header(), extensions(0)).prop_map(|(header, extensions)| End { header, extensions })
}

fn unknown() -> impl Strategy<Value = UnknownElement> {
    (
        prop_oneof![Just(5u32), Just(7), Just(8), Just(9), 11u32..16, 34u32..300],
        bytes(0, 30),
    )
        .prop_map(|(n, value)| UnknownElement::from_der(&tlv(n, true, &value)).expect("unknown PE"))
}

fn middle_element() -> impl Strategy<Value = ProfileElement> {
    prop_oneof![
        file_system().prop_map(ProfileElement::FileSystem),
        pin_codes().prop_map(ProfileElement::PinCodes),
        puk_codes().prop_map(ProfileElement::PukCodes),
        aka().prop_map(ProfileElement::AkaParameter),
        security_domain().prop_map(ProfileElement::SecurityDomain),
        gfm().prop_map(ProfileElement::GenericFileManagement),
        unknown().prop_map(ProfileElement::Unknown),
    ]
}

fn profile() -> impl Strategy<Value = Profile> {
    (profile_header(), vec(middle_element(), 0..6), end()).prop_map(|(h, middle, e)| {
        let mut elements = vec![ProfileElement::Header(h)];
        elements.extend(middle);
        elements.push(ProfileElement::End(e));
        Profile { elements }
    })
}

/// Both directions for one PE type.
fn round_trip<T: DerCodec + PartialEq + std::fmt::Debug>(v: &T) -> Result<(), TestCaseError> {
    let der = v.to_der();
    let back = T::from_der(&der)
        .map_err(|e| TestCaseError::fail(format!("{e}: {}", hex::encode(&der))))?;
    prop_assert_eq!(&back, v);
    prop_assert_eq!(back.to_der(), der);
    Ok(())
}

proptest! {
    #![proptest_config(crate::common::props::config(128))]

    #[test]
    fn profile_header_round_trips(v in profile_header()) { round_trip(&v)?; }

    #[test]
    fn file_system_pes_round_trip(v in file_system()) { round_trip(&v)?; }

    #[test]
    fn pin_codes_round_trip(v in pin_codes()) { round_trip(&v)?; }

    #[test]
    fn puk_codes_round_trip(v in puk_codes()) { round_trip(&v)?; }

    #[test]
    fn aka_parameters_round_trip(v in aka()) { round_trip(&v)?; }

    #[test]
    fn security_domains_round_trip(v in security_domain()) { round_trip(&v)?; }

    #[test]
    fn generic_file_management_round_trips(v in gfm()) { round_trip(&v)?; }

    #[test]
    fn end_round_trips(v in end()) { round_trip(&v)?; }

    #[test]
    fn unknown_elements_survive(v in unknown()) {
        let der = v.raw().to_vec();
        let pe = ProfileElement::from_der(&der).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&pe, &ProfileElement::Unknown(v));
        prop_assert_eq!(pe.to_der(), der);
    }

    #[test]
    fn whole_packages_round_trip(p in profile()) {
        let der = p.encode();
        let back = Profile::decode(&der).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, &p);
        prop_assert_eq!(back.encode(), der);
    }
}

// ---------------------------------------------------------------------------
// Packages as received.

fn hexb(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).expect("hex")
}

/// A hand-written package: header, an MF with DEFAULT values spelled out
/// (`lcsi 05`), a cdmaParameter, an rfm, a USIM with an extension addition,
/// PIN codes with the DEFAULT attempts (51), a future CHOICE alternative
/// `[40]`, and End with an extension.
fn foreign_package() -> Vec<u8> {
    let mut w = Writer::new();
    // header
    w.constructed(Tag::context(0, true), |w| {
        w.tlv(Tag::context(0, false), &[2]);
        w.tlv(Tag::context(1, false), &[3]);
        w.tlv(
            Tag::context(3, false),
            &hexb("89 44 00 00 00 00 00 00 00 1F"),
        );
        w.constructed(Tag::context(5, true), |w| {
            w.tlv(Tag::context(1, false), &[])
        });
        w.constructed(Tag::context(6, true), |w| {
            w.tlv(Tag::OID, &hexb("67 81 0F 01 02 01"))
        });
    });
    // mf, with lcsi 05 (the DEFAULT) written out
    w.constructed(Tag::context(16, true), |w| {
        w.constructed(Tag::context(0, true), |w| {
            w.tlv(Tag::context(0, false), &[]);
            w.tlv(Tag::context(1, false), &[1]);
        });
        w.tlv(Tag::context(1, false), &hexb("67 81 0F 01 02 01"));
        w.constructed(Tag::context(2, true), |w| {
            w.constructed(Tag::context(1, true), |w| {
                w.tlv(Tag::context(10, false), &[5])
            });
        });
        for n in [4, 5, 6] {
            w.constructed(Tag::context(n, true), |w| {
                w.tlv(Tag::context(3, false), &[n as u8])
            });
        }
    });
    // cdmaParameter [5] and rfm [7]: not typed, kept whole
    w.raw(&tlv(
        5,
        true,
        &hexb("A0 03 81 01 02 80 08 01 02 03 04 05 06 07 08"),
    ));
    w.raw(&tlv(7, true, &hexb("A0 03 81 01 03 4F 05 A0 00 00 00 01")));
    // usim with an extension addition [30] after ef-epsnsc [25]
    w.constructed(Tag::context(19, true), |w| {
        w.constructed(Tag::context(0, true), |w| {
            w.tlv(Tag::context(1, false), &[4])
        });
        w.tlv(Tag::context(1, false), &hexb("67 81 0F 01 02 04"));
        for n in [2, 3, 4, 8, 13, 14, 18, 22] {
            w.constructed(Tag::context(n, true), |w| {
                w.tlv(Tag::context(3, false), &[n as u8])
            });
        }
        w.tlv(Tag::context(30, false), &hexb("DE AD"));
    });
    // pinCodes with maxNumOfAttemps-retryNumLeft 51 (the DEFAULT)
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
    // a future alternative [40]
    w.raw(&tlv(40, true, &hexb("80 01 00")));
    // end with an extension
    w.constructed(Tag::context(10, true), |w| {
        w.constructed(Tag::context(0, true), |w| {
            w.tlv(Tag::context(1, false), &[9])
        });
        w.tlv(Tag::context(1, false), &[0xAB]);
    });
    w.into_bytes()
}

#[test]
fn foreign_package_survives_unchanged() {
    let der = foreign_package();
    let p = Profile::decode(&der).expect("decodes");
    assert_eq!(p.encode(), der, "byte-identical re-encode");
    let names: Vec<_> = p.elements.iter().map(ProfileElement::name).collect();
    assert_eq!(
        names,
        [
            "header",
            "mf",
            "cdmaParameter",
            "rfm",
            "usim",
            "pinCodes",
            "extension",
            "end"
        ]
    );
    assert_eq!(p.iccid().expect("ICCID").as_str(), "8944000000000000001");
    let mf = p.file_system(FsKind::Mf).expect("mf");
    assert_eq!(
        mf.file("mf").and_then(File::fcp).and_then(|f| f.lcsi),
        Some(5)
    );
    let usim = p.file_system(FsKind::Usim).expect("usim");
    assert_eq!(usim.extensions, vec![hexb("9E 02 DE AD")]);
    assert_eq!(usim.file("ef-imsi").map(|f| f.content(0xFF)), Some(vec![3]));
    match &p.elements[5] {
        ProfileElement::PinCodes(PinCodes {
            codes: PinCodesChoice::Config(pins),
            ..
        }) => {
            assert_eq!(pins[0].attempts, Some(51));
            assert_eq!(pins[0].attributes, Some(7));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn shipped_template_package_round_trips() {
    use rand::SeedableRng;
    use smdpplus::ids::Iccid;
    use smdpplus::profile::params::Params;
    use smdpplus::profile::template::Template;
    let t = Template::load(std::path::Path::new("profiles/smdpplus-usim.toml")).expect("template");
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let params = Params::random(
        Iccid::with_check_digit("894400000000000001").expect("iccid"),
        ef::Imsi::parse("001010000000042").expect("imsi"),
        t.spn(),
        &mut rng,
    );
    let upp = t.personalize(&params).expect("personalize");
    let p = Profile::decode(&upp).expect("decode");
    assert_eq!(p.encode(), upp.as_slice());
    for kind in [FsKind::Mf, FsKind::Telecom, FsKind::Usim, FsKind::Isim] {
        let fs = p.file_system(kind).expect("present");
        assert!(fs.missing_mandatory().is_empty());
        let again = FileSystemPe::from_der(&fs.to_der()).expect("decode");
        assert_eq!(&again, fs);
    }
}
