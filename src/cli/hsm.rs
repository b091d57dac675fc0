//! `smdpplus keys hsm-import` and `smdpplus keys hsm-list`: keys on the
//! PKCS#11 token of the configuration's `[hsm]` section.

use crate::config::{Config, FileConfig, Overrides};
use crate::crypto::ecdsa::{PublicKey, SigningKey};
use crate::hsm::admin::{self, Expected, Finding, Imported};
use crate::hsm::{KeyUri, Token};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// The SGP.26 TEST SM-DP+ keys and the labels `hsm-import` gives them.
const SGP26_KEYS: [(&str, &str); 4] = [
    (
        "dpauth-nist",
        include_str!("../../certs/sgp26/DPauth/SK_S_SM_DPauth_ECDSA_NIST.pem"),
    ),
    (
        "dppb-nist",
        include_str!("../../certs/sgp26/DPpb/SK_S_SM_DPpb_ECDSA_NIST.pem"),
    ),
    (
        "dpauth-brp",
        include_str!("../../certs/sgp26/DPauth/SK_S_SM_DPauth_ECDSA_BRP.pem"),
    ),
    (
        "dppb-brp",
        include_str!("../../certs/sgp26/DPpb/SK_S_SM_DPpb_ECDSA_BRP.pem"),
    ),
];

fn open(config_file: &Path) -> Result<(Config, Arc<Token>), String> {
    let config = Config::resolve(FileConfig::load(config_file)?, Overrides::default());
    let hsm = config
        .hsm
        .clone()
        .ok_or_else(|| format!("{}: no [hsm] section", config_file.display()))?;
    let token = Token::open(&hsm).map_err(|e| e.to_string())?;
    Ok((config, token))
}

/// `keys hsm-import`.
pub(super) fn import(config_file: &Path, keys: &[String]) -> Result<ExitCode, String> {
    let (_, token) = open(config_file)?;
    let mut todo: Vec<(String, SigningKey, String)> = Vec::new();
    if keys.is_empty() {
        for (label, pem) in SGP26_KEYS {
            let key = SigningKey::from_pem(pem).map_err(|e| format!("{label}: {e}"))?;
            todo.push((label.to_owned(), key, "SGP.26 test key".to_owned()));
        }
    } else {
        for k in keys {
            let (label, file) = k
                .split_once('=')
                .filter(|(l, f)| !l.is_empty() && !f.is_empty())
                .ok_or_else(|| format!("--key {k}: expected LABEL=FILE"))?;
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(file).map_err(|e| format!("--key {label}: {file}: {e}"))?,
            );
            let key = SigningKey::from_any_pem(&text).map_err(|e| format!("--key {label}: {e}"))?;
            todo.push((label.to_owned(), key, file.to_owned()));
        }
    }
    for (label, key, from) in &todo {
        let outcome = admin::import_ec_key(&token, label, key).map_err(|e| e.to_string())?;
        let uri = KeyUri::label(label);
        match outcome {
            Imported::Created => println!(
                "imported {uri} ({}, from {from}) onto token {:?}",
                key.curve(),
                token.label()
            ),
            Imported::AlreadyThere => println!(
                "{uri} ({}) is already on token {:?}",
                key.curve(),
                token.label()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The keys the configuration names on the token, with the public key of
/// the certificate each serves.
fn expected(config: &Config) -> Result<Vec<Expected>, String> {
    let mut out = Vec::new();
    for (i, c) in config.credentials.iter().enumerate() {
        for (field, key, cert) in [
            ("dpauth_key", &c.dpauth_key, &c.dpauth_cert),
            ("dppb_key", &c.dppb_key, &c.dppb_cert),
        ] {
            let Some(text) = key
                .to_str()
                .filter(|t| t.starts_with(crate::hsm::uri::SCHEME))
            else {
                continue;
            };
            let what = format!("credentials[{i}].{field}");
            let uri = KeyUri::parse(text).map_err(|e| format!("{what}: {e}"))?;
            let der = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
            let certificate_key = Some(
                PublicKey::from_certificate_der(&der)
                    .map_err(|e| format!("{}: {e}", cert.display()))?,
            );
            out.push(Expected {
                what,
                uri,
                certificate_key,
            });
        }
    }
    Ok(out)
}

/// `keys hsm-list`.
pub(super) fn list(config_file: &Path) -> Result<ExitCode, String> {
    let (config, token) = open(config_file)?;
    let objects = admin::list_objects(&token).map_err(|e| e.to_string())?;
    let module = config
        .hsm
        .as_ref()
        .map(|h| h.module.display().to_string())
        .unwrap_or_default();
    println!("token {:?} (module {module})", token.label());
    println!("on the token ({} objects):", objects.len());
    for o in &objects {
        let mut notes = Vec::new();
        if let Some(p) = &o.public {
            notes.push(p.curve().to_string());
        }
        match (o.sensitive, o.extractable) {
            (Some(true), Some(false)) => notes.push("sensitive, not extractable".into()),
            (Some(s), Some(e)) => notes.push(format!("sensitive={s}, extractable={e}")),
            _ => {}
        }
        println!(
            "  {:<12} {:<20} id {:<32} {}",
            o.class,
            format!("{:?}", o.label),
            hex::encode(&o.id),
            notes.join("; ")
        );
    }
    let expected = expected(&config)?;
    let findings = admin::check(&token, &expected);
    println!("expected by the configuration ({} keys):", expected.len());
    let mut bad = 0;
    for (e, f) in expected.iter().zip(&findings) {
        match f {
            Finding::Ok => println!(
                "  ok        {:<26} {} (matches its certificate; a test signature verifies)",
                e.what, e.uri
            ),
            Finding::Missing(why) => {
                bad += 1;
                println!("  MISSING   {:<26} {}: {why}", e.what, e.uri)
            }
            Finding::Mismatch(why) => {
                bad += 1;
                println!("  MISMATCH  {:<26} {}: {why}", e.what, e.uri)
            }
        }
    }
    let named: Vec<&str> = expected
        .iter()
        .filter_map(|e| e.uri.object.as_deref())
        .collect();
    let mut unused: Vec<&str> = objects
        .iter()
        .filter(|o| o.class == "private key" || o.class == "secret key")
        .map(|o| o.label.as_str())
        .filter(|l| !named.contains(l))
        .collect();
    unused.dedup();
    for l in unused {
        println!("  unused    {l:?} (a key on the token that the configuration does not name)");
    }
    if bad > 0 {
        println!("{bad} configured key(s) missing or not matching");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
