//! Bound Profile Packages kept for a retry in a later RSP session (SGP.22
//! §3.1.3, §5.6.2, §5.6.3, §5.7.5).
//!
//! When the eUICC keeps an unused one-time key pair after an interrupted
//! download (§3.1.3, §5.7.14, §5.7.15), the SM-DP+ can name its otPK in
//! `smdpSigned2.bppEuiccOtpk` of the next session's AuthenticateClient
//! (§5.6.3). An eUICC that reuses the pair answers with the same otPK in
//! `euiccSigned2.euiccOtpk` (§5.7.5), and GetBoundProfilePackage serves the
//! same bound segments again: only InitialiseSecureChannel is made anew for
//! the new transactionId (§5.6.2).
//!
//! What is kept is the package as it travelled: every segment but the
//! metadata (88, MAC only, sent in clear in AuthenticateClient anyway) is
//! encrypted and MACed under session keys that are not stored anywhere
//! (otSK.DP.ECKA is erased once the package is bound), and otPK.EUICC is a
//! public key. No key is kept.
//!
//! The record is written in the transaction that records the delivery and
//! removed in the transaction of any transition that leaves Downloaded
//! (Installed, Error, and from there cancellation), so no exit can forget
//! it. It also carries its own expiry (`[es9] bpp_retry_secs`, at most the
//! order's time to live): past it, it is never served, and it is removed
//! when read and by the sweeper.

use super::{Result, Store};
use crate::b64;
use crate::ids::Iccid;
use serde::{Deserialize, Serialize};

/// Current [`KeptPackage`] version.
pub const KEPT_VERSION: u32 = 1;

/// A delivered Bound Profile Package and what a later session needs to
/// serve it again.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeptPackage {
    /// Record version.
    pub v: u32,
    /// The eUICC it is bound to.
    pub eid: String,
    /// The CI whose DPpb signed the binding (keyring key): a retry session
    /// must use the same DPpb.
    #[serde(with = "b64")]
    pub dp_ci: Vec<u8>,
    /// otPK.EUICC.ECKA the package is bound to.
    #[serde(with = "b64")]
    pub euicc_otpk: Vec<u8>,
    /// The StoreMetadataRequest inside the 88 segments: the retry
    /// session's ProfileMetadata must be the same.
    #[serde(with = "b64")]
    pub metadata: Vec<u8>,
    /// The BoundProfilePackage (BF36) as delivered.
    #[serde(with = "b64")]
    pub bpp: Vec<u8>,
    /// Unix seconds after which it is not served again.
    pub expires_at: i64,
}

impl std::fmt::Debug for KeptPackage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptPackage")
            .field("eid", &self.eid)
            .field("bpp_bytes", &self.bpp.len())
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The package kept for a retry of this order, if any and not expired
    /// at `now`. An expired one is removed (unless it was replaced
    /// meanwhile).
    pub fn kept_package(&self, iccid: &Iccid, now: i64) -> Result<Option<KeptPackage>> {
        self.engine().kept_package(iccid.as_str(), now)
    }

    /// Removes every kept package expired at `now` (the sweeper runs it
    /// hourly; a read removes an expired one too). Returns how many.
    pub fn sweep_kept_packages(&self, now: i64) -> Result<usize> {
        self.engine().sweep_kept_packages(now)
    }

    /// Whether a package is kept for this order (expired or not).
    pub fn has_kept_package(&self, iccid: &Iccid) -> Result<bool> {
        self.engine().has_kept_package(iccid.as_str())
    }
}
