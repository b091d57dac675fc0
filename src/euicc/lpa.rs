//! An LPA (the LPD of SGP.22 §3.1.3) that drives a [`SoftEuicc`] against
//! any ES9+ server over HTTPS, with the headers real LPAs send. Used by
//! `smdpplus euicc download`, by the tests and later by the load generator.

use super::{EuiccError, Installed, SoftEuicc};
use crate::es9plus::dto::*;
use crate::es9plus::Function;
use crate::http::client::Client;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

/// Why a download stopped.
#[derive(Debug, thiserror::Error)]
pub enum LpaError {
    /// The server could not be reached, or answered outside the protocol.
    #[error("transport: {0}")]
    Transport(String),
    /// The server answered Failed with a GSMA status code.
    #[error("{function} failed: {subject}/{reason} {message}")]
    Failed {
        /// The function.
        function: &'static str,
        /// subjectCode.
        subject: String,
        /// reasonCode.
        reason: String,
        /// message.
        message: String,
    },
    /// The software eUICC refused what the server sent.
    #[error("eUICC: {0}")]
    Euicc(#[from] EuiccError),
}

impl LpaError {
    /// `subject/reason` of a Failed answer.
    pub fn code(&self) -> Option<String> {
        match self {
            LpaError::Failed {
                subject, reason, ..
            } => Some(format!("{subject}/{reason}")),
            _ => None,
        }
    }
}

/// The headers an LPA sends with every ES9+ call (SGP.22 §6.5.1).
pub const HEADERS: [(&str, &str); 3] = [
    ("content-type", "application/json"),
    ("x-admin-protocol", "gsma/rsp/v2.2.0"),
    ("user-agent", "gsma-rsp-lpad"),
];

/// Reads the answer to a synchronous ES9+ function (§6.5.1.4): HTTP 200
/// with `Executed-Success` decodes into `R`; `Failed` is
/// [`LpaError::Failed`] with its status code; anything else is
/// [`LpaError::Transport`].
pub fn parse_answer<R: DeserializeOwned>(
    f: Function,
    status: u16,
    body: &[u8],
) -> Result<R, LpaError> {
    if status != 200 {
        return Err(LpaError::Transport(format!("{}: HTTP {status}", f.name())));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| LpaError::Transport(format!("{}: {e}", f.name())))?;
    let st = &v["header"]["functionExecutionStatus"];
    if st["status"] != "Executed-Success" {
        let d = &st["statusCodeData"];
        let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
        return Err(LpaError::Failed {
            function: f.name(),
            subject: s("subjectCode"),
            reason: s("reasonCode"),
            message: s("message"),
        });
    }
    serde_json::from_value(v).map_err(|e| LpaError::Transport(format!("{}: {e}", f.name())))
}

/// What a completed download produced.
#[derive(Debug)]
pub struct Report {
    /// The RSP session.
    pub transaction_id: Vec<u8>,
    /// What the eUICC installed.
    pub installed: Installed,
    /// Size of the BPP.
    pub bpp_len: usize,
}

/// The LPA.
pub struct Lpa {
    client: Client,
    base: String,
    /// The SM-DP+ address as the user gave it (sent as smdpAddress).
    pub smdp_address: String,
}

impl Lpa {
    /// An LPA for `smdp` (`HOST[:PORT]`), trusting `roots` (or anything, with `insecure`).
    pub fn new(smdp: &str, roots: rustls::RootCertStore, insecure: bool) -> Result<Lpa, LpaError> {
        let cfg = crate::http::tls::client_with_roots(roots, None, insecure)
            .map_err(|e| LpaError::Transport(e.to_string()))?;
        Ok(Lpa {
            client: Client::new(cfg, Duration::from_secs(60)),
            base: format!("https://{smdp}"),
            smdp_address: smdp.to_owned(),
        })
    }

    /// The SGP.26 test CI as the only trust anchor (what the dev TLS
    /// certificate chains to).
    pub fn sgp26_roots() -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        if let Ok(c) =
            <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::from_pem_slice(
                crate::pki::dev::SGP26_CI_CERT_PEM.as_bytes(),
            )
        {
            let _ = roots.add(c);
        }
        roots
    }

    async fn post(
        &self,
        f: Function,
        body: Vec<u8>,
    ) -> Result<crate::http::client::Response, LpaError> {
        let url = format!("{}{}", self.base, f.path());
        self.client
            .request(hyper::Method::POST, &url, &HEADERS, body)
            .await
            .map_err(LpaError::Transport)
    }

    /// Calls a synchronous ES9+ function; a Failed answer is an error.
    pub async fn call<T: Serialize, R: DeserializeOwned>(
        &self,
        f: Function,
        req: &T,
    ) -> Result<R, LpaError> {
        let body = serde_json::to_vec(req).map_err(|e| LpaError::Transport(e.to_string()))?;
        let r = self.post(f, body).await?;
        parse_answer(f, r.status, &r.body)
    }

    /// ES9+.HandleNotification; returns the HTTP status (204 expected).
    pub async fn notify(&self, pending_notification: Vec<u8>) -> Result<u16, LpaError> {
        let body = serde_json::to_vec(&HandleNotificationRequest {
            pending_notification,
        })
        .map_err(|e| LpaError::Transport(e.to_string()))?;
        Ok(self.post(Function::HandleNotification, body).await?.status)
    }

    /// The first two steps (§3.1.2): InitiateAuthentication and
    /// AuthenticateClient.
    pub async fn authenticate(
        &self,
        euicc: &mut SoftEuicc,
        matching_id: Option<&str>,
    ) -> Result<AuthenticateClientResponse, LpaError> {
        let challenge = euicc.get_euicc_challenge();
        let init: InitiateAuthenticationResponse = self
            .call(
                Function::InitiateAuthentication,
                &InitiateAuthenticationRequest {
                    euicc_challenge: challenge.to_vec(),
                    euicc_info1: euicc.get_euicc_info1()?,
                    smdp_address: self.smdp_address.clone(),
                },
            )
            .await?;
        let asr = euicc.authenticate_server(
            &init.server_signed1,
            &init.server_signature1,
            &init.euicc_ci_pk_id_to_be_used,
            &init.server_certificate,
            &self.smdp_address,
            matching_id,
        )?;
        self.call(
            Function::AuthenticateClient,
            &AuthenticateClientRequest {
                transaction_id: init.transaction_id,
                authenticate_server_response: asr,
            },
        )
        .await
    }

    /// A whole download (§3.1.3): authentication, PrepareDownload,
    /// GetBoundProfilePackage, LoadBoundProfilePackage, and the
    /// installation result back through HandleNotification. `progress`
    /// hears each step.
    pub async fn download(
        &self,
        euicc: &mut SoftEuicc,
        matching_id: Option<&str>,
        confirmation_code: Option<&str>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Report, LpaError> {
        progress("InitiateAuthentication + AuthenticateClient");
        let auth = self.authenticate(euicc, matching_id).await?;
        progress(&format!(
            "authenticated, transactionId {}",
            hex::encode_upper(&auth.transaction_id)
        ));
        let pdr = euicc.prepare_download(
            &auth.smdp_signed2,
            &auth.smdp_signature2,
            &auth.smdp_certificate,
            &auth.profile_metadata,
            confirmation_code,
            false,
        )?;
        progress("PrepareDownload signed; GetBoundProfilePackage");
        let bpp: GetBoundProfilePackageResponse = self
            .call(
                Function::GetBoundProfilePackage,
                &GetBoundProfilePackageRequest {
                    transaction_id: auth.transaction_id.clone(),
                    prepare_download_response: pdr,
                },
            )
            .await?;
        progress(&format!(
            "BPP received ({} bytes); LoadBoundProfilePackage",
            bpp.bound_profile_package.len()
        ));
        let (pir, installed) = euicc.load_bound_profile_package(&bpp.bound_profile_package)?;
        let status = self.notify(pir).await?;
        progress(&format!("ProfileInstallationResult sent (HTTP {status})"));
        let installed = installed
            .ok_or_else(|| EuiccError::Verification("the eUICC refused the BPP".into()))?;
        Ok(Report {
            transaction_id: auth.transaction_id,
            installed,
            bpp_len: bpp.bound_profile_package.len(),
        })
    }
}
