//! Per-listener TLS certificates: the operator-web listener (the portal the
//! Mobile Plans app opens) and the GetBalance listener present their own
//! configured chains, while ES9+ keeps the SM-DP+ DPtls certificate; a
//! half-given certificate stops the start with a clear message.

use crate::common::hsm::TestToken;
use crate::common::Server;
use hyper::Method;
use smdpplus::http::client::Client;
use smdpplus::http::tls;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A CA and a `localhost` server certificate it issued, written as PEM
/// files `<name>-ca.crt`, `<name>.crt`, `<name>.key`.
fn issue(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let key = KeyPair::generate().expect("leaf key");
    let mut leaf =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("leaf");
    leaf.distinguished_name
        .push(DnType::CommonName, format!("{name}.localhost"));
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
    let cert = leaf.signed_by(&key, &issuer).expect("leaf cert");
    let paths = (
        dir.join(format!("{name}-ca.crt")),
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&paths.0, ca_cert.pem()).expect("write");
    std::fs::write(&paths.1, cert.pem()).expect("write");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write");
    paths
}

/// Whether a client trusting only `ca` completes a TLS handshake and gets
/// an HTTP answer from `addr`.
async fn trusted_by(ca: &Path, addr: SocketAddr, path: &str) -> Result<u16, String> {
    let cfg = tls::client(&[ca], None, false).expect("client config");
    let client = Client::new(cfg, Duration::from_secs(20));
    client
        .request(
            Method::GET,
            &format!("https://localhost:{}{path}", addr.port()),
            &[],
            vec![],
        )
        .await
        .map(|r| r.status)
}

#[tokio::test]
async fn web_and_getbalance_listeners_present_their_own_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (web_ca, web_crt, web_key) = issue(dir.path(), "portal");
    let (gb_ca, gb_crt, gb_key) = issue(dir.path(), "balance");
    let config = format!(
        "[mobile_plans]\ntls_cert = {web_crt:?}\ntls_key = {web_key:?}\n\
         [getbalance]\ntls_cert = {gb_crt:?}\ntls_key = {gb_key:?}\n"
    );
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let ci = server.pki().ci_cert;

    // The portal host: its own chain, no longer the DPtls one.
    let status = trusted_by(&web_ca, server.web, "/portal")
        .await
        .expect("the portal's CA is trusted");
    assert_eq!(status, 400, "the portal answers (no launch parameters)");
    let err = trusted_by(&ci, server.web, "/portal")
        .await
        .expect_err("the DPtls chain is not presented there");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(trusted_by(&gb_ca, server.web, "/portal").await.is_err());

    // GetBalance: its own chain; without a client certificate, a 401.
    let status = trusted_by(
        &gb_ca,
        server.balance,
        "/v1/sims/iccid:8999900000000000006/balances",
    )
    .await
    .expect("the GetBalance CA is trusted");
    assert_eq!(status, 401);
    assert!(trusted_by(&ci, server.balance, "/v1/").await.is_err());

    // ES9+ still presents DPtls, issued by the CI.
    assert!(
        trusted_by(&ci, server.es9, "/gsma/rsp2/es9plus/initiateAuthentication")
            .await
            .is_ok()
    );
    assert!(trusted_by(&web_ca, server.es9, "/").await.is_err());
}

#[test]
fn a_certificate_without_its_key_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, web_crt, _) = issue(dir.path(), "portal");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, format!("[mobile_plans]\ntls_cert = {web_crt:?}\n")).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_smdpplus"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--es9-listen", "127.0.0.1:0", "--es2-listen", "127.0.0.1:0"])
        .args([
            "--ops-listen",
            "127.0.0.1:0",
            "--operator-web-listen",
            "127.0.0.1:0",
        ])
        .args(["--getbalance-listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[mobile_plans] tls_cert and tls_key go together"),
        "{err}"
    );
}

/// The same listeners with their TLS keys on a PKCS#11 token (SoftHSM2):
/// the key files are deleted once imported, every handshake (ES9+, ES2+
/// with its client certificate, operator web, GetBalance) is signed on the
/// token, and without the token no handshake completes.
#[tokio::test]
async fn listeners_sign_their_handshakes_on_the_token() {
    let Some(token) = TestToken::create("tls_token") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (tls_ca, tls_crt, tls_key) = issue(dir.path(), "dptls");
    let (web_ca, web_crt, web_key) = issue(dir.path(), "portal");
    let (gb_ca, gb_crt, gb_key) = issue(dir.path(), "balance");
    let keys: Vec<String> = [
        ("dptls", &tls_key),
        ("portal", &web_key),
        ("balance", &gb_key),
    ]
    .iter()
    .map(|(l, k)| format!("{l}={}", k.display()))
    .collect();
    let mut args = vec!["hsm-import"];
    for k in &keys {
        args.extend(["--key", k]);
    }
    let (code, out, err) = token.keys(dir.path(), &token.hsm_section(), &args);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("imported ").count(), 3, "{out}");
    for k in [&tls_key, &web_key, &gb_key] {
        std::fs::remove_file(k).expect("remove the key file");
    }
    let config = format!(
        "tls_cert = {tls_crt:?}\ntls_key = \"pkcs11:object=dptls\"\n{}\n\
         [mobile_plans]\ntls_cert = {web_crt:?}\ntls_key = \"pkcs11:object=portal\"\n\
         [getbalance]\ntls_cert = {gb_crt:?}\ntls_key = \"pkcs11:object=balance\"\n",
        token.hsm_section()
    );
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let es9 = "/gsma/rsp2/es9plus/initiateAuthentication";
    assert!(trusted_by(&tls_ca, server.es9, es9).await.is_ok());
    assert_eq!(
        trusted_by(&web_ca, server.web, "/portal")
            .await
            .expect("portal"),
        400
    );
    assert_eq!(
        trusted_by(
            &gb_ca,
            server.balance,
            "/v1/sims/iccid:8999900000000000006/balances"
        )
        .await
        .expect("GetBalance"),
        401
    );
    // ES2+: the operator's client certificate, the server's chain from the
    // configured certificate, signed on the token.
    let pki = server.pki();
    let operator = tls::Identity::load(&pki.operator_client_cert, &pki.operator_client_key)
        .expect("operator identity");
    let es2 = Client::new(
        tls::client(&[tls_ca.as_path()], Some(&operator), false).expect("client"),
        Duration::from_secs(20),
    );
    let r = es2
        .request(
            Method::GET,
            &format!(
                "https://localhost:{}/smdpplus/admin/v1/profiles/8999900000000000006",
                server.es2.port()
            ),
            &[],
            vec![],
        )
        .await
        .expect("ES2+ handshake with the key on the token");
    assert_eq!(r.status, 200);

    // hsm-list checks the three TLS keys against their certificates.
    let (code, out, err) = token.keys(dir.path(), &config, &["hsm-list"]);
    assert_eq!(code, 0, "{out}{err}");
    for what in ["tls_key", "[mobile_plans] tls_key", "[getbalance] tls_key"] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with("ok") && l.contains(what)),
            "{what}:\n{out}"
        );
    }

    // No token, no handshake: the signatures were the token's.
    token.delete();
    let err = trusted_by(&tls_ca, server.es9, es9)
        .await
        .expect_err("no TLS signature without the token");
    assert!(!err.is_empty());
    assert!(trusted_by(&web_ca, server.web, "/portal").await.is_err());
}
