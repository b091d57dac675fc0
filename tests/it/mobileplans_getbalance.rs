//! The GetBalance API ([MP-Account]) against the real
//! binary on its own TLS listener: balances credited by purchases and the
//! operator, debited by usage reports, ending with the plan; every status
//! code (200 with a zero balance, 400 naming the parameter, 401, 403, 404,
//! 405, 409, 429 with Retry-After) and both authentication modes.

use crate::common;

use crate::common::{iccids, Operator, Server, EID};
use hyper::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use smdpplus::http::client::{Client, Response};
use smdpplus::http::tls::{self, Identity};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const MS_SUBJECT: &[(rcgen::DnType, &str)] = &[
    (rcgen::DnType::CountryName, "US"),
    (rcgen::DnType::StateOrProvinceName, "WA"),
    (rcgen::DnType::LocalityName, "Redmond"),
    (rcgen::DnType::OrganizationName, "Microsoft Corporation"),
    (rcgen::DnType::CommonName, "partners.datamart.windows.com"),
];

/// Issues a client certificate with `subject`, from the server's dev
/// operator CA (the default `getbalance.client_ca`) or, with `foreign`,
/// from a CA of its own; `expired` makes it end yesterday.
fn client_cert(
    server: &Server,
    name: &str,
    subject: &[(rcgen::DnType, &str)],
    foreign: bool,
    expired: bool,
) -> Identity {
    let pki = server.dir.join("pki");
    let issuer = if foreign {
        let own_ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "someone else's CA");
        rcgen::Issuer::new(p, own_ca_key)
    } else {
        let ca_key = rcgen::KeyPair::from_pem(
            &std::fs::read_to_string(pki.join("operator-ca.key")).expect("ca key"),
        )
        .expect("parse ca key");
        let ca_pem = std::fs::read_to_string(pki.join("operator-ca.crt")).expect("ca cert");
        rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("issuer")
    };
    let mut params = rcgen::CertificateParams::default();
    for (t, v) in subject {
        params.distinguished_name.push(t.clone(), *v);
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    if expired {
        params.not_before = now - time::Duration::days(30);
        params.not_after = now - time::Duration::days(1);
    } else {
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(30);
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = params.signed_by(&key, &issuer).expect("sign");
    let (c, k): (PathBuf, PathBuf) = (
        server.dir.join(format!("{name}.crt")),
        server.dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    Identity::load(&c, &k).expect("identity")
}

fn microsoft(server: &Server) -> Identity {
    client_cert(server, "microsoft", MS_SUBJECT, false, false)
}

fn operator_identity(server: &Server) -> Identity {
    let p = server.pki();
    Identity::load(&p.operator_client_cert, &p.operator_client_key).expect("operator identity")
}

struct Caller {
    client: Client,
    base: String,
}

static TXID: AtomicUsize = AtomicUsize::new(0);

fn fresh_txid() -> String {
    format!(
        "MSFT-{}-{}",
        std::process::id(),
        TXID.fetch_add(1, Ordering::SeqCst)
    )
}

impl Caller {
    fn new(server: &Server, id: Option<&Identity>) -> Caller {
        let cfg = tls::client(&[server.pki().ci_cert.as_path()], id, false).expect("client config");
        Caller {
            client: Client::new(cfg, Duration::from_secs(30)),
            base: format!("https://localhost:{}", server.balance.port()),
        }
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.client
            .request(
                method,
                &format!("{}{path}", self.base),
                headers,
                body.to_vec(),
            )
            .await
            .expect("GetBalance call")
    }

    /// GET balances with a fresh transaction id: (status, JSON, response).
    async fn get(&self, sim: &str, query: &str) -> (u16, Value, Response) {
        let txid = fresh_txid();
        self.get_with(sim, query, &[("x-ms-dm-transactionid", &txid)])
            .await
    }

    async fn get_with(
        &self,
        sim: &str,
        query: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Value, Response) {
        let r = self
            .raw(
                Method::GET,
                &format!("/v1/sims/{sim}/balances?{query}"),
                headers,
                b"",
            )
            .await;
        let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, v, r)
    }

    async fn usage(&self, iccid: &str, body: Value) -> (u16, Value) {
        let r = self
            .raw(
                Method::POST,
                &format!("/v1/sims/iccid:{iccid}/usage"),
                &[("content-type", "application/json")],
                body.to_string().as_bytes(),
            )
            .await;
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }
}

async fn buy_balance(op: &Operator, txid: &str, iccid: &str, mb: f64, secs: u64) {
    let (s, v) = op
        .admin(
            Method::POST,
            "mobileplans/orders",
            Some(
                json!({"transactionId": txid, "kind": "balance", "iccid": iccid,
                        "planName": "Day pass", "dataInMB": mb, "validForSecs": secs}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

/// Seconds in an ISO 8601 duration of days, hours, minutes and seconds.
fn duration_secs(d: &str) -> i64 {
    let mut total = 0;
    let mut n = 0i64;
    for c in d.chars() {
        match c {
            '0'..='9' => n = n * 10 + i64::from(c as u8 - b'0'),
            'D' => (total, n) = (total + n * 86400, 0),
            'H' => (total, n) = (total + n * 3600, 0),
            'M' => (total, n) = (total + n * 60, 0),
            'S' => (total, n) = (total + n, 0),
            _ => {}
        }
    }
    total
}

fn no_internal_errors(server: &Server) {
    let log = server.log();
    assert!(
        !log.contains("internal error") && !log.contains("store read failed"),
        "{log}"
    );
}

#[tokio::test]
async fn purchase_usage_and_the_walled_garden_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    let ms = Caller::new(&server, Some(&microsoft(&server)));
    let network = Caller::new(&server, Some(&operator_identity(&server)));
    let psim = iccids(81, 1).remove(0);
    buy_balance(&op, "pass-1", &psim, 1000.0, 86400).await;

    let txid = "MSFT-12345678-1234-1234-1234-123456789abc";
    let (s, v, r) = ms
        .get_with(
            &format!("iccid:{psim}"),
            "fieldsTemplate=basic&limit=1&location=US",
            &[("x-ms-dm-transactionid", txid)],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        r.headers
            .get("x-ms-dm-transactionid")
            .and_then(|h| h.to_str().ok()),
        Some(txid)
    );
    assert_eq!(
        r.headers.get("content-type").and_then(|h| h.to_str().ok()),
        Some("application/json")
    );
    let b = &v["balances"][0];
    assert_eq!(v["balances"].as_array().expect("list").len(), 1);
    assert_eq!(b["type"], "MODIRECTPAYG");
    assert_eq!(b["dataRemainingInMB"], json!(1000.0));
    assert_eq!(b["dataRemaininginMB"], json!(1000.0));
    let left = duration_secs(b["timeRemaining"].as_str().expect("duration"));
    assert!((86390..=86400).contains(&left), "{b}");
    assert!(b.get("locations").is_none(), "basic has no locations: {b}");

    // Usage goes down as it is used; time too.
    let (s, u) = network.usage(&psim, json!({"dataUsedInMB": 250.5})).await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["debitedInMB"], json!(250.5));
    assert_eq!(u["uncoveredInMB"], json!(0.0));
    server.advance_clock(60).await;
    let (_, v, _) = ms
        .get(&format!("iccid:{psim}"), "fieldsTemplate=basic")
        .await;
    assert_eq!(v["balances"][0]["dataRemainingInMB"], json!(749.5));
    assert!(duration_secs(v["balances"][0]["timeRemaining"].as_str().expect("t")) <= left - 60);

    // Used up: the walled-garden state is a 200 with 0 and PT0S.
    let (s, u) = network.usage(&psim, json!({"dataUsedInMB": 1000})).await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["uncoveredInMB"], json!(250.5));
    let (s, v, _) = ms
        .get(&format!("iccid:{psim}"), "fieldsTemplate=full")
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        v["balances"],
        json!([{"id": psim, "type": "NONE", "dataRemainingInMB": 0.0,
                "dataRemaininginMB": 0.0, "timeRemaining": "PT0S", "locations": []}])
    );
    // A usage report is durable once answered: it is there after kill -9.
    let mut server = server;
    buy_balance(&op, "pass-2", &psim, 10.0, 86400).await;
    let (s, _) = network.usage(&psim, json!({"dataUsedInMB": 4})).await;
    assert_eq!(s, 200);
    server.kill9();
    let server = Server::start(dir.path(), None);
    let ms = Caller::new(&server, Some(&microsoft(&server)));
    let (_, v, _) = ms.get(&format!("iccid:{psim}"), "").await;
    assert_eq!(v["balances"][0]["dataRemainingInMB"], json!(6.0), "{v}");
    no_internal_errors(&server);
}

#[tokio::test]
async fn zero_and_not_supported_are_200_unknown_is_404() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    let ms = Caller::new(&server, Some(&microsoft(&server)));
    let [warm, unsupported, unknown]: [String; 3] = iccids(82, 3).try_into().expect("three");
    let (s, v) = op
        .admin(Method::PUT, &format!("balances/{warm}"), Some(json!({})))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v, _) = ms
        .get(&format!("iccid:{warm}"), "fieldsTemplate=basic&limit=1")
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["balances"][0]["type"], "NONE");
    assert_eq!(v["balances"][0]["dataRemainingInMB"], json!(0.0));
    assert_eq!(v["balances"][0]["timeRemaining"], "PT0S");
    // A profile of this SM-DP+ without a purchase: zero, not 404.
    let (s, v, _) = ms.get("iccid:8999900000000000006", "").await;
    assert_eq!((s, v["balances"][0]["type"].as_str()), (200, Some("NONE")));
    // The docs' spellings of the simId: encoded colon, a blank after it, a trailing F.
    let (s, _, _) = ms.get(&format!("iccid%3A%20{warm}F"), "").await;
    assert_eq!(s, 200);
    let (s, v) = op
        .admin(
            Method::PUT,
            &format!("balances/{unsupported}"),
            Some(json!({"notSupported": true})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, v, _) = ms.get(&format!("iccid:{unsupported}"), "").await;
    assert_eq!(
        v["balances"][0],
        json!({"id": unsupported, "type": "NOTSUPPORTED", "dataRemainingInMB": 0.0,
               "dataRemaininginMB": 0.0, "timeRemaining": "PT0S"})
    );
    let (s, v, _) = ms.get(&format!("iccid:{unknown}"), "").await;
    assert_eq!(s, 404, "{v}");
    no_internal_errors(&server);
}

#[tokio::test]
async fn fields_template_limit_location_and_the_end_of_the_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    let ms = Caller::new(&server, Some(&microsoft(&server)));
    let sim = iccids(83, 1).remove(0);
    for body in [
        json!({"id": "roam-us", "dataInMB": 300, "validForSecs": 3600, "locations": ["US"], "planName": "US pass"}),
        json!({"id": "home", "dataInMB": 2048, "validForSecs": 30 * 86400, "planName": "Monthly"}),
        json!({"id": "short", "dataInMB": 5, "validForSecs": 600, "balanceType": "MODIRECT"}),
    ] {
        let (s, v) = op
            .admin(Method::POST, &format!("balances/{sim}/credit"), Some(body))
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let ids = |v: &Value| -> Vec<String> {
        v["balances"]
            .as_array()
            .expect("list")
            .iter()
            .map(|b| b["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let path = format!("iccid:{sim}");
    // All active balances, ending first first.
    let (_, v, _) = ms.get(&path, "fieldsTemplate=full").await;
    assert_eq!(ids(&v), vec!["short", "roam-us", "home"]);
    assert_eq!(v["balances"][0]["type"], "MODIRECT");
    assert_eq!(v["balances"][1]["locations"], json!(["US"]));
    assert_eq!(v["balances"][2]["locations"], json!([]));
    let (_, v, _) = ms.get(&path, "limit=1").await;
    assert_eq!(ids(&v), vec!["short"]);
    // location is case-sensitive; a balance without locations applies everywhere.
    let (_, v, _) = ms.get(&path, "location=US").await;
    assert_eq!(ids(&v), vec!["short", "roam-us", "home"]);
    let (_, v, _) = ms.get(&path, "location=us").await;
    assert_eq!(ids(&v), vec!["short", "home"]);
    // The plan ends: its balance is gone.
    server.advance_clock(601).await;
    let (_, v, _) = ms.get(&path, "").await;
    assert_eq!(ids(&v), vec!["roam-us", "home"]);
    no_internal_errors(&server);
}

#[tokio::test]
async fn every_bad_parameter_is_a_400_that_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let ms = Caller::new(&server, Some(&microsoft(&server)));
    let sim = "iccid:8999900000000000006";
    for (s, query, parameter) in [
        (sim, "fieldsTemplate=everything", "fieldsTemplate"),
        (sim, "fieldsTemplate=", "fieldsTemplate"),
        (sim, "limit=0", "limit"),
        (sim, "limit=-1", "limit"),
        (sim, "limit=lots", "limit"),
        (sim, "limit=99999999999", "limit"),
        (sim, "location=USA", "location"),
        (sim, "location=1A", "location"),
        (sim, "location=%zz", "location"),
        ("iccid:123", "", "simId"),
        ("8999900000000000006", "", "simId"),
        ("imsi:001010000000001", "", "simId"),
        ("iccid:%zz", "", "simId"),
    ] {
        let (status, v, _) = ms.get(s, query).await;
        assert_eq!(status, 400, "{s} {query}: {v}");
        assert_eq!(v["parameter"], parameter, "{s} {query}: {v}");
    }
    let (status, v, _) = ms.get_with(sim, "", &[]).await;
    assert_eq!(
        (status, v["parameter"].as_str()),
        (400, Some("X-MS-DM-TransactionId"))
    );
    // Unknown parameters are ignored.
    let (status, _, _) = ms
        .get(sim, "fieldsTemplate=basic&imei=001102000311608&x=%zz")
        .await;
    assert_eq!(status, 200);
    let r = ms.raw(Method::GET, "/v1/sims", &[], b"").await;
    assert_eq!(r.status, 404);
    let r = ms
        .raw(Method::POST, &format!("/v1/sims/{sim}/balances"), &[], b"")
        .await;
    assert_eq!(r.status, 405);
    no_internal_errors(&server);
}

#[tokio::test]
async fn a_repeated_transaction_id_is_a_409() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let ms = Caller::new(&server, Some(&microsoft(&server)));
    let h = [("x-ms-dm-transactionid", "\u{201c}MSFT-repeat\u{201d}")];
    let sim = "iccid:8999900000000000006";
    let (s, _, r) = ms.get_with(sim, "", &h).await;
    assert_eq!(s, 200);
    assert_eq!(
        r.headers.get("x-ms-dm-transactionid").map(|v| v.as_bytes()),
        Some("\u{201c}MSFT-repeat\u{201d}".as_bytes()),
        "echoed byte for byte"
    );
    let (s, v, _) = ms.get_with(sim, "", &h).await;
    assert_eq!(s, 409, "{v}");
    let (s, _, _) = ms.get(sim, "").await;
    assert_eq!(s, 200);

    // The window is in the store: a restart does not forget it.
    let mut server = server;
    assert!(server.terminate().success());
    let server = Server::start(dir.path(), None);
    let ms = Caller::new(&server, Some(&microsoft(&server)));
    let (s, v, _) = ms.get_with(sim, "", &h).await;
    assert_eq!(s, 409, "after a restart: {v}");
}

#[tokio::test]
async fn mutual_tls_401_and_403() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let psim = iccids(84, 1).remove(0);
    buy_balance(&server.operator(), "mtls-1", &psim, 5.0, 3600).await;
    let path = format!("iccid:{psim}");
    let other_subject = [(rcgen::DnType::CommonName, "partners.datamart.windows.com")];
    for (who, id, want) in [
        ("no certificate", None, 401),
        (
            "expired",
            Some(client_cert(&server, "old", MS_SUBJECT, false, true)),
            401,
        ),
        (
            "another CA",
            Some(client_cert(&server, "foreign", MS_SUBJECT, true, false)),
            403,
        ),
        (
            "another subject",
            Some(client_cert(
                &server,
                "cn-only",
                &other_subject,
                false,
                false,
            )),
            403,
        ),
        ("the operator", Some(operator_identity(&server)), 403),
        ("Microsoft", Some(microsoft(&server)), 200),
    ] {
        let c = Caller::new(&server, id.as_ref());
        let (s, v, _) = c.get(&path, "").await;
        assert_eq!(s, want, "{who}: {v}");
    }
    // Usage reports need the operator's certificate.
    let body = json!({"dataUsedInMB": 1});
    for (who, id, want) in [
        ("no certificate", None, 401),
        ("Microsoft", Some(microsoft(&server)), 403),
        (
            "another CA",
            Some(client_cert(
                &server,
                "foreign2",
                &[(rcgen::DnType::CommonName, "dev-operator")],
                true,
                false,
            )),
            403,
        ),
        ("the operator", Some(operator_identity(&server)), 200),
    ] {
        let c = Caller::new(&server, id.as_ref());
        let (s, v) = c.usage(&psim, body.clone()).await;
        assert_eq!(s, want, "usage, {who}: {v}");
    }
    let op = Caller::new(&server, Some(&operator_identity(&server)));
    for (body, parameter) in [
        (json!({}), "dataUsedInMB"),
        (json!({"dataUsedInMB": -3}), "dataUsedInMB"),
        (json!({"dataUsedInMB": "3"}), "dataUsedInMB"),
        (json!({"dataUsedInMB": 1, "location": "USA"}), "location"),
        (json!([1]), "body"),
    ] {
        let (s, v) = op.usage(&psim, body.clone()).await;
        assert_eq!(
            (s, v["parameter"].as_str()),
            (400, Some(parameter)),
            "{body}: {v}"
        );
    }
    let unknown = iccids(84, 2).remove(1);
    let (s, _) = op.usage(&unknown, json!({"dataUsedInMB": 1})).await;
    assert_eq!(s, 404);
    no_internal_errors(&server);
}

#[tokio::test]
async fn basic_authentication_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = hex::encode(Sha256::digest(b"s3cret pass"));
    let config = format!(
        "[getbalance]\nauth = \"basic\"\nbasic_user = \"microsoft\"\nbasic_password_sha256 = \"{hash}\"\n"
    );
    let server = Server::start(dir.path(), Some(&config));
    let c = Caller::new(&server, None);
    let sim = "iccid:8999900000000000006";
    let good = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "microsoft:s3cret pass"
        )
    );
    let wrong = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "microsoft:guess"
        )
    );
    for (auth, want) in [
        (None, 401),
        (Some(wrong.as_str()), 401),
        (Some("Bearer x"), 401),
        (Some(good.as_str()), 200),
    ] {
        let txid = fresh_txid();
        let mut h = vec![("x-ms-dm-transactionid", txid.as_str())];
        if let Some(a) = auth {
            h.push(("authorization", a));
        }
        let (s, v, r) = c.get_with(sim, "", &h).await;
        assert_eq!(s, want, "{auth:?}: {v}");
        if want == 401 {
            assert_eq!(
                r.headers
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some("Basic realm=\"GetBalance\"")
            );
        }
    }
    // A certificate does not replace the password in this mode.
    let with_cert = Caller::new(&server, Some(&microsoft(&server)));
    let (s, _, _) = with_cert.get(sim, "").await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn over_the_rate_limit_is_a_429_with_retry_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        Some("[getbalance]\nrate_limit_per_sec = 1\nrate_limit_burst = 2\n"),
    );
    let ms = Caller::new(&server, Some(&microsoft(&server)));
    let sim = "iccid:8999900000000000006";
    let mut statuses = vec![];
    let mut retry_after = None;
    for _ in 0..4 {
        let (s, _, r) = ms.get(sim, "").await;
        statuses.push(s);
        if s == 429 {
            retry_after = r
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
        }
    }
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, _, _) = ms.get(sim, "").await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn an_esim_purchase_credits_and_its_cancel_takes_it_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    let ms = Caller::new(&server, Some(&microsoft(&server)));
    let (s, v) = op
        .admin(
            Method::POST,
            "mobileplans/orders",
            Some(
                json!({"transactionId": "esim-credit", "kind": "profile", "eid": EID,
                        "profileType": "demo", "planName": "2GB", "dataInMB": 2048,
                        "validForSecs": 86400}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let iccid = v["decision"]["iccid"].as_str().expect("iccid").to_owned();
    let (_, v, _) = ms.get(&format!("iccid:{iccid}"), "").await;
    assert_eq!(v["balances"][0]["dataRemainingInMB"], json!(2048.0), "{v}");
    let (s, _) = common::mobileplans::owner_call(
        &server,
        &op,
        Method::POST,
        "/mobileplans/v1/cancel?transactionId=esim-credit",
    )
    .await;
    assert_eq!(s, 200);
    let (_, v, _) = ms.get(&format!("iccid:{iccid}"), "").await;
    assert_eq!(v["balances"][0]["type"], "NONE", "{v}");
    assert_eq!(v["balances"][0]["timeRemaining"], "PT0S");
}
