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
    // The TLS keys, against the leaf of their PEM chains.
    for (what, cert, key) in [
        ("tls_key", &config.tls_cert, &config.tls_key),
        (
            "[mobile_plans] tls_key",
            &config.mobile_plans.tls_cert,
            &config.mobile_plans.tls_key,
        ),
        (
            "[getbalance] tls_key",
            &config.getbalance.tls_cert,
            &config.getbalance.tls_key,
        ),
    ] {
        let (Some(cert), Some(text)) = (
            cert,
            key.as_ref()
                .and_then(|k| k.to_str())
                .filter(|t| t.starts_with(crate::hsm::uri::SCHEME)),
        ) else {
            continue;
        };
        let uri = KeyUri::parse(text).map_err(|e| format!("{what}: {e}"))?;
        let leaf = crate::pki::load_certs(cert)
            .map_err(|e| e.to_string())?
            .into_iter()
            .next()
            .ok_or_else(|| format!("{}: no certificate", cert.display()))?;
        let certificate_key = Some(
            PublicKey::from_certificate_der(&leaf)
                .map_err(|e| format!("{}: {e}", cert.display()))?,
        );
        out.push(Expected {
            what: what.to_owned(),
            uri,
            certificate_key,
        });
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
    let prefix = config.hsm.as_ref().and_then(|h| h.master_key_label.clone());
    if let Some(prefix) = &prefix {
        let keys = crate::hsm::master::list(&token, prefix).map_err(|e| e.to_string())?;
        match keys.last() {
            None => {
                bad += 1;
                println!("  MISSING   master key                 no AES key labelled {prefix}-<id> (the server makes key 0 at its first start)");
            }
            Some(current) => {
                for k in &keys {
                    let note = if k.id() == current.id() {
                        "current"
                    } else {
                        "retiring"
                    };
                    println!(
                        "  ok        master key {:<16} {:?} ({note})",
                        k.id(),
                        k.label()
                    );
                }
            }
        }
    }
    let named: Vec<&str> = expected
        .iter()
        .filter_map(|e| e.uri.object.as_deref())
        .collect();
    let is_master = |l: &str| {
        prefix.as_ref().is_some_and(|p| {
            l.strip_prefix(p.as_str())
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
    };
    let mut unused: Vec<&str> = objects
        .iter()
        .filter(|o| o.class == "private key" || o.class == "secret key")
        .map(|o| o.label.as_str())
        .filter(|l| !named.contains(l) && !is_master(l))
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

/// `keys rotate-master` with `[hsm] master_key_label`: a new AES-256 key
/// generated on the token becomes current; the running server (or, when
/// none runs, this command) re-wraps every stored secret under it, then
/// the old keys are retired (destroyed on the token, removed from the key
/// file).
pub(super) async fn rotate_master(config: &Config, timeout_secs: u64) -> Result<ExitCode, String> {
    use crate::hsm::master;
    let hsm = config.hsm.as_ref().ok_or("no [hsm] section")?;
    let prefix = hsm
        .master_key_label
        .as_deref()
        .ok_or("no [hsm] master_key_label")?;
    let token = Token::open(hsm).map_err(|e| e.to_string())?;
    let (mut ring, _) = master::configured_ring(config, Some(&token))?;
    let id = ring.current_id().saturating_add(1);
    let key = master::generate(&token, prefix, id).map_err(|e| e.to_string())?;
    println!(
        "generated master key {id} ({:?}) on token {:?}: AES-256, sensitive, not extractable",
        key.label(),
        token.label()
    );
    if let Some(pid) = super::server_running(&config.data_dir) {
        return super::rewrap_online(&pid, id, " on the token", timeout_secs, || {
            master::configured_ring(config, Some(&token))
                .ok()
                .map(|(r, _)| r.ids())
        })
        .await;
    }
    ring.push_token_key(key);
    let store = crate::store::Store::open_configured(config, true).map_err(|e| e.to_string())?;
    let n =
        crate::profile::rotate::rewrap_all(&store, &ring, |_, _| {}).map_err(|e| e.to_string())?;
    store.flush_blocking().map_err(|e| e.to_string())?;
    ring.retire_old(&config.master_key_file)
        .map_err(|e| e.to_string())?;
    println!("master key {id} is current (on the token); {n} stored secrets re-wrapped; the old keys are retired");
    Ok(ExitCode::SUCCESS)
}
