//! Keys on a PKCS#11 token (SoftHSM2): `keys hsm-import`, `keys hsm-list`
//! and the server's start-up check of every configured key. The downloads
//! signed on the token are in `es9plus_download`.

use crate::common::hsm::{sgp26, TestToken};
use crate::common::Server;

#[test]
fn hsm_list_names_missing_and_mismatched_keys_and_import_fills_them() {
    let Some(token) = TestToken::create("hsm_list") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let config = token.credentials_config(&dir.path().join("certs"));

    // An empty token: every configured key is named missing, exit 1.
    let (code, out, _) = token.keys(dir.path(), &config, &["hsm-list"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("on the token (0 objects)"), "{out}");
    for what in [
        "credentials[0].dpauth_key",
        "credentials[0].dppb_key",
        "credentials[1].dpauth_key",
        "credentials[1].dppb_key",
    ] {
        assert!(
            out.lines().any(|l| l.contains("MISSING")
                && l.contains(what)
                && l.contains("no private key object")),
            "{what} not named missing:\n{out}"
        );
    }

    // The SGP.26 keys go on, once: a second import leaves them.
    token.import_sgp26(dir.path());
    let (code, out, err) = token.keys(dir.path(), &token.hsm_section(), &["hsm-import"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("is already on token").count(), 4, "{out}");
    assert!(!out.contains("imported "), "{out}");

    // Now every configured key is there, matches its certificate and signs.
    let (code, out, _) = token.keys(dir.path(), &config, &["hsm-list"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("on the token (8 objects)"), "{out}");
    assert_eq!(
        out.matches("sensitive, not extractable").count(),
        4,
        "{out}"
    );
    assert_eq!(out.matches("brainpoolP256r1").count(), 2, "{out}");
    assert_eq!(
        out.lines()
            .filter(|l| l.trim_start().starts_with("ok "))
            .count(),
        4,
        "{out}"
    );

    // A key that is not the certificate's is named a mismatch.
    let other = sgp26("DPauth/SK_S_SM_DP2auth_ECDSA_NIST.pem");
    let arg = format!("other-nist={}", other.display());
    let (code, out, err) = token.keys(
        dir.path(),
        &token.hsm_section(),
        &["hsm-import", "--key", &arg],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("imported pkcs11:object=other-nist (NIST P-256"),
        "{out}"
    );
    let wrong = config.replacen("pkcs11:object=dpauth-nist", "pkcs11:object=other-nist", 1);
    let (code, out, _) = token.keys(dir.path(), &wrong, &["hsm-list"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("MISMATCH") && l.contains("credentials[0].dpauth_key")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("unused") && l.contains("\"dpauth-nist\"")),
        "the key the config no longer names is listed unused:\n{out}"
    );

    // A label that holds another key is not overwritten.
    let arg = format!("dpauth-nist={}", other.display());
    let (code, _, err) = token.keys(
        dir.path(),
        &token.hsm_section(),
        &["hsm-import", "--key", &arg],
    );
    assert_ne!(code, 0);
    assert!(err.contains("another key under this label"), "{err}");
}

#[test]
fn hsm_commands_take_the_pin_from_a_file_or_the_environment_only() {
    let Some(token) = TestToken::create("hsm_pin") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    // No pin_file and no SMDPPLUS_HSM_PIN: refused with what to do.
    let no_pin = token
        .hsm_section()
        .lines()
        .filter(|l| !l.starts_with("pin_file"))
        .collect::<Vec<_>>()
        .join("\n");
    let (code, _, err) = token.keys(dir.path(), &no_pin, &["hsm-list"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no PIN") && err.contains("SMDPPLUS_HSM_PIN"),
        "{err}"
    );
    // A wrong PIN: the login fails, and the PIN is not shown.
    let bad = dir.path().join("bad-pin");
    std::fs::write(&bad, "99999999\n").expect("pin");
    let wrong = token.hsm_section().replace(
        &token.pin_file.display().to_string(),
        &bad.display().to_string(),
    );
    let (code, _, err) = token.keys(dir.path(), &wrong, &["hsm-list"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("login to token") && err.contains("PIN is incorrect"),
        "{err}"
    );
    assert!(!err.contains("99999999"), "{err}");
    // No --pin flag exists.
    let (code, _, err) = token.keys(
        dir.path(),
        &token.hsm_section(),
        &["hsm-list", "--pin", "1"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("unexpected argument"), "{err}");
}

#[test]
fn the_server_does_not_start_half_configured() {
    let Some(token) = TestToken::create("hsm_start") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    token.import_sgp26(dir.path());
    let config = token.credentials_config(&dir.path().join("certs"));
    let start = |n: &str, config: &str| {
        Server::try_start_with_env(
            &dir.path().join(n),
            Some(&format!("seed_demo_profiles = 0\n{config}")),
            &[],
        )
    };
    // A key the token lacks.
    let missing = config.replace("pkcs11:object=dppb-brp", "pkcs11:object=dppb-gone");
    let log = start("missing", &missing).err().expect("refused");
    assert!(
        log.contains("credentials[1].dppb_key")
            && log.contains("pkcs11:object=dppb-gone")
            && log.contains("no private key object"),
        "{log}"
    );
    assert!(!log.contains("ready es9="), "{log}");
    // A key that is not its certificate's (the brainpool DPpb key for the
    // NIST certificate).
    let swapped = config.replacen("pkcs11:object=dppb-nist", "pkcs11:object=dppb-brp", 1);
    let log = start("swapped", &swapped).err().expect("refused");
    assert!(
        log.contains("credentials[0].dppb_key") && log.contains("does not match the certificate"),
        "{log}"
    );
    // A URI without an [hsm] section.
    let no_hsm = config.replace(&token.hsm_section(), "");
    let log = start("nohsm", &no_hsm).err().expect("refused");
    assert!(log.contains("there is no [hsm] section"), "{log}");
    // A token that does not exist.
    let other = config.replace(&format!("\"{}\"", token.label), "\"no-such-token\"");
    let log = start("notoken", &other).err().expect("refused");
    assert!(log.contains("no token labelled \"no-such-token\""), "{log}");
    // And all present: it starts, having checked all four.
    let server = start("ok", &config).expect("starts");
    assert!(server.log().contains("keys=4"), "{}", server.log());
}

/// The master key on the token, through the library: a PPK wrapped there
/// unwraps only with its context and untouched; a key generated there is
/// sensitive and never extractable.
#[test]
fn the_master_key_on_the_token_wraps_with_aes_gcm() {
    let Some(token) = TestToken::create("hsm_master") else {
        return;
    };
    let config: smdpplus::hsm::HsmConfig =
        toml::from_str(&token.hsm_section().replace("[hsm]\n", "")).expect("[hsm]");
    let t = smdpplus::hsm::Token::open(&config).expect("token");
    let key = smdpplus::hsm::master::generate(&t, "m", 7).expect("generate");
    assert_eq!(key.label(), "m-7");
    let ppk = [0x42u8; 48];
    let w = key.wrap(&ppk, b"8999900000000000006").expect("wrap");
    assert_eq!(w.len(), 12 + 48 + 16, "nonce || ciphertext || tag");
    assert!(!w.windows(8).any(|x| x == [0x42; 8]), "no PPK in clear");
    assert_eq!(
        key.unwrap(&w, b"8999900000000000006")
            .expect("unwrap")
            .as_slice(),
        &ppk
    );
    // Another profile's context, a flipped bit: refused as Unwrap.
    assert!(matches!(
        key.unwrap(&w, b"8999900000000000014"),
        Err(smdpplus::profile::protect::ProtectError::Unwrap)
    ));
    let mut bad = w.clone();
    bad[20] ^= 1;
    assert!(matches!(
        key.unwrap(&bad, b"8999900000000000006"),
        Err(smdpplus::profile::protect::ProtectError::Unwrap)
    ));
    // Two wraps of one PPK differ (a fresh nonce each).
    assert_ne!(
        key.wrap(&ppk, b"x").expect("wrap"),
        key.wrap(&ppk, b"x").expect("wrap")
    );
    // On the token: a secret key, sensitive, not extractable.
    let objects = smdpplus::hsm::admin::list_objects(&t).expect("list");
    let o = objects
        .iter()
        .find(|o| o.label == "m-7")
        .expect("m-7 on the token");
    assert_eq!(o.class, "secret key");
    assert_eq!((o.sensitive, o.extractable), (Some(true), Some(false)));
    assert_eq!(
        smdpplus::hsm::master::list(&t, "m")
            .expect("list")
            .iter()
            .map(|k| k.id())
            .collect::<Vec<_>>(),
        vec![7]
    );
}
