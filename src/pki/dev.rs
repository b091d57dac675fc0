//! The dev PKI written to `<data-dir>/pki/` at first start.
//!
//! - `dptls.{crt,key}`: the TLS server certificate for the SM-DP+ address,
//!   issued by the SGP.26 test CI (NIST P-256) with the DPtls role policy
//!   (SGP.22 §4.5.2.1.0.3, OID 2.23.146.1.2.1.3), so test eUICCs and LPAs
//!   that trust the test CI accept it. It is also the client certificate the
//!   SM-DP+ presents when it calls the operator (ES2+ handleDownloadProgressInfo).
//! - `ci.crt`: the SGP.26 test CI certificate, the trust anchor for the above.
//! - `operator-ca.{crt,key}`: a dev operator CA.
//! - `operator-client.{crt,key}`: a client certificate for the dev operator,
//!   whose common name is the operator id (the ES2+ functionRequesterIdentifier).

use super::PkiError;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fs;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The SGP.26 test CI certificate (NIST P-256), shipped in `certs/sgp26/CI`.
pub const SGP26_CI_CERT_PEM: &str = include_str!("../../certs/sgp26/CI/CERT_CI_ECDSA_NIST.pem");
/// The SGP.26 test CI private key. Published test material: never trust it
/// outside a test setup.
const SGP26_CI_KEY_PEM: &str = include_str!("../../certs/sgp26/CI/SK_CI_ECDSA_NIST.pem");

/// OID of the DPtls role policy (SGP.22 §4.5.2.1.0.3).
const OID_DPTLS_POLICY: &[u64] = &[2, 23, 146, 1, 2, 1, 3];
/// OID id-ce-certificatePolicies.
const OID_CERTIFICATE_POLICIES: &[u64] = &[2, 5, 29, 32];

/// Paths of the dev PKI files.
#[derive(Clone, Debug)]
pub struct DevPki {
    /// TLS server certificate (chain: leaf).
    pub tls_cert: PathBuf,
    /// TLS server key.
    pub tls_key: PathBuf,
    /// Trust anchor for `tls_cert`.
    pub ci_cert: PathBuf,
    /// Operator CA certificate.
    pub operator_ca: PathBuf,
    /// Operator client certificate.
    pub operator_client_cert: PathBuf,
    /// Operator client key.
    pub operator_client_key: PathBuf,
}

impl DevPki {
    /// The file paths under `<data-dir>/pki`.
    pub fn paths(data_dir: &Path) -> DevPki {
        let d = data_dir.join("pki");
        DevPki {
            tls_cert: d.join("dptls.crt"),
            tls_key: d.join("dptls.key"),
            ci_cert: d.join("ci.crt"),
            operator_ca: d.join("operator-ca.crt"),
            operator_client_cert: d.join("operator-client.crt"),
            operator_client_key: d.join("operator-client.key"),
        }
    }
}

fn write_secret(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

fn dptls_policy_extension() -> CustomExtension {
    // certificatePolicies ::= SEQUENCE OF PolicyInformation { policyIdentifier }
    let oid = der_oid(OID_DPTLS_POLICY);
    let info = der_tlv(0x30, &oid);
    // Not critical: webpki (rustls) refuses unknown critical extensions in
    // an end-entity certificate, and our own CLI and tests use rustls.
    CustomExtension::from_oid_content(OID_CERTIFICATE_POLICIES, der_tlv(0x30, &info))
}

fn der_oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = vec![(arcs[0] * 40 + arcs[1]) as u8];
    for &a in &arcs[2..] {
        let mut tmp = vec![(a & 0x7f) as u8];
        let mut v = a >> 7;
        while v > 0 {
            tmp.push(((v & 0x7f) as u8) | 0x80);
            v >>= 7;
        }
        tmp.reverse();
        body.extend(tmp);
    }
    der_tlv(0x06, &body)
}

fn der_tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    if body.len() < 0x80 {
        out.push(body.len() as u8);
    } else {
        let len = body.len().to_be_bytes();
        let skip = len.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (len.len() - skip) as u8);
        out.extend_from_slice(&len[skip..]);
    }
    out.extend_from_slice(body);
    out
}

fn key_from_pem(pem: &str) -> Result<KeyPair, PkiError> {
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::File {
        path: "embedded SGP.26 CI key".into(),
        why: e.to_string(),
    })?;
    Ok(KeyPair::from_der_and_sign_algo(
        &der,
        &PKCS_ECDSA_P256_SHA256,
    )?)
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

/// Creates the dev PKI under `<data-dir>/pki` where it is missing, and
/// re-issues the TLS certificate when it does not name `smdp_address`.
/// Returns the paths and whether anything was created.
pub fn ensure(
    data_dir: &Path,
    smdp_address: &str,
    operator_id: &str,
) -> Result<(DevPki, bool), PkiError> {
    let p = DevPki::paths(data_dir);
    fs::create_dir_all(data_dir.join("pki"))?;
    let mut created = false;
    if !(p.tls_cert.exists()
        && p.tls_key.exists()
        && p.ci_cert.exists()
        && names(&p.tls_cert, smdp_address))
    {
        make_dptls(&p, smdp_address)?;
        created = true;
    }
    let ca_key = data_dir.join("pki").join("operator-ca.key");
    if ![
        &p.operator_ca,
        &ca_key,
        &p.operator_client_cert,
        &p.operator_client_key,
    ]
    .iter()
    .all(|f| f.exists())
    {
        make_operator(&p, &ca_key, operator_id)?;
        created = true;
    }
    Ok((p, created))
}

/// Whether the certificate in `path` has `name` among its DNS or IP SANs.
fn names(path: &Path, name: &str) -> bool {
    let Ok(certs) = super::load_certs(path) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&certs[0]) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value.general_names.iter().any(|g| match g {
        x509_parser::extensions::GeneralName::DNSName(d) => d.eq_ignore_ascii_case(name),
        x509_parser::extensions::GeneralName::IPAddress(ip) => {
            match name.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(v4)) => *ip == v4.octets().as_slice(),
                Ok(std::net::IpAddr::V6(v6)) => *ip == v6.octets().as_slice(),
                Err(_) => false,
            }
        }
        _ => false,
    })
}

/// DPtls for `smdp_address` (plus localhost), issued by the SGP.26 test CI.
fn make_dptls(p: &DevPki, smdp_address: &str) -> Result<(), PkiError> {
    let ci_cert = CertificateDer::from_pem_slice(SGP26_CI_CERT_PEM.as_bytes()).map_err(|e| {
        PkiError::File {
            path: "embedded SGP.26 CI cert".into(),
            why: e.to_string(),
        }
    })?;
    let ci = Issuer::from_ca_cert_der(&ci_cert, key_from_pem(SGP26_CI_KEY_PEM)?)?;
    let mut names = vec![smdp_address.to_owned()];
    for extra in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(extra)) {
            names.push(extra.to_owned());
        }
    }
    let mut params = CertificateParams::default();
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("smdpplus dev {smdp_address}"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "RSPTEST");
    params.distinguished_name.push(DnType::CountryName, "IT");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.custom_extensions = vec![dptls_policy_extension()];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, 365);
    let tls_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let tls_cert = params.signed_by(&tls_key, &ci)?;
    fs::write(&p.tls_cert, tls_cert.pem())?;
    write_secret(&p.tls_key, &tls_key.serialize_pem())?;
    fs::write(&p.ci_cert, SGP26_CI_CERT_PEM)?;
    Ok(())
}

/// The dev operator CA and the operator's client certificate (CN = operator id).
fn make_operator(p: &DevPki, ca_key_path: &Path, operator_id: &str) -> Result<(), PkiError> {
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "smdpplus dev operator CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca_params, 3650);
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca = Issuer::new(ca_params, &ca_key);

    let mut op_params = CertificateParams::default();
    op_params
        .distinguished_name
        .push(DnType::CommonName, operator_id);
    op_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    op_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    op_params.use_authority_key_identifier_extension = true;
    validity(&mut op_params, 365);
    let op_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let op_cert = op_params.signed_by(&op_key, &ca)?;
    fs::write(&p.operator_ca, ca_cert.pem())?;
    write_secret(ca_key_path, &ca_key.serialize_pem())?;
    fs::write(&p.operator_client_cert, op_cert.pem())?;
    write_secret(&p.operator_client_key, &op_key.serialize_pem())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dptls_chains_to_the_sgp26_ci() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (p, created) = ensure(dir.path(), "smdp.example.com", "op-1").expect("dev pki");
        assert!(created);
        let leaf = super::super::load_certs(&p.tls_cert).expect("leaf");
        let ci = CertificateDer::from_pem_slice(SGP26_CI_CERT_PEM.as_bytes()).expect("ci");
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf[0]).expect("parse leaf");
        let (_, ci) = x509_parser::parse_x509_certificate(&ci).expect("parse ci");
        assert_eq!(
            leaf.issuer().as_raw(),
            ci.subject().as_raw(),
            "issuer DN must be byte-identical"
        );
        leaf.verify_signature(Some(ci.public_key()))
            .expect("signed by the CI");
        let op = super::super::load_certs(&p.operator_client_cert).expect("op cert");
        assert_eq!(super::super::common_name(&op[0]).as_deref(), Some("op-1"));
        let (_, again) = ensure(dir.path(), "smdp.example.com", "op-1").expect("second call");
        assert!(!again, "second start reuses the files");
        let ca_before = std::fs::read(&p.operator_ca).expect("ca");
        let (_, renamed) = ensure(dir.path(), "rsp.example.org", "op-1").expect("new address");
        assert!(
            renamed,
            "a new SM-DP+ address re-issues the TLS certificate"
        );
        assert!(names(&p.tls_cert, "rsp.example.org") && names(&p.tls_cert, "127.0.0.1"));
        assert_eq!(
            std::fs::read(&p.operator_ca).expect("ca"),
            ca_before,
            "the operator CA is kept"
        );
    }
}
