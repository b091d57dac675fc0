//! Who may call the GetBalance listener ([MP-Account] "Auth"):
//! - GetBalance itself: Microsoft's service, by a client certificate
//!   chaining to `client_ca` with the configured subject (`auth = "mtls"`),
//!   or by basic authentication (`auth = "basic"`). A missing or expired
//!   certificate and bad basic credentials are 401, an untrusted
//!   certificate (another CA, another subject) is 403;
//! - usage reports: the operator's own systems, by the same operator client
//!   certificate as ES2+ (chaining to `operator_ca`, CN a configured
//!   operator).
//!
//! The TLS layer accepts any certificate on this listener
//! ([`crate::http::tls::getbalance_server`]); the chain is checked here.

use crate::config::{Config, GetBalanceAuth};
use crate::http::tls;
use base64::Engine;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::CertificateError;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::Arc;

/// Why a caller is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// 401: no credentials, an expired certificate or wrong basic credentials.
    Unauthorized(String),
    /// 403: a certificate that is not trusted for this API.
    Forbidden(String),
}

/// One RDN attribute: short name (upper-case) and value.
type Attribute = (String, String);

/// The short names of the attribute types a subject usually has (X.520).
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.5" => "SERIALNUMBER",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "EMAILADDRESS",
        _ => return None,
    })
}

/// Parses `C=US, ST=WA, ..., CN=...` into sorted attributes; `None` for a
/// part without `=`. Values may not contain commas.
pub fn parse_subject(s: &str) -> Option<Vec<Attribute>> {
    let mut v: Vec<Attribute> = s
        .split(',')
        .map(|part| {
            let (k, val) = part.split_once('=')?;
            Some((k.trim().to_ascii_uppercase(), val.trim().to_owned()))
        })
        .collect::<Option<_>>()?;
    v.sort();
    Some(v)
}

/// A certificate's subject as sorted attributes (unknown types by OID).
pub fn cert_subject(cert: &[u8]) -> Option<Vec<Attribute>> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    let mut v: Vec<Attribute> = c
        .subject()
        .iter_attributes()
        .map(|a| {
            let oid = a.attr_type().to_id_string();
            let name = short_name(&oid).map(str::to_owned).unwrap_or(oid);
            Some((name, a.as_str().ok()?.trim().to_owned()))
        })
        .collect::<Option<_>>()?;
    v.sort();
    Some(v)
}

/// The checks of the GetBalance listener, built once from the config.
pub struct Authenticator {
    mode: GetBalanceAuth,
    caller_ca: Arc<dyn ClientCertVerifier>,
    subject: Vec<Attribute>,
    basic: Option<(String, [u8; 32])>,
    operator_ca: Arc<dyn ClientCertVerifier>,
    operators: HashSet<String>,
}

fn verify(v: &dyn ClientCertVerifier, chain: &[CertificateDer<'static>]) -> Result<(), Denied> {
    let Some((leaf, rest)) = chain.split_first() else {
        return Err(Denied::Unauthorized(
            "a client certificate is required".into(),
        ));
    };
    match v.verify_client_cert(leaf, rest, UnixTime::now()) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => Err(Denied::Unauthorized(
            "the client certificate has expired".into(),
        )),
        Err(e) => Err(Denied::Forbidden(format!(
            "the client certificate is not trusted: {e}"
        ))),
    }
}

impl Authenticator {
    /// Loads the CAs and checks the settings of the chosen mode.
    pub fn from_config(c: &Config) -> Result<Authenticator, String> {
        let g = &c.getbalance;
        let cas: Vec<&std::path::Path> =
            g.client_ca.iter().flatten().map(|p| p.as_path()).collect();
        let caller_ca =
            tls::client_cert_verifier(&cas).map_err(|e| format!("getbalance.client_ca: {e}"))?;
        let subject = parse_subject(&g.client_subject)
            .filter(|s| !s.is_empty())
            .ok_or("getbalance.client_subject must read like C=US, O=..., CN=...")?;
        let basic = match (&g.basic_user, &g.basic_password_sha256) {
            (Some(u), Some(h)) => {
                let hash: [u8; 32] = hex::decode(h.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or("getbalance.basic_password_sha256 must be 64 hex digits")?;
                Some((u.clone(), hash))
            }
            (None, None) => None,
            _ => return Err("getbalance.basic_user and basic_password_sha256 go together".into()),
        };
        if g.auth == GetBalanceAuth::Basic && basic.is_none() {
            return Err(
                "getbalance.auth = \"basic\" needs basic_user and basic_password_sha256".into(),
            );
        }
        let ops: Vec<&std::path::Path> = c.operator_ca.iter().map(|p| p.as_path()).collect();
        let operator_ca =
            tls::client_cert_verifier(&ops).map_err(|e| format!("operator_ca: {e}"))?;
        Ok(Authenticator {
            mode: g.auth,
            caller_ca,
            subject,
            basic,
            operator_ca,
            operators: c.operators.iter().map(|o| o.id.clone()).collect(),
        })
    }

    /// Checks a GetBalance caller: the certificate or the basic
    /// credentials, per the configured mode.
    pub fn caller(
        &self,
        chain: &[CertificateDer<'static>],
        authorization: Option<&str>,
    ) -> Result<(), Denied> {
        match self.mode {
            GetBalanceAuth::Mtls => {
                verify(self.caller_ca.as_ref(), chain)?;
                let leaf = chain.first().map(|c| c.as_ref()).unwrap_or_default();
                match cert_subject(leaf) {
                    Some(s) if s == self.subject => Ok(()),
                    _ => Err(Denied::Forbidden(
                        "the client certificate's subject is not the expected one".into(),
                    )),
                }
            }
            GetBalanceAuth::Basic => self.basic_ok(authorization),
        }
    }

    fn basic_ok(&self, authorization: Option<&str>) -> Result<(), Denied> {
        let denied = || Denied::Unauthorized("basic authentication failed".into());
        let Some((user, hash)) = &self.basic else {
            return Err(denied());
        };
        let given = authorization
            .and_then(|a| {
                let (scheme, rest) = a.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
            })
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .and_then(|raw| String::from_utf8(raw).ok())
            .ok_or_else(denied)?;
        let (u, p) = given.split_once(':').ok_or_else(denied)?;
        let h: [u8; 32] = Sha256::digest(p.as_bytes()).into();
        // Compare every byte whatever the first difference (no early exit).
        let diff = h
            .iter()
            .zip(hash.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if u == user && diff == 0 {
            Ok(())
        } else {
            Err(denied())
        }
    }

    /// Checks a usage reporter: an operator client certificate; returns the
    /// operator id.
    pub fn operator(&self, chain: &[CertificateDer<'static>]) -> Result<String, Denied> {
        verify(self.operator_ca.as_ref(), chain)?;
        let cn = chain
            .first()
            .and_then(|c| crate::pki::common_name(c))
            .filter(|cn| self.operators.contains(cn));
        cn.ok_or_else(|| {
            Denied::Forbidden("the client certificate does not name a configured operator".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_compare_whatever_the_order_and_spacing() {
        let a = parse_subject(crate::config::MICROSOFT_GETBALANCE_SUBJECT).expect("subject");
        let b = parse_subject(
            "cn=partners.datamart.windows.com,O=Microsoft Corporation,L=Redmond,ST=WA,C=US",
        )
        .expect("subject");
        assert_eq!(a, b);
        assert!(parse_subject("CN=x, nonsense").is_none());
    }
}
