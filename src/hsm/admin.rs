//! Putting keys on the token and looking at what it holds: the library side
//! of `smdpplus keys hsm-import` and `smdpplus keys hsm-list`.

use super::key::{class_name, find_one, read_public};
use super::{HsmError, KeyUri, Token, TokenKey};
use crate::crypto::ecdsa::{PublicKey, SigningKey};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What [`import_ec_key`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Imported {
    /// The key pair was created on the token.
    Created,
    /// The token already held this key under this label.
    AlreadyThere,
}

/// CKA_ID of an imported key: the first 16 bytes of SHA-256 of its public
/// point, so that the private and public objects pair by id as well.
pub fn key_id(public: &PublicKey) -> Vec<u8> {
    Sha256::digest(public.to_uncompressed())[..16].to_vec()
}

/// Creates the key pair of `key` on the token under `label`: a private key
/// object that is sensitive, never extractable and may only sign
/// (CKA_SENSITIVE, CKA_EXTRACTABLE false, CKA_SIGN; PKCS#11 private key attributes),
/// and its public key object (CKA_EC_POINT). A label that already holds
/// this key is left as it is; one that holds another key is an error.
pub fn import_ec_key(
    token: &Arc<Token>,
    label: &str,
    key: &SigningKey,
) -> Result<Imported, HsmError> {
    let uri = KeyUri::label(label);
    let public = key.public_key().clone();
    let key_err = |why: String| HsmError::Key {
        uri: uri.to_string(),
        why,
    };
    let scalar = key.secret_scalar().map_err(|e| key_err(e.to_string()))?;
    let curve = key.curve();
    let id = key_id(&public);
    let point = public.to_uncompressed().to_vec();
    let u = uri.clone();
    let outcome = token.with_session("import key", move |s, _| {
        if find_one(s, &u, ObjectClass::PRIVATE_KEY)?.is_ok() {
            let on_token = match find_one(s, &u, ObjectClass::PUBLIC_KEY)? {
                Ok(p) => read_public(s, p)?,
                Err(why) => Err(why),
            };
            return Ok(match on_token {
                Ok(p) if p == public => Ok(Imported::AlreadyThere),
                Ok(_) => Err("the token holds another key under this label".to_owned()),
                Err(why) => Err(format!(
                    "the token holds a private key under this label, and {why}"
                )),
            });
        }
        let common = |class: ObjectClass| {
            vec![
                Attribute::Class(class),
                Attribute::KeyType(KeyType::EC),
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.clone()),
                Attribute::EcParams(curve.ec_params_der().to_vec()),
            ]
        };
        let mut private = common(ObjectClass::PRIVATE_KEY);
        private.extend([
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Derive(false),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Value(scalar.to_vec()),
        ]);
        let created = s.create_object(&private);
        // The template's copy of the scalar is wiped whatever happened.
        for a in &mut private {
            if let Attribute::Value(v) = a {
                zeroize::Zeroize::zeroize(v);
            }
        }
        created?;
        // CKA_EC_POINT: the DER OCTET STRING of the uncompressed point.
        let mut der_point = vec![0x04, point.len() as u8];
        der_point.extend_from_slice(&point);
        let mut public_tpl = common(ObjectClass::PUBLIC_KEY);
        public_tpl.extend([
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcPoint(der_point),
        ]);
        s.create_object(&public_tpl)?;
        Ok(Ok(Imported::Created))
    })?;
    outcome.map_err(key_err)
}

/// One object on the token, as `keys hsm-list` shows it.
#[derive(Debug)]
pub struct TokenObject {
    /// `private key`, `public key`, `secret key`, `certificate` or `other`.
    pub class: &'static str,
    /// CKA_LABEL.
    pub label: String,
    /// CKA_ID.
    pub id: Vec<u8>,
    /// The public key of an EC public key object.
    pub public: Option<PublicKey>,
    /// CKA_SENSITIVE and CKA_EXTRACTABLE of a private or secret key.
    pub sensitive: Option<bool>,
    /// See [`TokenObject::sensitive`].
    pub extractable: Option<bool>,
}

/// Every object the token shows the logged-in user, ordered by label.
pub fn list_objects(token: &Arc<Token>) -> Result<Vec<TokenObject>, HsmError> {
    let mut out = token.with_session("list objects", |s, _| {
        let mut out = Vec::new();
        for h in s.find_objects(&[])? {
            let attrs = s.get_attributes(
                h,
                &[
                    AttributeType::Class,
                    AttributeType::Label,
                    AttributeType::Id,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                ],
            )?;
            let mut o = TokenObject {
                class: "other",
                label: String::new(),
                id: Vec::new(),
                public: None,
                sensitive: None,
                extractable: None,
            };
            let mut class = None;
            for a in attrs {
                match a {
                    Attribute::Class(c) => class = Some(c),
                    Attribute::Label(l) => o.label = String::from_utf8_lossy(&l).into_owned(),
                    Attribute::Id(i) => o.id = i,
                    Attribute::Sensitive(b) => o.sensitive = Some(b),
                    Attribute::Extractable(b) => o.extractable = Some(b),
                    _ => {}
                }
            }
            if let Some(c) = class {
                o.class = class_name(c);
                if c == ObjectClass::PUBLIC_KEY {
                    o.public = read_public(s, h)?.ok();
                }
            }
            out.push(o);
        }
        Ok(out)
    })?;
    out.sort_by(|a, b| (&a.label, a.class).cmp(&(&b.label, b.class)));
    Ok(out)
}

/// A key the configuration expects on the token.
#[derive(Debug)]
pub struct Expected {
    /// Where the configuration names it, e.g. `credentials[0].dpauth_key`.
    pub what: String,
    /// Its URI.
    pub uri: KeyUri,
    /// The public key of the certificate it serves.
    pub certificate_key: Option<PublicKey>,
}

/// How an expected key was found.
#[derive(Debug, PartialEq, Eq)]
pub enum Finding {
    /// On the token, matching its certificate, and a test signature
    /// verified.
    Ok,
    /// Not on the token (or not usable): why.
    Missing(String),
    /// On the token but not the certificate's key.
    Mismatch(String),
}

/// Checks each expected key as the server's start does: present, its
/// public key that of its certificate, a test signature that verifies.
pub fn check(token: &Arc<Token>, expected: &[Expected]) -> Vec<Finding> {
    expected
        .iter()
        .map(
            |e| match TokenKey::open(token, e.uri.clone(), e.certificate_key.as_ref()) {
                Ok(k) => match &e.certificate_key {
                    Some(c) if c != k.public_key() => Finding::Mismatch(format!(
                        "the token's public key ({}) is not the certificate's ({})",
                        k.public_key().curve(),
                        c.curve()
                    )),
                    _ => Finding::Ok,
                },
                Err(HsmError::Key { why, .. }) if why.contains("does not verify") => {
                    Finding::Mismatch(why)
                }
                Err(HsmError::Key { why, .. }) => Finding::Missing(why),
                Err(e) => Finding::Missing(e.to_string()),
            },
        )
        .collect()
}
