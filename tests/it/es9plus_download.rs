//! ES9+ end to end: the real `smdpplus` process on ephemeral ports, real
//! TLS, the software eUICC and its LPA driver, and a real HTTPS operator
//! endpoint receiving ES2+ handleDownloadProgressInfo.
//!
//! The authority is SGP.22 v2.2: §3.1.2-3.1.3 (common mutual
//! authentication, download, download rejection, download confirmation),
//! §3.1.6 (profile states, p.77), §5.3.5 (notification points and tables
//! 32b/32c), §5.6.1-5.6.5 (ES9+ functions and their status codes) and §6.3
//! (HTTP 200 for every synchronous result, 204 for notifications).
//!
//! Every test asserts the profile state at the SM-DP+ after each step
//! (admin API) and the notifications the operator receives.

use crate::common::hsm::TestToken;
use crate::common::{code, iccids, status, Operator, Receiver, Server, EID};
use hyper::Method;
use serde_json::{json, Value};
use smdpplus::asn1::der::{DerCodec, Oid, Signed, Version};
use smdpplus::asn1::rsp::{
    AuthenticateResponseOk, AuthenticateServerResponse, BoundProfilePackage, BppCommandId,
    CancelSessionReason, CancelSessionResponse, EcdsaSignature, EuiccInfo1, EuiccSigned1,
    FinalResult, NotificationOperation, PendingNotification, PrepareDownloadResponse,
    ProfileInstallationResult, SmdpSigned2, TransactionId,
};
use smdpplus::crypto::ecdsa::SigningKey;
use smdpplus::es9plus::dto::*;
use smdpplus::es9plus::Function;
use smdpplus::euicc::lpa::{Lpa, LpaError};
use smdpplus::euicc::SoftEuicc;
use smdpplus::ids::Iccid;
use smdpplus::pki::ci::CiSet;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// SGP.26 test material (certs/sgp26). Every eUICC certificate there, the
// invalid ones included, carries the public key of SK_EUICC_ECDSA_NIST
// (checked with openssl: same SubjectPublicKeyInfo), so one key signs for
// all of them; the invalid EUM certificates carry PK_EUM_ECDSA_NIST.

const SK_EUICC_NIST: &str = include_str!("../../certs/sgp26/eUICC/SK_EUICC_ECDSA_NIST.pem");
const SK_EUICC_BRP: &str = include_str!("../../certs/sgp26/eUICC/SK_EUICC_ECDSA_BRP.pem");
const CERT_EUICC_NIST: &[u8] = include_bytes!("../../certs/sgp26/eUICC/CERT_EUICC_ECDSA_NIST.der");
const CERT_EUICC_BRP: &[u8] = include_bytes!("../../certs/sgp26/eUICC/CERT_EUICC_ECDSA_BRP.der");
const CERT_EUM_NIST: &[u8] = include_bytes!("../../certs/sgp26/EUM/CERT_EUM_ECDSA_NIST.der");
const CERT_EUM_BRP: &[u8] = include_bytes!("../../certs/sgp26/EUM/CERT_EUM_ECDSA_BRP.der");
const CERT_CI_BRP: &[u8] = include_bytes!("../../certs/sgp26/CI/CERT_CI_ECDSA_BRP.der");
const CERT_DPPB_NIST: &[u8] =
    include_bytes!("../../certs/sgp26/DPpb/CERT_S_SM_DPpb_ECDSA_NIST.der");
const CERT_DPPB_BRP: &[u8] = include_bytes!("../../certs/sgp26/DPpb/CERT_S_SM_DPpb_ECDSA_BRP.der");

const INVALID_EUM_EXPIRED: &[u8] =
    include_bytes!("../../certs/sgp26/invalid/CERT_EUM_ECDSA_NIST_EXPIRED.der");
const INVALID_EUM_INVALID: &[u8] =
    include_bytes!("../../certs/sgp26/invalid/CERT_EUM_ECDSA_NIST_INVALID.der");
const INVALID_EUM_UNKNOWN_CI: &[u8] =
    include_bytes!("../../certs/sgp26/invalid/CERT_EUM_ECDSA_NIST_UNKNOWN_CI.der");
const INVALID_EUICC_EXPIRED: &[u8] =
    include_bytes!("../../certs/sgp26/invalid/CERT_EUICC_ECDSA_NIST_EXPIRED.der");
const INVALID_EUICC_INVALID: &[u8] =
    include_bytes!("../../certs/sgp26/invalid/CERT_EUICC_ECDSA_NIST_INVALID.der");
const INVALID_EUICC_EID: &[u8] =
    include_bytes!("../../certs/sgp26/invalid/CERT_EUICC_ECDSA_NIST_INVALID_EID.der");
const UNMATCHED_EUICC_EID: &[u8] =
    include_bytes!("../../certs/sgp26/invalid/CERT_EUICC_ECDSA_NIST_UNMATCHED_EID.der");

/// The profile type of every test order (not configured: fallback metadata).
const TYPE: &str = "gold";

fn nist_key() -> SigningKey {
    SigningKey::from_pem(SK_EUICC_NIST).expect("SGP.26 eUICC NIST key")
}

pub(crate) fn nist() -> SoftEuicc {
    SoftEuicc::sgp26_nist().expect("NIST eUICC")
}

/// The SGP.26 brainpool eUICC trusting both test CIs (the SM-DP+ may pick
/// either CI for DPauth/DPpb; the eUICC's own signatures are brainpool).
fn brainpool() -> SoftEuicc {
    SoftEuicc::sgp26_brainpool().expect("brainpool eUICC")
}

/// The brainpool eUICC trusting only the brainpool CI: DPauth, DPpb, the
/// one-time keys and the ECDH are all brainpoolP256r1.
fn brainpool_only() -> SoftEuicc {
    let cis = CiSet::from_der([CERT_CI_BRP]).expect("brainpool CI");
    SoftEuicc::new(
        SigningKey::from_pem(SK_EUICC_BRP).expect("brainpool key"),
        CERT_EUICC_BRP.to_vec(),
        CERT_EUM_BRP.to_vec(),
        cis,
    )
    .expect("brainpool-only eUICC")
}

pub(crate) fn random_package(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

// ---------------------------------------------------------------------------
// Environment: operator endpoint, server, ES2+ client, LPA.

struct Env {
    server: Server,
    op: Operator,
    lpa: Lpa,
    notes: Notes,
    // Last: the directory outlives the server (dropped first, killed).
    _dir: tempfile::TempDir,
}

/// A fresh server in a tempdir with `extra` top-level config keys, its
/// notifications pointed at a real HTTPS receiver. The expiry sweep is
/// slowed down so tests decide when an order expires.
async fn env(extra: &str) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = Receiver::start(&dir.path().join("receiver"), 0).await;
    let config = rx.config(&format!(
        "expiry_sweep_secs = 3600\nseed_demo_profiles = 0\n{extra}"
    ));
    let server = Server::start(&dir.path().join("data"), Some(&config)).refusing_errors();
    let op = server.operator();
    let lpa = server.lpa();
    Env {
        server,
        op,
        lpa,
        notes: Notes {
            rx,
            seen: Vec::new(),
        },
        _dir: dir,
    }
}

/// A released download order.
struct Order {
    iccid: String,
    matching_id: String,
    package: Vec<u8>,
}

impl Env {
    /// The eUICC installs `bpp`, which must hold `o`'s package, and
    /// reports it: the order ends Installed.
    async fn install(&self, euicc: &mut SoftEuicc, bpp: &[u8], o: &Order) {
        let (pir, installed) = euicc.load_bound_profile_package(bpp).expect("load");
        assert!(installed.expect("installed").upp == o.package);
        assert_eq!(self.lpa.notify(pir).await.expect("notify"), 204);
        assert_eq!(self.state(&o.iccid).await, "Installed");
    }

    /// Adds a profile with a random package, orders it (linked to `eid`,
    /// or allocated), and confirms it with release (and `cc`).
    async fn order(&self, series: u32, eid: Option<&str>, cc: Option<&str>) -> Order {
        let iccid = iccids(series, 1).remove(0);
        let package = random_package(3000);
        self.op
            .add_profile_with_package(TYPE, &iccid, &package)
            .await;
        assert_eq!(self.state(&iccid).await, "Available");
        let mut req = json!({ "iccid": iccid });
        if let Some(e) = eid {
            req["eid"] = json!(e);
        }
        let (_, v) = self.op.call("downloadOrder", req).await;
        assert_eq!(status(&v), "Executed-Success", "downloadOrder: {v}");
        let expected = if eid.is_some() { "Linked" } else { "Allocated" };
        assert_eq!(self.state(&iccid).await, expected);
        let mut req = json!({ "iccid": iccid, "releaseFlag": true });
        if let Some(c) = cc {
            req["confirmationCode"] = json!(c);
        }
        let (_, v) = self.op.call("confirmOrder", req).await;
        assert_eq!(status(&v), "Executed-Success", "confirmOrder: {v}");
        let matching_id = v["matchingId"].as_str().expect("matchingId").to_owned();
        assert_eq!(self.state(&iccid).await, "Released");
        Order {
            iccid,
            matching_id,
            package,
        }
    }

    async fn state(&self, iccid: &str) -> String {
        self.op.state(iccid).await
    }

    async fn profile(&self, iccid: &str) -> Value {
        self.op.show(iccid).await["profile"].clone()
    }

    async fn set_expiry_in_the_past(&self, iccid: &str) {
        let (s, v) = self
            .op
            .admin(
                Method::PUT,
                &format!("profiles/{iccid}/expiry"),
                Some(json!({"expiresAt": "2020-01-01T00:00:00Z"})),
            )
            .await;
        assert_eq!(s, 200, "set expiry: {v}");
    }
}

/// The ES2+ notifications received so far, matched by ICCID, point and
/// status (the outbox may deliver in any order).
struct Notes {
    rx: Receiver,
    seen: Vec<Value>,
}

impl Notes {
    /// Waits for the notification of `iccid` at `point` with `failed`
    /// (`Some(code)`) or Executed-Success (`None`).
    async fn expect(&mut self, iccid: &str, point: u64, failed: Option<&str>) -> Value {
        let matches = |n: &Value| {
            n["iccid"] == iccid
                && n["notificationPointId"] == point
                && match failed {
                    None => n["notificationPointStatus"]["status"] == "Executed-Success",
                    Some(c) => {
                        let d = &n["notificationPointStatus"]["statusCodeData"];
                        n["notificationPointStatus"]["status"] == "Failed"
                            && format!(
                                "{}/{}",
                                d["subjectCode"].as_str().unwrap_or_default(),
                                d["reasonCode"].as_str().unwrap_or_default()
                            ) == c
                    }
                }
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(i) = self.seen.iter().position(matches) {
                let n = self.seen.remove(i);
                assert_eq!(n["_path"], "/gsma/rsp2/es2plus/handleDownloadProgressInfo");
                assert_eq!(n["profileType"], TYPE);
                return n;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.next(left).await {
                Some(n) => self.seen.push(n),
                None => panic!(
                    "no notification point {point} {failed:?} for {iccid}; received {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// No (further) notification about `iccid` arrives within `wait`.
    async fn quiet(&mut self, iccid: &str, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(n) = self.rx.next(left).await {
                self.seen.push(n);
            }
        }
        let about: Vec<&Value> = self.seen.iter().filter(|n| n["iccid"] == iccid).collect();
        assert!(about.is_empty(), "unexpected notifications: {about:#?}");
    }
}

// ---------------------------------------------------------------------------
// The protocol steps, one call each, so tests can stop or tamper anywhere.
// Each takes the LPA it goes through: `multinode` sends each step of one
// download to another node.

/// `subject/reason` of a refused call; panics on success or on a failure
/// that is not a GSMA status.
fn refused<T>(r: Result<T, LpaError>) -> String {
    match r {
        Ok(_) => panic!("expected a GSMA failure, the call succeeded"),
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("expected a GSMA failure, got {e}")),
    }
}

pub(crate) async fn initiate(lpa: &Lpa, euicc: &mut SoftEuicc) -> InitiateAuthenticationResponse {
    let challenge = euicc.get_euicc_challenge();
    lpa.call(
        Function::InitiateAuthentication,
        &InitiateAuthenticationRequest {
            euicc_challenge: challenge.to_vec(),
            euicc_info1: euicc.get_euicc_info1().expect("euiccInfo1"),
            smdp_address: lpa.smdp_address.clone(),
        },
    )
    .await
    .expect("initiateAuthentication")
}

/// ES10b.AuthenticateServer on the eUICC: the AuthenticateServerResponse.
pub(crate) fn authenticate_server(
    euicc: &mut SoftEuicc,
    lpa: &Lpa,
    init: &InitiateAuthenticationResponse,
    matching_id: Option<&str>,
) -> Vec<u8> {
    euicc
        .authenticate_server(
            &init.server_signed1,
            &init.server_signature1,
            &init.euicc_ci_pk_id_to_be_used,
            &init.server_certificate,
            &lpa.smdp_address,
            matching_id,
        )
        .expect("ES10b.AuthenticateServer")
}

pub(crate) async fn authenticate_client(
    lpa: &Lpa,
    transaction_id: &[u8],
    asr: Vec<u8>,
) -> Result<AuthenticateClientResponse, LpaError> {
    lpa.call(
        Function::AuthenticateClient,
        &AuthenticateClientRequest {
            transaction_id: transaction_id.to_vec(),
            authenticate_server_response: asr,
        },
    )
    .await
}

/// ES10b.PrepareDownload on the eUICC.
pub(crate) fn prepare(
    euicc: &mut SoftEuicc,
    auth: &AuthenticateClientResponse,
    cc: Option<&str>,
    reuse_otpk: bool,
) -> Vec<u8> {
    euicc
        .prepare_download(
            &auth.smdp_signed2,
            &auth.smdp_signature2,
            &auth.smdp_certificate,
            &auth.profile_metadata,
            cc,
            reuse_otpk,
        )
        .expect("ES10b.PrepareDownload")
}

pub(crate) async fn get_bpp(
    lpa: &Lpa,
    transaction_id: &[u8],
    pdr: Vec<u8>,
) -> Result<Vec<u8>, LpaError> {
    let r: GetBoundProfilePackageResponse = lpa
        .call(
            Function::GetBoundProfilePackage,
            &GetBoundProfilePackageRequest {
                transaction_id: transaction_id.to_vec(),
                prepare_download_response: pdr,
            },
        )
        .await?;
    assert_eq!(r.transaction_id, transaction_id);
    Ok(r.bound_profile_package)
}

async fn cancel(lpa: &Lpa, transaction_id: &[u8], csr: Vec<u8>) -> Result<Value, LpaError> {
    lpa.call(
        Function::CancelSession,
        &CancelSessionRequest {
            transaction_id: transaction_id.to_vec(),
            cancel_session_response: csr,
        },
    )
    .await
}

/// Authentication, PrepareDownload and GetBoundProfilePackage.
async fn fetch_bpp(
    lpa: &Lpa,
    euicc: &mut SoftEuicc,
    matching_id: Option<&str>,
    cc: Option<&str>,
) -> (AuthenticateClientResponse, Vec<u8>) {
    let auth = lpa
        .authenticate(euicc, matching_id)
        .await
        .expect("authentication");
    let pdr = prepare(euicc, &auth, cc, false);
    let bpp = get_bpp(lpa, &auth.transaction_id, pdr)
        .await
        .expect("getBoundProfilePackage");
    (auth, bpp)
}

/// The SM-DP+ OID of an SM-DP+ certificate.
fn smdp_oid_of(cert: &[u8]) -> Oid {
    let dotted = smdpplus::pki::x509::smdp_oid(cert).expect("registeredID");
    let arcs: Vec<u64> = dotted.split('.').map(|a| a.parse().expect("arc")).collect();
    Oid::from_arcs(&arcs).expect("oid")
}

/// Decodes, edits and re-encodes an AuthenticateServerResponse. The
/// certificates are outside euiccSigned1: swapping them keeps the
/// signature valid.
fn edit_asr(asr: &[u8], f: impl FnOnce(&mut AuthenticateResponseOk)) -> Vec<u8> {
    let AuthenticateServerResponse::Ok(mut ok) =
        AuthenticateServerResponse::decode(asr).expect("AuthenticateServerResponse")
    else {
        panic!("the eUICC answered with an error");
    };
    f(&mut ok);
    AuthenticateServerResponse::Ok(ok).encode()
}

/// Changes EuiccSigned1 and signs it again with the eUICC's own key: a
/// genuine eUICC signature over the wrong content.
fn resign_signed1(ok: &mut AuthenticateResponseOk, f: impl FnOnce(&mut EuiccSigned1)) {
    let mut v = ok.euicc_signed1.value().clone();
    f(&mut v);
    ok.euicc_signed1 = Signed::new(v);
    let sig = nist_key().sign(ok.euicc_signed1.raw()).expect("sign");
    ok.euicc_signature1 = EcdsaSignature(*sig.as_raw());
}

fn tlv_len(value_len: usize) -> usize {
    let len_of_len = match value_len {
        0..=0x7f => 1,
        0x80..=0xff => 2,
        _ => 3,
    };
    1 + len_of_len + value_len
}

/// Checks the BPP layout (§2.5.4): ReplaceSessionKeys present or not, 86
/// segments of at most 1020 bytes (1007 plaintext bytes each).
fn check_bpp_layout(bpp: &[u8], with_ppk: bool, package_len: usize) {
    let b = BoundProfilePackage::decode(bpp).expect("BF36");
    assert_eq!(
        b.second_sequence_of_87.is_some(),
        with_ppk,
        "ReplaceSessionKeys (A2) presence"
    );
    assert_eq!(b.sequence_of_86.len(), package_len.div_ceil(1007));
    for s in &b.sequence_of_86 {
        assert!(
            tlv_len(s.len()) <= 1020,
            "86 TLV of {} bytes",
            tlv_len(s.len())
        );
    }
}

fn final_result_of(note: &Value) -> FinalResult {
    FinalResult::from_der(&unb64(note["resultData"].as_str().expect("resultData")))
        .expect("finalResult")
}

// ---------------------------------------------------------------------------
// 1. Full downloads.

/// One complete download: the state after each step, the decrypted profile
/// against the stored package, and notification points 3 and 4.
async fn download_and_check(
    e: &mut Env,
    euicc: &mut SoftEuicc,
    series: u32,
    with_ppk: bool,
    expected_dppb: Option<&[u8]>,
) {
    let o = e.order(series, Some(EID), None).await;
    let (auth, bpp) = fetch_bpp(&e.lpa, euicc, Some(&o.matching_id), None).await;
    if let Some(dppb) = expected_dppb {
        assert_eq!(auth.smdp_certificate, dppb, "DPpb of the eUICC's CI");
    }
    assert_eq!(e.state(&o.iccid).await, "Downloaded");
    let p = e.profile(&o.iccid).await;
    assert_eq!(p["eid"], EID);
    assert_eq!(p["downloadAttempts"], 1);
    let n3 = e.notes.expect(&o.iccid, 3, None).await;
    assert_eq!(n3["eid"], EID);

    check_bpp_layout(&bpp, with_ppk, o.package.len());
    let (pir, installed) = euicc.load_bound_profile_package(&bpp).expect("load BPP");
    let installed = installed.expect("the eUICC installed the profile");
    assert!(
        installed.upp == o.package,
        "the decrypted profile differs from the stored package"
    );
    assert_eq!(installed.iccid.to_string(), o.iccid);
    assert_eq!(installed.metadata, auth.profile_metadata);
    assert_eq!(e.lpa.notify(pir).await.expect("notify"), 204);
    assert_eq!(e.state(&o.iccid).await, "Installed");
    let n4 = e.notes.expect(&o.iccid, 4, None).await;
    assert_eq!(n4["eid"], EID);
    assert!(matches!(final_result_of(&n4), FinalResult::Success(_)));
    let events: Vec<Value> = e.op.show(&o.iccid).await["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["event"].clone())
        .collect();
    assert!(
        events.ends_with(&[json!("bppDelivered"), json!("installSucceeded")]),
        "{events:?}"
    );
}

#[tokio::test]
async fn download_with_ppk_nist_and_brainpool_installs_the_stored_package() {
    let mut e = env("").await;
    download_and_check(&mut e, &mut nist(), 101, true, Some(CERT_DPPB_NIST)).await;
    download_and_check(
        &mut e,
        &mut brainpool_only(),
        102,
        true,
        Some(CERT_DPPB_BRP),
    )
    .await;
    download_and_check(&mut e, &mut brainpool(), 103, true, None).await;
}

#[tokio::test]
async fn download_with_session_keys_only_nist_and_brainpool() {
    let mut e = env("session_keys_only = true").await;
    download_and_check(&mut e, &mut nist(), 111, false, Some(CERT_DPPB_NIST)).await;
    download_and_check(
        &mut e,
        &mut brainpool_only(),
        112,
        false,
        Some(CERT_DPPB_BRP),
    )
    .await;
}

// ---------------------------------------------------------------------------
// 1a. The same downloads with every DPauth and DPpb key on a PKCS#11 token
// (SoftHSM2): serverSignature1, smdpSignature2 and the BF23 signature are
// made there, and verified by the software eUICC.

/// A token with the SGP.26 DPauth/DPpb keys (`keys hsm-import`) and the
/// config naming them by URI, certificates copied into `dir`: no key file
/// is configured. `None`: no test token (the test skips).
fn token_config(test: &str, dir: &std::path::Path) -> Option<(TestToken, String)> {
    let token = TestToken::create(test)?;
    token.import_sgp26(dir);
    let config = token.credentials_config(&dir.join("certs"));
    assert!(!config.contains(".pem"), "{config}");
    Some((token, config))
}

#[tokio::test]
async fn download_with_ppk_on_the_token_nist_and_brainpool() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some((_token, config)) = token_config("dl_ppk", dir.path()) else {
        return;
    };
    let mut e = env(&config).await;
    assert!(e.server.log().contains("keys=4"), "{}", e.server.log());
    download_and_check(&mut e, &mut nist(), 121, true, Some(CERT_DPPB_NIST)).await;
    download_and_check(
        &mut e,
        &mut brainpool_only(),
        122,
        true,
        Some(CERT_DPPB_BRP),
    )
    .await;
    download_and_check(&mut e, &mut brainpool(), 123, true, None).await;
}

#[tokio::test]
async fn download_with_session_keys_only_on_the_token_nist_and_brainpool() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some((_token, config)) = token_config("dl_sko", dir.path()) else {
        return;
    };
    let mut e = env(&format!("session_keys_only = true\n{config}")).await;
    download_and_check(&mut e, &mut nist(), 131, false, Some(CERT_DPPB_NIST)).await;
    download_and_check(
        &mut e,
        &mut brainpool_only(),
        132,
        false,
        Some(CERT_DPPB_BRP),
    )
    .await;
}

/// The keys are really on the token: no key file is configured (the
/// SGP.26 keys compiled into the binary are not used once credentials are
/// configured), a download succeeds, and once the token is gone the next
/// InitiateAuthentication cannot be signed.
#[tokio::test]
async fn the_dp_keys_are_on_the_token_and_nowhere_else() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some((token, config)) = token_config("dl_only", dir.path()) else {
        return;
    };
    let mut e = env(&config).await;
    let data = e.server.dir.clone();
    let pem_in_data: Vec<_> = walk(&data)
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(p).is_ok_and(|t| t.contains("EC PRIVATE KEY"))
                && !p.starts_with(data.join("pki"))
        })
        .collect();
    assert!(pem_in_data.is_empty(), "{pem_in_data:?}");
    download_and_check(&mut e, &mut nist(), 141, true, Some(CERT_DPPB_NIST)).await;
    token.delete();
    // The next signature fails: an internal error, logged.
    e.server.allow_errors();
    let o = e.order(142, Some(EID), None).await;
    let refused = e
        .lpa
        .authenticate(&mut nist(), Some(&o.matching_id))
        .await
        .expect_err("no signature without the token");
    assert!(matches!(refused, LpaError::Failed { .. }), "{refused:?}");
    // The server looked for the token again, and found none.
    let log = e.server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("no token labelled") && l.contains(&token.label)),
        "{log}"
    );
    let (status, body) = e.server.ops_get("/readyz").await;
    assert_eq!((status, body.as_str()), (503, "HSM token unreachable\n"));
}

/// Every key of a download on the token: DPauth and DPpb (ES9+
/// signatures), the DPtls key (the TLS handshake the LPA makes) and the
/// master key (the PPK is unwrapped there). The DPtls certificate is one
/// the SGP.26 test CI issued (a first server's dev PKI), its key file
/// deleted once on the token; the data directory holds no master key.
#[tokio::test]
async fn a_download_with_every_key_on_the_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some((token, config)) = token_config("dl_all", dir.path()) else {
        return;
    };
    let (crt, key) = (dir.path().join("dptls.crt"), dir.path().join("dptls.key"));
    {
        let first = Server::start(&dir.path().join("first"), Some("seed_demo_profiles = 0\n"));
        let pki = first.pki();
        std::fs::copy(&pki.tls_cert, &crt).expect("copy DPtls certificate");
        std::fs::copy(&pki.tls_key, &key).expect("copy DPtls key");
    }
    let arg = format!("dptls={}", key.display());
    let (code, out, err) = token.keys(
        dir.path(),
        &token.hsm_section(),
        &["hsm-import", "--key", &arg],
    );
    assert_eq!(code, 0, "{out}{err}");
    std::fs::remove_file(&key).expect("remove the key file");
    let config = config.replacen(
        &token.hsm_section(),
        &format!(
            "{}master_key_label = \"smdpplus-master\"\n",
            token.hsm_section()
        ),
        1,
    );
    let mut e = env(&format!(
        "tls_cert = {crt:?}\ntls_key = \"pkcs11:object=dptls\"\n{config}"
    ))
    .await;
    assert!(!e.server.dir.join("master.key").exists());
    download_and_check(&mut e, &mut nist(), 151, true, Some(CERT_DPPB_NIST)).await;
    download_and_check(
        &mut e,
        &mut brainpool_only(),
        152,
        true,
        Some(CERT_DPPB_BRP),
    )
    .await;
}

/// The token goes away and comes back (deleted, initialised again under
/// its label, the keys imported again): the server finds it again without
/// a restart, and `/readyz` says so meanwhile.
#[tokio::test]
async fn the_server_finds_a_replaced_token_again() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some((token, config)) = token_config("dl_again", dir.path()) else {
        return;
    };
    let mut e = env(&config).await;
    download_and_check(&mut e, &mut nist(), 161, true, Some(CERT_DPPB_NIST)).await;
    token.replace();
    token.import_sgp26(dir.path());
    download_and_check(&mut e, &mut nist(), 162, true, Some(CERT_DPPB_NIST)).await;
    assert!(
        e.server
            .log()
            .contains("key not found on the token; finding the token again"),
        "{}",
        e.server.log()
    );
    let (status, body) = e.server.ops_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for entry in rd.flatten() {
            let p = entry.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// 1b. Several orders for one eUICC (§5.6.3): none blocks another.

/// Two bindings of one package under one otPK.DP: the 87, 88 and 86
/// segments are equal byte for byte (only the secure channel's header may
/// differ). The decoded packages, for more checks.
fn same_segments(bpp1: &[u8], bpp2: &[u8]) -> (BoundProfilePackage, BoundProfilePackage) {
    let (a, b) = (
        BoundProfilePackage::decode(bpp1).expect("bpp1"),
        BoundProfilePackage::decode(bpp2).expect("bpp2"),
    );
    assert_eq!(a.first_sequence_of_87, b.first_sequence_of_87);
    assert_eq!(a.sequence_of_88, b.sequence_of_88);
    assert_eq!(a.second_sequence_of_87, b.second_sequence_of_87);
    assert_eq!(a.sequence_of_86, b.sequence_of_86);
    (a, b)
}

#[tokio::test]
async fn an_unbound_order_downloads_beside_an_eid_linked_one() {
    let e = env("").await;
    let a = e.order(801, Some(EID), None).await;
    let b = e.order(802, None, None).await;
    let mut euicc = nist();
    // B's activation code, while A waits for this eUICC.
    let (_, bpp) = fetch_bpp(&e.lpa, &mut euicc, Some(&b.matching_id), None).await;
    e.install(&mut euicc, &bpp, &b).await;
    // Then A, by the default SM-DP+ flow (no matchingId).
    let (_, bpp) = fetch_bpp(&e.lpa, &mut euicc, None, None).await;
    e.install(&mut euicc, &bpp, &a).await;
}

#[tokio::test]
async fn an_interrupted_download_does_not_block_another_activation_code() {
    let e = env("").await;
    let a = e.order(803, Some(EID), None).await;
    let b = e.order(804, None, None).await;
    let mut euicc = nist();
    // A's download stops after AuthenticateClient.
    e.lpa
        .authenticate(&mut euicc, Some(&a.matching_id))
        .await
        .expect("authenticate A");
    let (_, bpp) = fetch_bpp(&e.lpa, &mut euicc, Some(&b.matching_id), None).await;
    e.install(&mut euicc, &bpp, &b).await;
    assert_eq!(e.state(&a.iccid).await, "Released");
}

#[tokio::test]
async fn two_downloads_back_to_back_without_a_notification_between() {
    let e = env("").await;
    let a = e.order(805, None, None).await;
    let b = e.order(806, None, None).await;
    let mut euicc = nist();
    // A is delivered; its installation result stays on the device.
    let (_, bpp_a) = fetch_bpp(&e.lpa, &mut euicc, Some(&a.matching_id), None).await;
    let (pir_a, _) = euicc.load_bound_profile_package(&bpp_a).expect("load A");
    assert_eq!(e.state(&a.iccid).await, "Downloaded");
    // B right after.
    let (_, bpp) = fetch_bpp(&e.lpa, &mut euicc, Some(&b.matching_id), None).await;
    e.install(&mut euicc, &bpp, &b).await;
    // A's result, sent when the LPA next can.
    assert_eq!(e.lpa.notify(pir_a).await.expect("notify A"), 204);
    assert_eq!(e.state(&a.iccid).await, "Installed");
}

#[tokio::test]
async fn a_delivered_order_expires_and_its_late_result_still_counts() {
    let mut e = env("").await;
    let a = e.order(809, None, None).await;
    let mut euicc = nist();
    let (_, bpp) = fetch_bpp(&e.lpa, &mut euicc, Some(&a.matching_id), None).await;
    let (pir, _) = euicc.load_bound_profile_package(&bpp).expect("load");
    e.notes.expect(&a.iccid, 3, None).await;
    // The installation result does not come; the order's time runs out.
    e.set_expiry_in_the_past(&a.iccid).await;
    let r = e.lpa.authenticate(&mut euicc, Some(&a.matching_id)).await;
    assert_eq!(refused(r), "8.8.5/4.10");
    assert_eq!(e.state(&a.iccid).await, "Error");
    let n = e.notes.expect(&a.iccid, 4, Some("8.8.5/4.10")).await;
    assert_eq!(n["eid"], EID);
    // The result arrives late and is still processed.
    assert_eq!(e.lpa.notify(pir).await.expect("notify"), 204);
    assert_eq!(e.state(&a.iccid).await, "Installed");
    e.notes.expect(&a.iccid, 4, None).await;
}

#[tokio::test]
async fn strict_order_matching_keeps_the_literal_rule() {
    let e = env("strict_order_matching = true\n").await;
    let a = e.order(807, Some(EID), None).await;
    let b = e.order(808, None, None).await;
    let mut euicc = nist();
    let r = e.lpa.authenticate(&mut euicc, Some(&b.matching_id)).await;
    assert_eq!(refused(r), "8.2.6/3.8");
    let (_, bpp) = fetch_bpp(&e.lpa, &mut euicc, Some(&a.matching_id), None).await;
    e.install(&mut euicc, &bpp, &a).await;
    // A is installed: B is free to go.
    let (_, bpp) = fetch_bpp(&e.lpa, &mut euicc, Some(&b.matching_id), None).await;
    e.install(&mut euicc, &bpp, &b).await;
}

// ---------------------------------------------------------------------------
// 2. Activation code and EID-linked orders.

#[tokio::test]
async fn activation_code_order_is_linked_to_the_eid_at_bpp_time() {
    let mut e = env("").await;
    let o = e.order(201, None, None).await;
    assert_eq!(e.profile(&o.iccid).await["eid"], Value::Null);
    let mut euicc = nist();

    // Without a linked order the matchingId is required (the default
    // SM-DP+ flow refuses the EID) and must match (§5.6.3 p.170).
    let r = e.lpa.authenticate(&mut euicc, None).await;
    assert_eq!(refused(r), "8.1.1/3.8");
    let r = e
        .lpa
        .authenticate(&mut euicc, Some("WRONG-MATCHING-ID"))
        .await;
    assert_eq!(refused(r), "8.2.6/3.8");
    assert_eq!(e.profile(&o.iccid).await["downloadAttempts"], 0);

    let auth = e
        .lpa
        .authenticate(&mut euicc, Some(&o.matching_id))
        .await
        .expect("authenticate with the matchingId");
    // Not linked yet: linking happens with the BPP (§3.1.3.2 step 9).
    let p = e.profile(&o.iccid).await;
    assert_eq!(p["state"], "Released");
    assert_eq!(p["eid"], Value::Null);
    assert_eq!(p["downloadAttempts"], 1);

    let pdr = prepare(&mut euicc, &auth, None, false);
    let bpp = get_bpp(&e.lpa, &auth.transaction_id, pdr)
        .await
        .expect("BPP");
    let p = e.profile(&o.iccid).await;
    assert_eq!(p["state"], "Downloaded");
    assert_eq!(p["eid"], EID);
    let n3 = e.notes.expect(&o.iccid, 3, None).await;
    assert_eq!(n3["eid"], EID);

    e.install(&mut euicc, &bpp, &o).await;
    let n4 = e.notes.expect(&o.iccid, 4, None).await;
    assert_eq!(n4["eid"], EID);
}

#[tokio::test]
async fn eid_linked_order_needs_no_matching_id() {
    let mut e = env("").await;
    // ctxParams1 without matchingId, then with an empty one: both pick the
    // order linked to the EID (§5.6.3 p.170).
    for (series, matching) in [(211, None), (212, Some(""))] {
        let o = e.order(series, Some(EID), None).await;
        let mut euicc = nist();
        let (_, bpp) = fetch_bpp(&e.lpa, &mut euicc, matching, None).await;
        assert_eq!(e.state(&o.iccid).await, "Downloaded");
        e.install(&mut euicc, &bpp, &o).await;
        e.notes.expect(&o.iccid, 3, None).await;
        e.notes.expect(&o.iccid, 4, None).await;
    }
    // A present matchingId must match the linked order.
    let o = e.order(213, Some(EID), None).await;
    let r = e.lpa.authenticate(&mut nist(), Some("NOT-THIS-ONE")).await;
    assert_eq!(refused(r), "8.2.6/3.8");
    assert_eq!(e.state(&o.iccid).await, "Released");
}

// ---------------------------------------------------------------------------
// 3. Confirmation code (§3.1.3.2 steps 6-8, §5.6.2).

#[tokio::test]
async fn confirmation_code_wrong_missing_then_right() {
    let mut e = env("").await;
    let o = e.order(301, Some(EID), Some("12345678")).await;
    assert_eq!(e.profile(&o.iccid).await["confirmationCodeRequired"], true);
    let mut euicc = nist();

    // Wrong code: refused, counted, the order stays Released.
    let auth = e
        .lpa
        .authenticate(&mut euicc, Some(&o.matching_id))
        .await
        .expect("authenticate");
    let smdp_signed2 =
        smdpplus::asn1::rsp::SmdpSigned2::decode(&auth.smdp_signed2).expect("smdpSigned2");
    assert!(smdp_signed2.cc_required_flag, "ccRequiredFlag");
    let pdr = prepare(&mut euicc, &auth, Some("87654321"), false);
    let r = get_bpp(&e.lpa, &auth.transaction_id, pdr).await;
    assert_eq!(refused(r), "8.2.7/3.8");
    let p = e.profile(&o.iccid).await;
    assert_eq!(p["state"], "Released");
    assert_eq!(p["confirmationCodeAttempts"], 1);

    // Missing code: refused as missing.
    let auth = e
        .lpa
        .authenticate(&mut euicc, Some(&o.matching_id))
        .await
        .expect("authenticate");
    let pdr = prepare(&mut euicc, &auth, None, false);
    let r = get_bpp(&e.lpa, &auth.transaction_id, pdr).await;
    assert_eq!(refused(r), "8.2.7/2.2");
    assert_eq!(e.state(&o.iccid).await, "Released");

    // The counter is kept with the order, across sessions.
    assert_eq!(e.profile(&o.iccid).await["confirmationCodeAttempts"], 1);

    // Right code: the download completes.
    let (_, bpp) = fetch_bpp(&e.lpa, &mut euicc, Some(&o.matching_id), Some("12345678")).await;
    assert_eq!(e.state(&o.iccid).await, "Downloaded");
    e.install(&mut euicc, &bpp, &o).await;
    e.notes.expect(&o.iccid, 3, None).await;
    e.notes.expect(&o.iccid, 4, None).await;
    // A wrong code under the limit is not notified (§3.1.3.2 step 8).
    e.notes.quiet(&o.iccid, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn confirmation_code_over_the_limit_ends_the_order() {
    let mut e = env("max_cc_attempts = 2").await;
    let o = e.order(311, Some(EID), Some("2468")).await;
    let mut euicc = nist();
    for (attempt, expected) in [(1, "8.2.7/3.8"), (2, "8.2.7/6.4")] {
        let auth = e
            .lpa
            .authenticate(&mut euicc, Some(&o.matching_id))
            .await
            .expect("authenticate");
        let pdr = prepare(&mut euicc, &auth, Some("1357"), false);
        let r = get_bpp(&e.lpa, &auth.transaction_id, pdr).await;
        assert_eq!(refused(r), expected, "attempt {attempt}");
        assert_eq!(
            e.profile(&o.iccid).await["confirmationCodeAttempts"],
            attempt
        );
    }
    assert_eq!(e.state(&o.iccid).await, "Error");
    let n = e.notes.expect(&o.iccid, 2, Some("8.2.7/6.4")).await;
    assert_eq!(n["eid"], EID);
    // The order is over: even the right code gets nothing.
    let r = e.lpa.authenticate(&mut euicc, Some(&o.matching_id)).await;
    assert_eq!(refused(r), "8.2/1.2", "an ended order authenticated again");
    assert_eq!(e.state(&o.iccid).await, "Error");
}

// ---------------------------------------------------------------------------
// 4. Retries (§3.1.3.2 step 9, §5.6.2).

#[tokio::test]
async fn retry_with_the_same_otpk_gets_the_same_bpp_re_signed() {
    let mut e = env("").await;
    let o = e.order(401, Some(EID), None).await;
    let mut euicc = nist();
    let auth = e
        .lpa
        .authenticate(&mut euicc, Some(&o.matching_id))
        .await
        .expect("authenticate");
    let pdr1 = prepare(&mut euicc, &auth, None, false);
    let bpp1 = get_bpp(&e.lpa, &auth.transaction_id, pdr1)
        .await
        .expect("first BPP");
    assert_eq!(e.state(&o.iccid).await, "Downloaded");

    // The LPA lost the BPP: same session, same otPK.EUICC.
    let pdr2 = prepare(&mut euicc, &auth, None, true);
    let bpp2 = get_bpp(&e.lpa, &auth.transaction_id, pdr2)
        .await
        .expect("retried BPP");
    assert_eq!(e.state(&o.iccid).await, "Downloaded");
    let (a, b) = same_segments(&bpp1, &bpp2);
    let (s1, s2) = (
        &a.initialise_secure_channel_request,
        &b.initialise_secure_channel_request,
    );
    assert_eq!(s1.smdp_otpk, s2.smdp_otpk, "same otPK.DP");
    assert_eq!(s1.transaction_id, s2.transaction_id);
    assert_ne!(s1.smdp_sign, s2.smdp_sign, "BF23 signed again");
    let h = history(&e, &o.iccid).await;
    assert!(
        h.ends_with(&[
            ("bppDelivered".into(), Value::Null),
            ("bppDelivered".into(), json!("same_key")),
        ]),
        "{h:?}"
    );
    assert_eq!(retries_metric(&e, "same_key").await, 1);

    e.install(&mut euicc, &bpp2, &o).await;
    // One point 3 (Released -> Downloaded), none for the retry.
    e.notes.expect(&o.iccid, 3, None).await;
    e.notes.expect(&o.iccid, 4, None).await;
    e.notes.quiet(&o.iccid, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn new_otpk_in_the_same_session_is_rebound_and_a_new_session_works() {
    let mut e = env("").await;
    let o = e.order(411, Some(EID), None).await;
    let mut euicc = nist();
    let (auth, first) = fetch_bpp(&e.lpa, &mut euicc, Some(&o.matching_id), None).await;
    // A new otPK.EUICC in the same session: the stored Protected Profile
    // Package is bound again (§5.6.2 allows re-binding), and the eUICC
    // installs the new BPP.
    let pdr = prepare(&mut euicc, &auth, None, false);
    let second = get_bpp(&e.lpa, &auth.transaction_id, pdr)
        .await
        .expect("re-bound BPP");
    assert_ne!(first, second, "a new binding, not the old BPP");
    assert_eq!(e.state(&o.iccid).await, "Downloaded");
    e.install(&mut euicc, &second, &o).await;
    e.notes.expect(&o.iccid, 3, None).await;
    e.notes.expect(&o.iccid, 4, None).await;

    // A full new session after Downloaded re-binds too.
    let o = e.order(412, Some(EID), None).await;
    let mut euicc = nist();
    fetch_bpp(&e.lpa, &mut euicc, Some(&o.matching_id), None).await;
    let mut euicc = nist();
    let (_, bpp) = fetch_bpp(&e.lpa, &mut euicc, Some(&o.matching_id), None).await;
    assert_eq!(e.profile(&o.iccid).await["downloadAttempts"], 2);
    e.install(&mut euicc, &bpp, &o).await;
    e.notes.expect(&o.iccid, 3, None).await;
    e.notes.expect(&o.iccid, 4, None).await;
}

#[tokio::test]
async fn an_ended_order_cannot_be_bound_again() {
    let mut e = env("").await;
    let o = e.order(421, Some(EID), None).await;
    let mut euicc = nist();
    let (auth, bpp) = fetch_bpp(&e.lpa, &mut euicc, Some(&o.matching_id), None).await;
    e.notes.expect(&o.iccid, 3, None).await;
    let retry = prepare(&mut euicc, &auth, None, true);
    let (pir, _) = euicc.load_bound_profile_package(&bpp).expect("load");
    assert_eq!(e.lpa.notify(pir).await.expect("notify"), 204);
    assert_eq!(e.state(&o.iccid).await, "Installed");
    e.notes.expect(&o.iccid, 4, None).await;
    // After the installation result the order is over: no BPP again.
    let r = get_bpp(&e.lpa, &auth.transaction_id, retry).await;
    assert!(matches!(refused(r).as_str(), "8.2/3.7" | "8.10.1/3.9"));
    assert_eq!(e.state(&o.iccid).await, "Installed");
}

#[tokio::test]
async fn retry_in_the_same_session_still_verifies_euicc_signature2() {
    let e = env("").await;
    let o = e.order(431, Some(EID), None).await;
    let mut euicc = nist();
    let (auth, _) = fetch_bpp(&e.lpa, &mut euicc, Some(&o.matching_id), None).await;
    // Same otPK, but euiccSignature2 forged.
    let pdr = prepare(&mut euicc, &auth, None, true);
    let PrepareDownloadResponse::Ok(mut ok) = PrepareDownloadResponse::decode(&pdr).expect("pdr")
    else {
        panic!("error PDR");
    };
    ok.euicc_signature2.0[20] ^= 0x01;
    let r = get_bpp(
        &e.lpa,
        &auth.transaction_id,
        PrepareDownloadResponse::Ok(ok).encode(),
    )
    .await;
    assert_eq!(refused(r), "8.1/6.1");
}

#[tokio::test]
async fn retry_in_the_same_session_still_checks_the_confirmation_code() {
    let e = env("").await;
    let o = e.order(441, Some(EID), Some("9999")).await;
    let mut euicc = nist();
    let auth = e
        .lpa
        .authenticate(&mut euicc, Some(&o.matching_id))
        .await
        .expect("authenticate");
    let pdr = prepare(&mut euicc, &auth, Some("9999"), false);
    get_bpp(&e.lpa, &auth.transaction_id, pdr)
        .await
        .expect("first BPP");
    let pdr = prepare(&mut euicc, &auth, None, true);
    let r = get_bpp(&e.lpa, &auth.transaction_id, pdr).await;
    assert_eq!(refused(r), "8.2.7/2.2");
}

#[tokio::test]
async fn an_invalid_otpk_is_refused_without_changing_the_order() {
    let e = env("").await;
    let o = e.order(451, Some(EID), None).await;
    let mut euicc = nist();
    let auth = e
        .lpa
        .authenticate(&mut euicc, Some(&o.matching_id))
        .await
        .expect("authenticate");
    let pdr = prepare(&mut euicc, &auth, None, false);
    // A point that is not on P-256, correctly signed by the eUICC.
    let PrepareDownloadResponse::Ok(mut ok) = PrepareDownloadResponse::decode(&pdr).expect("pdr")
    else {
        panic!("error PDR");
    };
    let mut signed = ok.euicc_signed2.value().clone();
    signed.euicc_otpk = [vec![0x04], vec![0x11; 64]].concat();
    ok.euicc_signed2 = Signed::new(signed);
    let mut data = ok.euicc_signed2.raw().to_vec();
    data.extend_from_slice(&auth.smdp_signature2);
    ok.euicc_signature2 = EcdsaSignature(*nist_key().sign(&data).expect("sign").as_raw());
    let r = get_bpp(
        &e.lpa,
        &auth.transaction_id,
        PrepareDownloadResponse::Ok(ok).encode(),
    )
    .await;
    assert_eq!(refused(r), "8.1/6.1");
    assert_eq!(e.state(&o.iccid).await, "Released");
    // The session is still usable with a good otPK.
    let pdr = prepare(&mut euicc, &auth, None, false);
    get_bpp(&e.lpa, &auth.transaction_id, pdr)
        .await
        .expect("BPP after the bad otPK");
    assert_eq!(e.state(&o.iccid).await, "Downloaded");
}

// ---------------------------------------------------------------------------
// 4b. Retries in a new RSP session (§3.1.3 step 5, §5.6.2, §5.6.3
// bppEuiccOtpk, §5.7.5, §5.7.15).

/// bppEuiccOtpk of an AuthenticateClient response.
fn offered_otpk(auth: &AuthenticateClientResponse) -> Option<Vec<u8>> {
    SmdpSigned2::decode(&auth.smdp_signed2)
        .expect("smdpSigned2")
        .bpp_euicc_otpk
}

/// euiccOtpk of a PrepareDownloadResponse.
fn otpk_of(pdr: &[u8]) -> Vec<u8> {
    let PrepareDownloadResponse::Ok(ok) = PrepareDownloadResponse::decode(pdr).expect("PDR") else {
        panic!("PrepareDownload failed");
    };
    ok.euicc_signed2.value().euicc_otpk.clone()
}

/// The events and retry kinds of an order's history.
async fn history(e: &Env, iccid: &str) -> Vec<(String, Value)> {
    e.op.show(iccid).await["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| {
            (
                h["event"].as_str().unwrap_or_default().to_owned(),
                h["retry"].clone(),
            )
        })
        .collect()
}

/// Whether the SM-DP+ keeps a bound package for the order (admin view).
async fn kept(e: &Env, iccid: &str) -> bool {
    !e.profile(iccid).await["boundPackageKeptUntil"].is_null()
}

/// `smdpplus_bpp_retries_total{kind}` from /metrics.
async fn retries_metric(e: &Env, kind: &str) -> u64 {
    let (_, metrics) = e.server.ops_get("/metrics").await;
    let prefix = format!("smdpplus_bpp_retries_total{{kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().expect("counter"))
        .unwrap_or(0)
}

/// A first session delivers a BPP that the eUICC does not load.
async fn deliver_unloaded(
    e: &mut Env,
    euicc: &mut SoftEuicc,
    o: &Order,
) -> (AuthenticateClientResponse, Vec<u8>, Vec<u8>) {
    let auth = e
        .lpa
        .authenticate(euicc, Some(&o.matching_id))
        .await
        .expect("authenticate");
    assert_eq!(offered_otpk(&auth), None, "nothing to retry yet");
    let pdr = prepare(euicc, &auth, None, false);
    let otpk = otpk_of(&pdr);
    let bpp = get_bpp(&e.lpa, &auth.transaction_id, pdr)
        .await
        .expect("first BPP");
    assert_eq!(e.state(&o.iccid).await, "Downloaded");
    assert!(kept(e, &o.iccid).await, "the delivered package is kept");
    e.notes.expect(&o.iccid, 3, None).await;
    (auth, otpk, bpp)
}

#[tokio::test]
async fn retry_in_a_new_session_reuses_the_euicc_key_and_the_same_segments() {
    let mut e = env("").await;
    let o = e.order(461, Some(EID), None).await;
    let mut euicc = nist();
    let (auth1, otpk1, bpp1) = deliver_unloaded(&mut e, &mut euicc, &o).await;

    // The download stopped after GetBoundProfilePackage. A new session:
    // GetEUICCChallenge keeps the unused key pair, the SM-DP+ names it.
    let auth2 = e
        .lpa
        .authenticate(&mut euicc, Some(&o.matching_id))
        .await
        .expect("authenticate again");
    assert_eq!(euicc.kept_otpk(), Some(otpk1.as_slice()));
    assert_ne!(auth2.transaction_id, auth1.transaction_id);
    assert_eq!(offered_otpk(&auth2), Some(otpk1.clone()), "bppEuiccOtpk");
    let pdr2 = prepare(&mut euicc, &auth2, None, false);
    assert_eq!(otpk_of(&pdr2), otpk1, "the eUICC reused its key pair");
    assert_eq!(euicc.kept_otpk(), None, "the kept pair serves this session");
    let bpp2 = get_bpp(&e.lpa, &auth2.transaction_id, pdr2)
        .await
        .expect("retried BPP");

    let (a, b) = same_segments(&bpp1, &bpp2);
    let (s1, s2) = (
        &a.initialise_secure_channel_request,
        &b.initialise_secure_channel_request,
    );
    assert_eq!(
        s1.transaction_id.as_bytes(),
        auth1.transaction_id.as_slice()
    );
    assert_eq!(
        s2.transaction_id.as_bytes(),
        auth2.transaction_id.as_slice()
    );
    assert_eq!(s1.smdp_otpk, s2.smdp_otpk, "same otPK.DP");
    assert_ne!(s1.smdp_sign, s2.smdp_sign, "BF23 signed again");

    e.install(&mut euicc, &bpp2, &o).await;
    assert!(!kept(&e, &o.iccid).await, "erased once Installed");
    let p = e.profile(&o.iccid).await;
    assert_eq!(p["downloadAttempts"], 2);
    let h = history(&e, &o.iccid).await;
    assert!(
        h.ends_with(&[
            ("bppDelivered".into(), Value::Null),
            ("bppDelivered".into(), json!("same_key")),
            ("installSucceeded".into(), Value::Null),
        ]),
        "{h:?}"
    );
    assert_eq!(retries_metric(&e, "same_key").await, 1);
    assert_eq!(retries_metric(&e, "rebind").await, 0);
    // Point 3 once (Released -> Downloaded), then point 4.
    e.notes.expect(&o.iccid, 4, None).await;
    e.notes.quiet(&o.iccid, Duration::from_millis(500)).await;

    // A session postponed by the eUICC (§5.7.14) keeps its key too.
    let o = e.order(462, Some(EID), None).await;
    let (_, otpk1, bpp1) = deliver_unloaded(&mut e, &mut euicc, &o).await;
    let (txid, csr) = euicc
        .cancel_session(CancelSessionReason::Postponed)
        .expect("ES10b.CancelSession");
    cancel(&e.lpa, &txid, csr).await.expect("cancel postponed");
    assert_eq!(e.state(&o.iccid).await, "Downloaded");
    assert!(kept(&e, &o.iccid).await);
    let auth = e
        .lpa
        .authenticate(&mut euicc, Some(&o.matching_id))
        .await
        .expect("authenticate again");
    assert_eq!(offered_otpk(&auth), Some(otpk1));
    let pdr = prepare(&mut euicc, &auth, None, false);
    let bpp2 = get_bpp(&e.lpa, &auth.transaction_id, pdr)
        .await
        .expect("retried BPP");
    same_segments(&bpp1, &bpp2);
    e.install(&mut euicc, &bpp2, &o).await;
    assert_eq!(retries_metric(&e, "same_key").await, 2);
}

#[tokio::test]
async fn an_euicc_without_the_kept_key_gets_a_new_binding_that_installs() {
    let mut e = env("").await;
    let o = e.order(463, Some(EID), None).await;
    let (_, otpk1, bpp1) = deliver_unloaded(&mut e, &mut nist(), &o).await;

    // Another eUICC state (reset, or one that keeps no key): the SM-DP+
    // offers the old otPK, the eUICC makes a new pair, the package is
    // bound anew.
    let mut euicc = nist();
    let auth = e
        .lpa
        .authenticate(&mut euicc, Some(&o.matching_id))
        .await
        .expect("authenticate again");
    assert_eq!(offered_otpk(&auth), Some(otpk1.clone()));
    let pdr = prepare(&mut euicc, &auth, None, false);
    assert_ne!(otpk_of(&pdr), otpk1);
    let bpp2 = get_bpp(&e.lpa, &auth.transaction_id, pdr)
        .await
        .expect("re-bound BPP");
    let (a, b) = (
        BoundProfilePackage::decode(&bpp1).expect("bpp1"),
        BoundProfilePackage::decode(&bpp2).expect("bpp2"),
    );
    assert_ne!(
        a.initialise_secure_channel_request.smdp_otpk,
        b.initialise_secure_channel_request.smdp_otpk,
        "a new otPK.DP"
    );
    assert_ne!(a.first_sequence_of_87, b.first_sequence_of_87);
    assert_ne!(a.second_sequence_of_87, b.second_sequence_of_87);
    e.install(&mut euicc, &bpp2, &o).await;
    assert!(!kept(&e, &o.iccid).await);
    let h = history(&e, &o.iccid).await;
    assert!(
        h.ends_with(&[
            ("bppDelivered".into(), json!("rebind")),
            ("installSucceeded".into(), Value::Null),
        ]),
        "{h:?}"
    );
    assert_eq!(retries_metric(&e, "rebind").await, 1);
    assert_eq!(retries_metric(&e, "same_key").await, 0);
}

#[tokio::test]
async fn a_kept_package_is_erased_when_the_order_ends() {
    let mut e = env("").await;
    // Installation failure: Error.
    let o = e.order(464, Some(EID), None).await;
    let mut euicc = nist();
    let (_, _, bpp) = deliver_unloaded(&mut e, &mut euicc, &o).await;
    let mut b = BoundProfilePackage::decode(&bpp).expect("bpp");
    let last = b.sequence_of_86.last_mut().expect("86");
    let n = last.len();
    last[n - 1] ^= 1;
    let (pir, installed) = euicc.load_bound_profile_package(&b.to_der()).expect("load");
    assert!(installed.is_none());
    assert_eq!(e.lpa.notify(pir).await.expect("notify"), 204);
    assert_eq!(e.state(&o.iccid).await, "Error");
    assert!(!kept(&e, &o.iccid).await, "erased in Error");
    // Then cancelled back to the inventory: nothing comes back.
    let (_, v) =
        e.op.call(
            "cancelOrder",
            json!({"iccid": o.iccid, "eid": EID, "matchingId": o.matching_id,
                   "finalProfileStatusIndicator": "Available"}),
        )
        .await;
    assert_eq!(status(&v), "Executed-Success", "cancelOrder: {v}");
    assert_eq!(e.state(&o.iccid).await, "Available");
    assert!(!kept(&e, &o.iccid).await);

    // A terminal CancelSession in a retry session: Error, erased, and the
    // order cannot be retried.
    let o = e.order(465, Some(EID), None).await;
    let mut euicc = nist();
    deliver_unloaded(&mut e, &mut euicc, &o).await;
    e.lpa
        .authenticate(&mut euicc, Some(&o.matching_id))
        .await
        .expect("authenticate again");
    let (txid, csr) = euicc
        .cancel_session(CancelSessionReason::EndUserRejection)
        .expect("ES10b.CancelSession");
    cancel(&e.lpa, &txid, csr).await.expect("cancel");
    assert_eq!(e.state(&o.iccid).await, "Error");
    assert!(!kept(&e, &o.iccid).await, "erased on cancellation");
    assert_eq!(euicc.kept_otpk(), None, "the eUICC dropped its key too");

    // Expiry of the order while the package waits: Error, erased.
    let o = e.order(466, Some(EID), None).await;
    let mut euicc = nist();
    deliver_unloaded(&mut e, &mut euicc, &o).await;
    e.set_expiry_in_the_past(&o.iccid).await;
    let r = e.lpa.authenticate(&mut euicc, Some(&o.matching_id)).await;
    assert_eq!(refused(r), "8.8.5/4.10");
    assert_eq!(e.state(&o.iccid).await, "Error");
    assert!(!kept(&e, &o.iccid).await, "erased on expiry");
}

#[tokio::test]
async fn bpp_retry_secs_zero_keeps_nothing_and_binds_anew() {
    let e = env("[es9]\nbpp_retry_secs = 0").await;
    let o = e.order(467, Some(EID), None).await;
    let mut euicc = nist();
    fetch_bpp(&e.lpa, &mut euicc, Some(&o.matching_id), None).await;
    assert!(!kept(&e, &o.iccid).await);
    let auth = e
        .lpa
        .authenticate(&mut euicc, Some(&o.matching_id))
        .await
        .expect("authenticate again");
    assert!(euicc.kept_otpk().is_some(), "the eUICC kept its key");
    assert_eq!(offered_otpk(&auth), None, "nothing kept, nothing offered");
    let pdr = prepare(&mut euicc, &auth, None, false);
    let bpp = get_bpp(&e.lpa, &auth.transaction_id, pdr)
        .await
        .expect("re-bound BPP");
    e.install(&mut euicc, &bpp, &o).await;
    assert_eq!(retries_metric(&e, "rebind").await, 1);
}

// ---------------------------------------------------------------------------
// 5. CancelSession (§3.1.3.1, §5.6.5, table 32b).

#[tokio::test]
async fn cancel_session_with_every_reason() {
    let mut e = env("").await;
    let terminal = [
        (CancelSessionReason::EndUserRejection, "8.8.5/3.8"),
        (CancelSessionReason::PprNotAllowed, "8.2.8/1.2"),
        (CancelSessionReason::MetadataMismatch, "8.2.9/3.11"),
        (CancelSessionReason::UndefinedReason, "8/4.2"),
    ];
    for (i, (reason, expected)) in terminal.into_iter().enumerate() {
        let o = e.order(501 + i as u32, Some(EID), None).await;
        let mut euicc = nist();
        let auth = e
            .lpa
            .authenticate(&mut euicc, Some(&o.matching_id))
            .await
            .expect("authenticate");
        let (txid, csr) = euicc.cancel_session(reason).expect("ES10b.CancelSession");
        assert_eq!(txid, auth.transaction_id);
        cancel(&e.lpa, &txid, csr.clone())
            .await
            .unwrap_or_else(|err| panic!("cancel {reason:?}: {err}"));
        assert_eq!(e.state(&o.iccid).await, "Error", "{reason:?}");
        let n = e.notes.expect(&o.iccid, 1, Some(expected)).await;
        assert_eq!(n["eid"], EID);
        // The session is over.
        assert_eq!(refused(cancel(&e.lpa, &txid, csr).await), "8.10.1/3.9");
    }

    // An order by matchingId alone: the EID of the eUICC that authenticated
    // is in the notification all the same (§5.3.5 "SHALL be set if
    // available").
    let o = e.order(530, None, None).await;
    let mut euicc = nist();
    e.lpa
        .authenticate(&mut euicc, Some(&o.matching_id))
        .await
        .expect("authenticate");
    let (txid, csr) = euicc
        .cancel_session(CancelSessionReason::EndUserRejection)
        .expect("cancel");
    cancel(&e.lpa, &txid, csr).await.expect("cancel");
    assert_eq!(e.state(&o.iccid).await, "Error");
    let n = e.notes.expect(&o.iccid, 1, Some("8.8.5/3.8")).await;
    assert_eq!(n["eid"], EID, "{n}");

    // loadBppExecutionError after the BPP was delivered: point 3.
    let o = e.order(510, Some(EID), None).await;
    let mut euicc = nist();
    fetch_bpp(&e.lpa, &mut euicc, Some(&o.matching_id), None).await;
    e.notes.expect(&o.iccid, 3, None).await;
    let (txid, csr) = euicc
        .cancel_session(CancelSessionReason::LoadBppExecutionError)
        .expect("cancel");
    cancel(&e.lpa, &txid, csr).await.expect("cancel after BPP");
    assert_eq!(e.state(&o.iccid).await, "Error");
    e.notes.expect(&o.iccid, 3, Some("8.2.10/4.2")).await;

    // postponed and timeout keep the order Released, without notification.
    for (i, reason) in [CancelSessionReason::Postponed, CancelSessionReason::Timeout]
        .into_iter()
        .enumerate()
    {
        let o = e.order(520 + i as u32, Some(EID), None).await;
        let mut euicc = nist();
        e.lpa
            .authenticate(&mut euicc, Some(&o.matching_id))
            .await
            .expect("authenticate");
        let (txid, csr) = euicc.cancel_session(reason).expect("cancel");
        cancel(&e.lpa, &txid, csr.clone()).await.expect("cancel");
        assert_eq!(e.state(&o.iccid).await, "Released", "{reason:?}");
        assert_eq!(refused(cancel(&e.lpa, &txid, csr).await), "8.10.1/3.9");
        // Available for a further retry (§3.1.3.1 step 5).
        let mut euicc = nist();
        let (_, bpp) = fetch_bpp(&e.lpa, &mut euicc, Some(&o.matching_id), None).await;
        let (pir, installed) = euicc.load_bound_profile_package(&bpp).expect("load");
        assert!(installed.is_some());
        assert_eq!(e.lpa.notify(pir).await.expect("notify"), 204);
        assert_eq!(e.state(&o.iccid).await, "Installed");
        e.notes.expect(&o.iccid, 3, None).await;
        e.notes.expect(&o.iccid, 4, None).await;
        e.notes.quiet(&o.iccid, Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn cancel_session_refusals() {
    let mut e = env("").await;
    let o = e.order(530, Some(EID), None).await;
    let mut euicc = nist();

    // Before AuthenticateClient the session has no eUICC: unknown to cancel.
    let init = initiate(&e.lpa, &mut euicc).await;
    let oid = smdp_oid_of(&init.server_certificate);
    let (_, csr) = euicc
        .cancel_session_with(
            &init.transaction_id,
            oid.clone(),
            CancelSessionReason::EndUserRejection,
        )
        .expect("csr");
    assert_eq!(
        refused(cancel(&e.lpa, &init.transaction_id, csr).await),
        "8.10.1/3.9"
    );

    let auth = e
        .lpa
        .authenticate(&mut euicc, Some(&o.matching_id))
        .await
        .expect("authenticate");
    let txid = auth.transaction_id.clone();
    let reason = CancelSessionReason::EndUserRejection;

    // Another SM-DP+'s OID.
    let other = Oid::from_arcs(&[2, 999, 10, 20]).expect("oid");
    let (_, csr) = euicc
        .cancel_session_with(&txid, other, reason)
        .expect("csr");
    assert_eq!(refused(cancel(&e.lpa, &txid, csr).await), "8.8/3.10");

    // A forged signature.
    let (_, csr) = euicc
        .cancel_session_with(&txid, oid.clone(), reason)
        .expect("csr");
    let CancelSessionResponse::Ok(mut ok) = CancelSessionResponse::decode(&csr).expect("csr")
    else {
        panic!("error csr");
    };
    ok.euicc_cancel_session_signature.0[7] ^= 0x80;
    let forged = CancelSessionResponse::Ok(ok).encode();
    assert_eq!(refused(cancel(&e.lpa, &txid, forged).await), "8.1/6.1");

    // Genuinely signed for another transactionId than the one it is sent
    // under: that session is unknown here.
    let (_, csr) = euicc
        .cancel_session_with(&[0xAB; 16], oid.clone(), reason)
        .expect("csr");
    assert_eq!(refused(cancel(&e.lpa, &txid, csr).await), "8.10.1/3.9");

    // An unknown transactionId.
    let unknown = [0x5A; 16];
    let (_, csr) = euicc
        .cancel_session_with(&unknown, oid.clone(), reason)
        .expect("csr");
    assert_eq!(refused(cancel(&e.lpa, &unknown, csr).await), "8.10.1/3.9");

    // None of these touched the order or the session.
    assert_eq!(e.state(&o.iccid).await, "Released");
    let (_, csr) = euicc.cancel_session_with(&txid, oid, reason).expect("csr");
    cancel(&e.lpa, &txid, csr).await.expect("genuine cancel");
    assert_eq!(e.state(&o.iccid).await, "Error");
    e.notes.expect(&o.iccid, 1, Some("8.8.5/3.8")).await;
}

// ---------------------------------------------------------------------------
// 6. Expiry and limits.

#[tokio::test]
async fn expired_sessions_are_unknown() {
    let e = env("session_ttl_secs = 600").await;
    let o = e.order(601, Some(EID), None).await;
    // Session A waits for AuthenticateClient, session B for the BPP.
    let mut a = nist();
    let init = initiate(&e.lpa, &mut a).await;
    let asr = authenticate_server(&mut a, &e.lpa, &init, Some(&o.matching_id));
    let mut b = nist();
    let auth = e
        .lpa
        .authenticate(&mut b, Some(&o.matching_id))
        .await
        .expect("authenticate");
    let pdr = prepare(&mut b, &auth, None, false);
    e.server.advance_clock(601).await;
    let r = authenticate_client(&e.lpa, &init.transaction_id, asr).await;
    assert_eq!(refused(r), "8.10.1/3.9");
    let r = get_bpp(&e.lpa, &auth.transaction_id, pdr).await;
    assert_eq!(refused(r), "8.10.1/3.9");
    let (_, csr) = b
        .cancel_session(CancelSessionReason::EndUserRejection)
        .expect("csr");
    assert_eq!(
        refused(cancel(&e.lpa, &auth.transaction_id, csr).await),
        "8.10.1/3.9"
    );
    assert_eq!(e.state(&o.iccid).await, "Released");
}

#[tokio::test]
async fn expired_orders_end_in_error_with_a_notification() {
    let mut e = env("").await;
    // Expired before AuthenticateClient.
    let o = e.order(611, Some(EID), None).await;
    e.set_expiry_in_the_past(&o.iccid).await;
    let r = e.lpa.authenticate(&mut nist(), Some(&o.matching_id)).await;
    assert_eq!(refused(r), "8.8.5/4.10");
    assert_eq!(e.state(&o.iccid).await, "Error");
    e.notes.expect(&o.iccid, 1, Some("8.8.5/4.10")).await;

    // Expired between AuthenticateClient and GetBoundProfilePackage.
    let o = e.order(612, Some(EID), None).await;
    let mut euicc = nist();
    let auth = e
        .lpa
        .authenticate(&mut euicc, Some(&o.matching_id))
        .await
        .expect("authenticate");
    e.set_expiry_in_the_past(&o.iccid).await;
    let pdr = prepare(&mut euicc, &auth, None, false);
    let r = get_bpp(&e.lpa, &auth.transaction_id, pdr).await;
    assert_eq!(refused(r), "8.8.5/4.10");
    assert_eq!(e.state(&o.iccid).await, "Error");
    e.notes.expect(&o.iccid, 1, Some("8.8.5/4.10")).await;
}

#[tokio::test]
async fn download_attempts_over_the_limit_end_the_order() {
    let mut e = env("max_download_attempts = 2").await;
    let o = e.order(621, Some(EID), None).await;
    let mut euicc = nist();
    for attempt in 1..=2 {
        e.lpa
            .authenticate(&mut euicc, Some(&o.matching_id))
            .await
            .expect("authenticate within the limit");
        let p = e.profile(&o.iccid).await;
        assert_eq!(p["downloadAttempts"], attempt);
        assert_eq!(p["state"], "Released");
    }
    let r = e.lpa.authenticate(&mut euicc, Some(&o.matching_id)).await;
    assert_eq!(refused(r), "8.8.5/6.4");
    assert_eq!(e.state(&o.iccid).await, "Error");
    let n = e.notes.expect(&o.iccid, 1, Some("8.8.5/6.4")).await;
    assert_eq!(n["eid"], EID);
    let r = e.lpa.authenticate(&mut euicc, Some(&o.matching_id)).await;
    assert_eq!(refused(r), "8.2/1.2", "an ended order authenticated again");
    assert_eq!(e.profile(&o.iccid).await["downloadAttempts"], 3);
}

// ---------------------------------------------------------------------------
// 7. Forged, replayed and mismatched signatures; refusals at
// InitiateAuthentication.

#[tokio::test]
async fn forged_and_replayed_euicc_signatures_are_refused() {
    let mut e = env("").await;
    let o = e.order(701, Some(EID), None).await;
    let m = Some(o.matching_id.as_str());

    // Session 1: a tampered euiccSignature1.
    let mut euicc1 = nist();
    let init1 = initiate(&e.lpa, &mut euicc1).await;
    let asr1 = authenticate_server(&mut euicc1, &e.lpa, &init1, m);
    let forged = edit_asr(&asr1, |ok| ok.euicc_signature1.0[33] ^= 0x01);
    let r = authenticate_client(&e.lpa, &init1.transaction_id, forged).await;
    assert_eq!(refused(r), "8.1/6.1");
    // The genuine answer still authenticates that session.
    let auth1 = authenticate_client(&e.lpa, &init1.transaction_id, asr1.clone())
        .await
        .expect("genuine authenticateServerResponse");

    // Session 2: session 1's answer replayed (other transactionId and
    // serverChallenge): the signature is genuine, the session another.
    let mut euicc = nist();
    let init2 = initiate(&e.lpa, &mut euicc).await;
    let r = authenticate_client(&e.lpa, &init2.transaction_id, asr1.clone()).await;
    assert_eq!(refused(r), "8.10.1/3.9");
    // A genuine eUICC signature over session 2's transactionId but session
    // 1's serverChallenge.
    let stale = edit_asr(&asr1, |ok| {
        resign_signed1(ok, |s| {
            s.transaction_id = TransactionId::new(&init2.transaction_id).expect("txid");
        })
    });
    let r = authenticate_client(&e.lpa, &init2.transaction_id, stale).await;
    assert_eq!(refused(r), "8.1/6.1");
    // ... and one over the right challenge but another serverAddress.
    let asr2 = authenticate_server(&mut euicc, &e.lpa, &init2, m);
    let moved = edit_asr(&asr2, |ok| {
        resign_signed1(ok, |s| s.server_address = "evil.example.com".into())
    });
    let r = authenticate_client(&e.lpa, &init2.transaction_id, moved).await;
    assert_eq!(refused(r), "8.1/6.1");
    // Replayed into the session it came from, now past that step.
    let r = authenticate_client(&e.lpa, &init1.transaction_id, asr1).await;
    assert_eq!(refused(r), "8.10.1/3.9");

    // GetBoundProfilePackage in session 2: a tampered euiccSignature2.
    let auth2 = authenticate_client(&e.lpa, &init2.transaction_id, asr2)
        .await
        .expect("authenticate session 2");
    let pdr = prepare(&mut euicc, &auth2, None, false);
    let PrepareDownloadResponse::Ok(mut forged) =
        PrepareDownloadResponse::decode(&pdr).expect("pdr")
    else {
        panic!("error PDR");
    };
    forged.euicc_signature2.0[40] ^= 0x01;
    let r = get_bpp(
        &e.lpa,
        &auth2.transaction_id,
        PrepareDownloadResponse::Ok(forged).encode(),
    )
    .await;
    assert_eq!(refused(r), "8.1/6.1");
    // Session 1's genuine PrepareDownloadResponse (signed over session 1's
    // smdpSignature2) sent into session 2.
    let pdr1 = prepare(&mut euicc1, &auth1, None, false);
    let r = get_bpp(&e.lpa, &auth2.transaction_id, pdr1).await;
    assert_eq!(refused(r), "8.1/6.1");
    // EUICCSigned2 naming session 1, genuinely signed over session 2's
    // smdpSignature2.
    let PrepareDownloadResponse::Ok(mut other) =
        PrepareDownloadResponse::decode(&pdr).expect("pdr")
    else {
        panic!("error PDR");
    };
    let mut signed = other.euicc_signed2.value().clone();
    signed.transaction_id = TransactionId::new(&auth1.transaction_id).expect("txid");
    other.euicc_signed2 = Signed::new(signed);
    let data = [other.euicc_signed2.raw(), &auth2.smdp_signature2[..]].concat();
    other.euicc_signature2 = EcdsaSignature(*nist_key().sign(&data).expect("sign").as_raw());
    let r = get_bpp(
        &e.lpa,
        &auth2.transaction_id,
        PrepareDownloadResponse::Ok(other).encode(),
    )
    .await;
    assert_eq!(refused(r), "8.10.1/3.9");
    assert_eq!(e.state(&o.iccid).await, "Released");

    // None of it spoiled session 2.
    let bpp = get_bpp(&e.lpa, &auth2.transaction_id, pdr)
        .await
        .expect("genuine PDR");
    e.install(&mut euicc, &bpp, &o).await;
    e.notes.expect(&o.iccid, 3, None).await;
    e.notes.expect(&o.iccid, 4, None).await;
}

#[tokio::test]
async fn initiate_authentication_refusals() {
    let e = env("").await;
    let euicc = nist();
    let info1 = euicc.get_euicc_info1().expect("info1");
    let call = |address: String, info1: Vec<u8>| {
        let lpa = &e.lpa;
        async move {
            lpa.call::<_, InitiateAuthenticationResponse>(
                Function::InitiateAuthentication,
                &InitiateAuthenticationRequest {
                    euicc_challenge: vec![7; 16],
                    euicc_info1: info1,
                    smdp_address: address,
                },
            )
            .await
        }
    };
    let port = e.server.es9.port();

    // The address as typed, any case, with or without port.
    for address in [
        format!("localhost:{port}"),
        "LocalHost".to_owned(),
        format!("LOCALHOST:{port}"),
    ] {
        call(address.clone(), info1.clone())
            .await
            .unwrap_or_else(|err| panic!("{address}: {err}"));
    }
    assert_eq!(
        refused(call("smdp.example.com".into(), info1.clone()).await),
        "8.8.1/3.8"
    );
    assert_eq!(
        refused(call("localhost.evil".into(), info1.clone()).await),
        "8.8.1/3.8"
    );

    let edit = |f: &dyn Fn(&mut EuiccInfo1)| {
        let mut i = EuiccInfo1::decode(&info1).expect("info1");
        f(&mut i);
        i.encode()
    };
    let addr = format!("localhost:{port}");
    let svn3 = edit(&|i| i.svn = Version([3, 0, 0]));
    assert_eq!(refused(call(addr.clone(), svn3).await), "8.8.3/3.1");
    let svn1 = edit(&|i| i.svn = Version([1, 0, 0]));
    assert_eq!(refused(call(addr.clone(), svn1).await), "8.8.3/3.1");
    let no_signing_ci = edit(&|i| i.ci_pkid_list_for_signing = vec![vec![0x11; 20]]);
    assert_eq!(
        refused(call(addr.clone(), no_signing_ci).await),
        "8.8.2/3.1"
    );
    let empty_signing = edit(&|i| i.ci_pkid_list_for_signing = vec![]);
    assert_eq!(
        refused(call(addr.clone(), empty_signing).await),
        "8.8.2/3.1"
    );
    let no_verification_ci = edit(&|i| i.ci_pkid_list_for_verification = vec![vec![0x22; 20]]);
    assert_eq!(
        refused(call(addr.clone(), no_verification_ci).await),
        "8.8.4/3.7"
    );
}

// ---------------------------------------------------------------------------
// 8. The invalid SGP.26 certificates as the eUICC's chain (§5.6.3).

/// What, eUICC certificate, EUM certificate, matchingId, expected code.
type ChainCase<'a> = (&'a str, &'a [u8], &'a [u8], Option<&'a str>, &'a str);

#[tokio::test]
async fn invalid_certificate_chains_get_their_codes() {
    let e = env("").await;
    let linked = e.order(801, Some(EID), None).await;
    let m = Some(linked.matching_id.as_str());
    let cases: [ChainCase<'_>; 9] = [
        (
            "expired EUM",
            CERT_EUICC_NIST,
            INVALID_EUM_EXPIRED,
            m,
            "8.1.2/6.3",
        ),
        (
            "invalid EUM",
            CERT_EUICC_NIST,
            INVALID_EUM_INVALID,
            m,
            "8.1.2/6.1",
        ),
        (
            "EUM of an unknown CI",
            CERT_EUICC_NIST,
            INVALID_EUM_UNKNOWN_CI,
            m,
            "8.11.1/3.9",
        ),
        (
            "expired eUICC",
            INVALID_EUICC_EXPIRED,
            CERT_EUM_NIST,
            m,
            "8.1.3/6.3",
        ),
        (
            "invalid eUICC",
            INVALID_EUICC_INVALID,
            CERT_EUM_NIST,
            m,
            "8.1.3/6.1",
        ),
        (
            "EID outside the EUM's range",
            INVALID_EUICC_EID,
            CERT_EUM_NIST,
            m,
            "8.1.3/6.1",
        ),
        // Valid chain, other EID: the order is linked to another eUICC...
        (
            "unmatched EID, linked order's matchingId",
            UNMATCHED_EUICC_EID,
            CERT_EUM_NIST,
            m,
            "8.1.1/3.8",
        ),
        // ... and without a matchingId there is no order for it at all:
        // the default SM-DP+ flow refuses the EID (§5.6.3).
        (
            "unmatched EID, no matchingId",
            UNMATCHED_EUICC_EID,
            CERT_EUM_NIST,
            None,
            "8.1.1/3.8",
        ),
        (
            "unmatched EID, unknown matchingId",
            UNMATCHED_EUICC_EID,
            CERT_EUM_NIST,
            Some("NO-SUCH-ORDER"),
            "8.2.6/3.8",
        ),
    ];
    for (what, euicc_cert, eum_cert, matching, expected) in cases {
        let mut euicc = nist();
        let init = initiate(&e.lpa, &mut euicc).await;
        let asr = authenticate_server(&mut euicc, &e.lpa, &init, matching);
        let asr = edit_asr(&asr, |ok| {
            ok.euicc_certificate = euicc_cert.to_vec();
            ok.eum_certificate = eum_cert.to_vec();
        });
        let r = authenticate_client(&e.lpa, &init.transaction_id, asr).await;
        assert_eq!(refused(r), expected, "{what}");
    }
    // The genuine chain, for contrast; the refusals counted no attempt.
    assert_eq!(e.profile(&linked.iccid).await["downloadAttempts"], 0);
    e.lpa
        .authenticate(&mut nist(), m)
        .await
        .expect("the genuine chain authenticates");
    let p = e.profile(&linked.iccid).await;
    assert_eq!(p["state"], "Released");
    assert_eq!(p["downloadAttempts"], 1);

    // The unmatched-EID chain is valid: with an activation-code order (no
    // EID) it is accepted like any eUICC.
    let free = e.order(802, None, None).await;
    let mut euicc = nist();
    let init = initiate(&e.lpa, &mut euicc).await;
    let asr = authenticate_server(&mut euicc, &e.lpa, &init, Some(&free.matching_id));
    let asr = edit_asr(&asr, |ok| {
        ok.euicc_certificate = UNMATCHED_EUICC_EID.to_vec()
    });
    authenticate_client(&e.lpa, &init.transaction_id, asr)
        .await
        .expect("valid chain, activation-code order");
}

// ---------------------------------------------------------------------------
// 9. A tampered BPP fails on the eUICC (§5.7.6) and the failure reaches
// the operator (§5.6.4, point 4).

#[tokio::test]
async fn tampered_bpp_fails_installation() {
    let mut e = env("").await;
    type Tamper = fn(&mut BoundProfilePackage);
    let cases: [(u32, Tamper, BppCommandId); 3] = [
        (
            901,
            |b| b.sequence_of_86[1][100] ^= 0x01,
            BppCommandId::LoadProfileElements,
        ),
        (
            902,
            |b| b.initialise_secure_channel_request.smdp_sign.0[5] ^= 0x01,
            BppCommandId::InitialiseSecureChannel,
        ),
        (
            903,
            |b| {
                let last = b.sequence_of_88.len() - 1;
                let seg = &mut b.sequence_of_88[last];
                let n = seg.len();
                seg[n - 1] ^= 0x01;
            },
            BppCommandId::StoreMetadata,
        ),
    ];
    for (series, tamper, command) in cases {
        let o = e.order(series, Some(EID), None).await;
        let mut euicc = nist();
        let (_, bpp) = fetch_bpp(&e.lpa, &mut euicc, Some(&o.matching_id), None).await;
        e.notes.expect(&o.iccid, 3, None).await;
        let mut b = BoundProfilePackage::decode(&bpp).expect("BF36");
        tamper(&mut b);
        let (pir, installed) = euicc.load_bound_profile_package(&b.to_der()).expect("load");
        assert!(installed.is_none(), "{command:?}: tampered BPP installed");
        let PendingNotification::ProfileInstallationResult(ProfileInstallationResult {
            profile_installation_result_data: data,
            ..
        }) = PendingNotification::decode(&pir).expect("PIR")
        else {
            panic!("not a PIR");
        };
        let FinalResult::Error(err) = &data.value().final_result else {
            panic!("not an error result");
        };
        assert_eq!(err.bpp_command_id, command);
        // Until the result arrives, the profile stays Downloaded.
        assert_eq!(e.state(&o.iccid).await, "Downloaded");
        assert_eq!(e.lpa.notify(pir).await.expect("notify"), 204);
        let p = e.profile(&o.iccid).await;
        assert_eq!(p["state"], "Error");
        assert!(p["errorReason"].is_string(), "{p}");
        let n4 = e.notes.expect(&o.iccid, 4, Some("8.2.10/4.2")).await;
        assert_eq!(n4["eid"], EID);
        let FinalResult::Error(reported) = final_result_of(&n4) else {
            panic!("resultData is not an errorResult");
        };
        assert_eq!(reported.bpp_command_id, command);
    }
}

// ---------------------------------------------------------------------------
// 10. Malformed requests: a GSMA status, never a 500 (§6.5, §5.2.6).

const LPA_HEADERS: [(&str, &str); 3] = [
    ("content-type", "application/json"),
    ("x-admin-protocol", "gsma/rsp/v2.2.0"),
    ("user-agent", "gsma-rsp-lpad"),
];

/// Raw HTTPS to the ES9+ listener.
struct Raw {
    client: smdpplus::http::client::Client,
    base: String,
}

impl Raw {
    fn new(server: &Server) -> Raw {
        let cfg = smdpplus::http::tls::client_with_roots(Lpa::sgp26_roots(), None, false)
            .expect("TLS config");
        Raw {
            client: smdpplus::http::client::Client::new(cfg, Duration::from_secs(30)),
            base: format!("https://localhost:{}", server.es9.port()),
        }
    }

    /// Sends a request; checks what every ES9+ answer must be (no 5xx; the
    /// GSMA envelope and X-Admin-Protocol unless 204) and returns
    /// (status, JSON).
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Value) {
        let r = self
            .client
            .request(
                method,
                &format!("{}{path}", self.base),
                headers,
                body.to_vec(),
            )
            .await
            .expect("ES9+ request");
        assert!(r.status < 500, "{path}: HTTP {}", r.status);
        assert!(
            r.headers
                .get("x-admin-protocol")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("gsma/rsp/v2.")),
            "{path}: X-Admin-Protocol missing"
        );
        let content_type = r
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if r.status == 204 {
            // §6.2: no Content-Type on an empty body.
            assert!(r.body.is_empty(), "{path}: 204 with a body");
            assert_eq!(content_type, "", "{path}: 204 with a Content-Type");
            return (204, Value::Null);
        }
        assert!(
            content_type.starts_with("application/json"),
            "{path}: Content-Type {content_type:?}"
        );
        let v: Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|err| panic!("{path}: not JSON ({err}): {:?}", r.body));
        assert!(
            v["header"]["functionExecutionStatus"]["status"].is_string(),
            "{path}: no functionExecutionStatus: {v}"
        );
        (r.status, v)
    }

    async fn post(&self, function: &str, body: &Value) -> (u16, Value) {
        self.send(
            Method::POST,
            &format!("/gsma/rsp2/es9plus/{function}"),
            &LPA_HEADERS,
            body.to_string().as_bytes(),
        )
        .await
    }

    /// Posts and expects HTTP 200 Failed with `expected`.
    async fn refused(&self, function: &str, body: Value, expected: &str) {
        let (http, v) = self.post(function, &body).await;
        assert_eq!(http, 200, "{function} {body}: {v}");
        assert_eq!(status(&v), "Failed", "{function} {body}: {v}");
        assert_eq!(code(&v), expected, "{function} {body}: {v}");
    }
}

#[tokio::test]
async fn malformed_requests_get_gsma_codes() {
    let e = env("").await;
    let raw = Raw::new(&e.server);
    let o = e.order(1001, Some(EID), None).await;
    let mut euicc = nist();
    let info1 = b64(&euicc.get_euicc_info1().expect("info1"));
    let address = e.lpa.smdp_address.clone();
    let garbage = b64(&[0x30, 0x03, 0x02, 0x01]);
    let ok_init =
        json!({"euiccChallenge": b64(&[1; 16]), "euiccInfo1": info1, "smdpAddress": address});

    // initiateAuthentication: every field missing, mistyped or malformed.
    let ia = "initiateAuthentication";
    raw.refused(ia, json!({}), "1.3.1/2.2").await;
    for field in ["euiccChallenge", "euiccInfo1", "smdpAddress"] {
        let mut b = ok_init.clone();
        b.as_object_mut().expect("object").remove(field);
        raw.refused(ia, b.clone(), "1.3.1/2.2").await;
        b[field] = Value::Null;
        raw.refused(ia, b.clone(), "1.3.1/2.2").await;
        for wrong in [json!(42), json!(true), json!(["a"]), json!({"a": 1})] {
            b[field] = wrong;
            raw.refused(ia, b.clone(), "1.3.1/2.1").await;
        }
    }
    for (field, bad) in [
        ("euiccChallenge", "not base64!".to_owned()),
        ("euiccChallenge", b64(&[1; 15])),
        ("euiccChallenge", b64(&[1; 17])),
        ("euiccChallenge", String::new()),
        ("euiccInfo1", "%%%%".to_owned()),
        ("euiccInfo1", garbage.clone()),
        ("euiccInfo1", String::new()),
        (
            "euiccInfo1",
            b64(&[&unb64(&info1)[..], &[0x00][..]].concat()),
        ),
    ] {
        let mut b = ok_init.clone();
        b[field] = json!(bad);
        raw.refused(ia, b, "1.3.1/2.1").await;
    }

    // Headers and envelope.
    let path = "/gsma/rsp2/es9plus/initiateAuthentication";
    let body = ok_init.to_string();
    let no_version = [("content-type", "application/json")];
    let (_, v) = raw
        .send(Method::POST, path, &no_version, body.as_bytes())
        .await;
    assert_eq!(code(&v), "1.3.2/2.2", "{v}");
    let v3 = [
        ("content-type", "application/json"),
        ("x-admin-protocol", "gsma/rsp/v3.0.0"),
    ];
    let (_, v) = raw.send(Method::POST, path, &v3, body.as_bytes()).await;
    assert_eq!(code(&v), "1.3.2/3.1", "{v}");
    for ct in [
        Some("text/plain"),
        Some("application/x-gsma-rsp-asn1"),
        None,
    ] {
        let mut h = vec![("x-admin-protocol", "gsma/rsp/v2.2.0")];
        if let Some(ct) = ct {
            h.push(("content-type", ct));
        }
        let (http, v) = raw.send(Method::POST, path, &h, body.as_bytes()).await;
        assert_eq!((http, code(&v).as_str()), (200, "1.3.1/2.1"), "{ct:?}: {v}");
    }
    let bodies: [&[u8]; 6] = [b"{", b"", b"[]", b"\"x\"", b"null", b"{\"euiccChallenge\":"];
    for bad_body in bodies {
        let (http, v) = raw.send(Method::POST, path, &LPA_HEADERS, bad_body).await;
        assert_eq!(
            (http, code(&v).as_str()),
            (200, "1.3.1/2.1"),
            "{bad_body:?}: {v}"
        );
    }
    // Tolerated: a charset, other 2.x versions, and an ES2+-style header.
    let charset = [
        ("content-type", "application/json;charset=UTF-8"),
        ("x-admin-protocol", "gsma/rsp/v2.5.0"),
    ];
    let (http, v) = raw
        .send(Method::POST, path, &charset, body.as_bytes())
        .await;
    assert_eq!((http, status(&v)), (200, "Executed-Success"), "{v}");
    let mut with_header = ok_init.clone();
    with_header["header"] =
        json!({"functionRequesterIdentifier": "lpa", "functionCallIdentifier": "1"});
    let (http, v) = raw.post(ia, &with_header).await;
    assert_eq!((http, status(&v)), (200, "Executed-Success"), "{v}");

    // Unknown functions and methods.
    for p in [
        "/gsma/rsp2/es9plus/downloadOrder",
        "/gsma/rsp2/es9plus/",
        "/",
        "/gsma/rsp2/es2plus/confirmOrder",
    ] {
        let (http, v) = raw
            .send(Method::POST, p, &LPA_HEADERS, body.as_bytes())
            .await;
        assert_eq!((http, code(&v).as_str()), (404, "1.6/3.1"), "{p}: {v}");
    }
    let (http, v) = raw.send(Method::GET, path, &LPA_HEADERS, b"").await;
    assert_eq!((http, status(&v)), (405, "Failed"), "{v}");

    // transactionId: not hex, odd, empty, 17 bytes, wrong type, missing.
    let init = initiate(&e.lpa, &mut euicc).await;
    let asr = authenticate_server(&mut euicc, &e.lpa, &init, Some(&o.matching_id));
    let txid = hex::encode_upper(&init.transaction_id);
    let ac = "authenticateClient";
    for bad in [
        json!("XYZ0"),
        json!("ABC"),
        json!(""),
        json!("00".repeat(17)),
        json!(12),
        json!(["00"]),
    ] {
        raw.refused(
            ac,
            json!({"transactionId": bad, "authenticateServerResponse": b64(&asr)}),
            "1.3.1/2.1",
        )
        .await;
    }
    raw.refused(
        ac,
        json!({"authenticateServerResponse": b64(&asr)}),
        "1.3.1/2.2",
    )
    .await;
    raw.refused(ac, json!({"transactionId": txid}), "1.3.1/2.2")
        .await;
    // Well-formed but unknown.
    raw.refused(
        ac,
        json!({"transactionId": "00".repeat(16), "authenticateServerResponse": b64(&asr)}),
        "8.10.1/3.9",
    )
    .await;
    // Garbage DER in the session's authenticateServerResponse.
    for bad in [
        garbage.clone(),
        b64(&[0xBF, 0x38, 0x00]),
        b64(&[&asr[..], &[0x00][..]].concat()),
        b64(&asr[..asr.len() - 1]),
        "***".to_owned(),
    ] {
        raw.refused(
            ac,
            json!({"transactionId": txid, "authenticateServerResponse": bad}),
            "1.3.1/2.1",
        )
        .await;
    }
    // Lower-case hex names the same session; the session survived it all.
    let (_, v) = raw
        .post(
            ac,
            &json!({"transactionId": txid.to_lowercase(), "authenticateServerResponse": b64(&asr)}),
        )
        .await;
    assert_eq!(status(&v), "Executed-Success", "{v}");
    let auth: AuthenticateClientResponse = serde_json::from_value(v).expect("response");

    // getBoundProfilePackage and cancelSession: garbage in their DER.
    let pdr = prepare(&mut euicc, &auth, None, false);
    for (function, field) in [
        ("getBoundProfilePackage", "prepareDownloadResponse"),
        ("cancelSession", "cancelSessionResponse"),
    ] {
        for bad in [
            garbage.clone(),
            b64(&[&pdr[..], &[0x00][..]].concat()),
            b64(&[0xBF, 0x21, 0x01]),
            "?".to_owned(),
        ] {
            raw.refused(
                function,
                json!({"transactionId": txid, field: bad}),
                "1.3.1/2.1",
            )
            .await;
        }
        raw.refused(
            function,
            json!({"transactionId": txid, field: 5}),
            "1.3.1/2.1",
        )
        .await;
        raw.refused(function, json!({"transactionId": txid}), "1.3.1/2.2")
            .await;
        raw.refused(function, json!({field: b64(&pdr)}), "1.3.1/2.2")
            .await;
    }
    assert_eq!(e.state(&o.iccid).await, "Released");
    // The session still delivers.
    get_bpp(&e.lpa, &auth.transaction_id, pdr)
        .await
        .expect("BPP after the malformed calls");
    assert_eq!(e.state(&o.iccid).await, "Downloaded");
}

// ---------------------------------------------------------------------------
// 10b/11. handleNotification: always acknowledged (§5.6.4, §6.3); only a
// verified result for a delivered BPP changes anything.

#[tokio::test]
async fn handle_notification_acknowledges_everything_and_applies_only_genuine_results() {
    let mut e = env("").await;
    let raw = Raw::new(&e.server);
    let hn = "handleNotification";
    let o = e.order(1101, Some(EID), None).await;
    let mut euicc = nist();
    let (_, bpp) = fetch_bpp(&e.lpa, &mut euicc, Some(&o.matching_id), None).await;
    e.notes.expect(&o.iccid, 3, None).await;
    let (pir, installed) = euicc.load_bound_profile_package(&bpp).expect("load");
    assert!(installed.is_some());

    // Garbage DER: 204, nothing happens.
    for bad in [
        vec![0x30, 0x03, 0x02, 0x01],
        vec![0xBF, 0x37, 0x00],
        vec![],
        [&pir[..], &[0][..]].concat(),
    ] {
        let (http, _) = raw
            .post(hn, &json!({"pendingNotification": b64(&bad)}))
            .await;
        assert_eq!(http, 204, "{bad:?}");
    }
    // Not even base64 / missing: not 2xx-with-a-result, never a 500.
    for body in [
        json!({"pendingNotification": "!!"}),
        json!({}),
        json!({"pendingNotification": 3}),
    ] {
        let (http, v) = raw.post(hn, &body).await;
        assert!(
            http == 204 || (http == 200 && code(&v).starts_with("1.3.1/")),
            "{body}: {http} {v}"
        );
    }

    let edit_pir = |f: &dyn Fn(&mut ProfileInstallationResult)| {
        let PendingNotification::ProfileInstallationResult(mut p) =
            PendingNotification::decode(&pir).expect("PIR")
        else {
            panic!("not a PIR");
        };
        f(&mut p);
        PendingNotification::ProfileInstallationResult(p).encode()
    };
    // A forged euiccSignPIR.
    let forged = edit_pir(&|p| p.euicc_sign_pir.0[9] ^= 0x01);
    assert_eq!(e.lpa.notify(forged).await.expect("notify"), 204);
    // A genuine signature, but for a transactionId nobody knows.
    let unknown = edit_pir(&|p| {
        let mut d = p.profile_installation_result_data.value().clone();
        d.transaction_id = TransactionId::new(&[0x42; 16]).expect("txid");
        p.profile_installation_result_data = Signed::new(d);
        let sig = nist_key()
            .sign(p.profile_installation_result_data.raw())
            .expect("sign");
        p.euicc_sign_pir = EcdsaSignature(*sig.as_raw());
    });
    assert_eq!(e.lpa.notify(unknown).await.expect("notify"), 204);
    assert_eq!(e.state(&o.iccid).await, "Downloaded");

    // The genuine one installs; a replay of it changes nothing more.
    assert_eq!(e.lpa.notify(pir.clone()).await.expect("notify"), 204);
    assert_eq!(e.state(&o.iccid).await, "Installed");
    e.notes.expect(&o.iccid, 4, None).await;
    assert_eq!(e.lpa.notify(pir).await.expect("notify"), 204);
    assert_eq!(e.state(&o.iccid).await, "Installed");

    // OtherSignedNotification (§5.7.10): enable, disable and delete are
    // acknowledged and recorded in the history; a forged one is
    // acknowledged and dropped. Only delete changes the state (Installed ->
    // Unavailable) and tells the operator (custom point 101, §5.3.5 note 1).
    let iccid = Iccid::parse(&o.iccid).expect("iccid");
    let forge = |n: &[u8]| {
        let PendingNotification::OtherSignedNotification(mut f) =
            PendingNotification::decode(n).expect("decode")
        else {
            panic!("not an OtherSignedNotification");
        };
        f.euicc_notification_signature.0[0] ^= 0x01;
        PendingNotification::OtherSignedNotification(f).encode()
    };
    for op in [
        NotificationOperation::Enable,
        NotificationOperation::Disable,
        NotificationOperation::Delete,
    ] {
        let n = euicc
            .other_notification(op, &iccid, &e.lpa.smdp_address)
            .expect("notification");
        assert_eq!(
            e.lpa.notify(forge(&n)).await.expect("notify"),
            204,
            "{op:?}"
        );
        assert_eq!(e.state(&o.iccid).await, "Installed", "forged {op:?}");
        assert_eq!(e.lpa.notify(n).await.expect("notify"), 204, "{op:?}");
    }
    assert_eq!(e.state(&o.iccid).await, "Unavailable");
    let events: Vec<Value> = e.op.show(&o.iccid).await["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["event"].clone())
        .collect();
    assert!(
        events.ends_with(&[
            json!("installSucceeded"),
            json!("deviceEnabled"),
            json!("deviceDisabled"),
            json!("deviceDeleted")
        ]),
        "{events:?}"
    );
    let n = e.notes.expect(&o.iccid, 101, None).await;
    assert_eq!(n["eid"], EID);
    e.notes.quiet(&o.iccid, Duration::from_millis(500)).await;
}
