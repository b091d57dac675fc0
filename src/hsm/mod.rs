//! Private keys in a hardware security module, over PKCS#11 (OASIS PKCS#11
//! v2.40 / v3.0, through the `cryptoki` crate).
//!
//! - [`Token`]: the configured token (`[hsm] module`, `token_label`, the
//!   PIN from `pin_file` or [`PIN_ENV`]); a pool of logged-in sessions, and
//!   a bounded number of calls in flight on tokio's blocking threads, so a
//!   slow HSM never stalls the async workers. A lost session (HSM restart,
//!   network HSM reconnect) makes the token reconnect ([`Token::reconnect`])
//!   and the call is made once more; [`Token::healthy`] tells `/readyz`.
//! - [`key`]: an ECDSA key on the token ([`key::TokenKey`]: CKM_ECDSA over a
//!   SHA-256 digest, SGP.22 §2.6.7.2), and [`key::EcKey`], a key in a file or
//!   on the token, which the SM-DP+ credentials (CERT.DPauth, CERT.DPpb) hold.
//! - [`admin`]: `keys hsm-import` and `keys hsm-list`.
//! - [`uri`]: the RFC 7512 `pkcs11:` URIs that name keys in the config.
//!
//! What stays in software, and why: the one-time key pair of the profile
//! binding (otPK/otSK.DP, SGP.22 §2.6.7.3, §3.1.3.2) lives for one
//! GetBoundProfilePackage and is erased when the key agreement has
//! consumed it, and the BSP session keys derived from it (and the PPK,
//! unwrapped on the token) must reach the SCP03t encryption in software.

pub mod admin;
pub mod key;
pub mod master;
pub mod tls;
pub mod uri;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use key::{EcKey, TokenKey};
pub use uri::KeyUri;

/// The environment variable holding the token's user PIN (wins over
/// `[hsm] pin_file`). A PIN is never a command-line flag.
pub const PIN_ENV: &str = "SMDPPLUS_HSM_PIN";

/// `[hsm]`: the PKCS#11 token that holds the private keys.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    /// The PKCS#11 module (shared library), e.g.
    /// `/usr/lib/softhsm/libsofthsm2.so`, or a network HSM's client library.
    pub module: PathBuf,
    /// CKA_LABEL of the token (CK_TOKEN_INFO.label).
    pub token_label: String,
    /// A file holding the user PIN (one line); [`PIN_ENV`] wins over it.
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    /// Sessions kept open, and token calls in flight at most.
    #[serde(default = "default_sessions")]
    pub sessions: usize,
    /// How long a call waits for a free session before it fails, seconds.
    #[serde(default = "default_wait_secs")]
    pub wait_secs: u64,
    /// The master key on the token: AES-256 keys labelled
    /// `<master_key_label>-<id>` ([`master`]). None: the master key is
    /// the file `master_key_file`.
    #[serde(default)]
    pub master_key_label: Option<String>,
}

fn default_sessions() -> usize {
    4
}

fn default_wait_secs() -> u64 {
    10
}

/// A failure of the key store on the token. Never carries the PIN or key
/// material.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// `[hsm]` is incomplete or wrong, or a key names the token without it.
    #[error("[hsm]: {0}")]
    Config(String),
    /// The PKCS#11 module could not be loaded or initialised.
    #[error("PKCS#11 module {module}: {why}")]
    Module {
        /// The module's path.
        module: String,
        /// Why.
        why: String,
    },
    /// No slot holds a token with the configured label.
    #[error("no token labelled {label:?} (tokens present: {present})")]
    NoToken {
        /// The configured label.
        label: String,
        /// The labels of the tokens the module shows.
        present: String,
    },
    /// C_Login failed (wrong PIN, locked PIN).
    #[error("login to token {label:?} failed: {why}")]
    Login {
        /// The token's label.
        label: String,
        /// Why (the PKCS#11 return value).
        why: String,
    },
    /// A key URI is malformed or asks for what we do not support.
    #[error("key URI {uri}: {why}")]
    Uri {
        /// The URI, without its query.
        uri: String,
        /// Why.
        why: String,
    },
    /// The token does not hold the key a URI names, holds several, or the
    /// key is not what its use needs.
    #[error("{uri}: {why}")]
    Key {
        /// The key's URI.
        uri: String,
        /// Why.
        why: String,
    },
    /// A PKCS#11 call failed.
    #[error("token {label:?}: {op}: {why}")]
    Call {
        /// The token's label.
        label: String,
        /// What we were doing.
        op: &'static str,
        /// The PKCS#11 error.
        why: String,
    },
    /// No session became free within `[hsm] wait_secs`.
    #[error("token busy: no session free within {0:?}")]
    Busy(Duration),
    /// The blocking task of a token call panicked or was cancelled.
    #[error("token call task failed")]
    Task,
}

/// Whether a PKCS#11 error means the session (or the whole connection to
/// the token) is gone, so that a fresh session may succeed: the PKCS#11
/// return values CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_DEVICE_REMOVED,
/// CKR_TOKEN_NOT_PRESENT, CKR_DEVICE_ERROR, CKR_USER_NOT_LOGGED_IN (the
/// HSM restarted and forgot the login).
fn connection_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::DeviceError
                | RvError::UserNotLoggedIn
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

/// The open sessions and the slot they were opened on. `generation`
/// changes whenever they are thrown away, which also invalidates the
/// object handles cached by [`TokenKey`].
struct Conn {
    slot: Option<Slot>,
    generation: u64,
    idle: Vec<Session>,
}

/// The configured token: a PKCS#11 context, a pool of logged-in sessions
/// and a bound on the calls in flight. Shared as `Arc<Token>` by every key
/// on it.
pub struct Token {
    // Not replaced, but finalized and initialised again by a reconnect.
    ctx: Pkcs11,
    label: String,
    pin: AuthPin,
    sessions: usize,
    wait: Duration,
    // PKCS#11 sessions are not thread-safe (PKCS#11 applications and threads): each is used by
    // one thread at a time, checked out of this pool for one call.
    conn: Mutex<Conn>,
    // Bounds the token calls in flight from async code, and so the
    // blocking threads they occupy, to the pool's size.
    permits: Arc<tokio::sync::Semaphore>,
    // Every call holds it for reading from checkout to checkin; a
    // reconnect takes it for writing, so that no session is in use (or
    // left over) while the library is finalized and initialised again.
    calls: RwLock<()>,
    healthy: AtomicBool,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Loads the module, initialises it, finds the token by its label and
    /// logs in once (so that a wrong PIN or a missing token stops the start
    /// with a clear error). The PIN comes from [`PIN_ENV`] or `pin_file`.
    pub fn open(c: &HsmConfig) -> Result<Arc<Token>, HsmError> {
        let pin = read_pin(c)?;
        Token::open_with_pin(c, pin)
    }

    fn open_with_pin(c: &HsmConfig, pin: AuthPin) -> Result<Arc<Token>, HsmError> {
        let module = |why: String| HsmError::Module {
            module: c.module.display().to_string(),
            why,
        };
        if c.token_label.is_empty() {
            return Err(HsmError::Config("token_label is empty".into()));
        }
        let ctx = Pkcs11::new(&c.module).map_err(|e| module(e.to_string()))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(module(e.to_string())),
        }
        let sessions = c.sessions.max(1);
        let token = Arc::new(Token {
            ctx,
            label: c.token_label.clone(),
            pin,
            sessions,
            wait: Duration::from_secs(c.wait_secs.max(1)),
            conn: Mutex::new(Conn {
                slot: None,
                generation: 0,
                idle: Vec::new(),
            }),
            permits: Arc::new(tokio::sync::Semaphore::new(sessions)),
            calls: RwLock::new(()),
            healthy: AtomicBool::new(false),
        });
        let (session, generation) = token.checkout()?;
        token.checkin(session, generation);
        Ok(token)
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether the last call reached the token (false after a lost
    /// connection until a call succeeds again): `/readyz`.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Conn> {
        // A poisoned lock still holds sessions that are valid or will be
        // found lost by their next call.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn call_error(&self, op: &'static str, e: CkError) -> HsmError {
        HsmError::Call {
            label: self.label.clone(),
            op,
            why: e.to_string(),
        }
    }

    fn find_slot(&self) -> Result<Slot, HsmError> {
        let slots = self
            .ctx
            .get_slots_with_token()
            .map_err(|e| self.call_error("C_GetSlotList", e))?;
        let mut present = Vec::new();
        for slot in slots {
            let Ok(info) = self.ctx.get_token_info(slot) else {
                continue;
            };
            if !info.token_initialized() {
                continue;
            }
            let label = info.label().trim_end().to_owned();
            if label == self.label {
                return Ok(slot);
            }
            present.push(format!("{label:?}"));
        }
        let shown = present.len().min(8);
        Err(HsmError::NoToken {
            label: self.label.clone(),
            present: match present.len() {
                0 => "none".into(),
                n if n > shown => format!("{} and {} more", present[..shown].join(", "), n - shown),
                _ => present.join(", "),
            },
        })
    }

    /// An idle session, or a new one (opened read-write and logged in).
    fn checkout(&self) -> Result<(Session, u64), HsmError> {
        let (slot, generation) = {
            let mut conn = self.conn();
            if let Some(s) = conn.idle.pop() {
                return Ok((s, conn.generation));
            }
            let slot = match conn.slot {
                Some(s) => s,
                None => {
                    let s = self.find_slot()?;
                    conn.slot = Some(s);
                    s
                }
            };
            (slot, conn.generation)
        };
        let session = self
            .ctx
            .open_rw_session(slot)
            .map_err(|e| self.call_error("C_OpenSession", e))?;
        // The login state is shared by all sessions of the application
        // (PKCS#11 C_Login): only the first login is needed.
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => {
                return Err(HsmError::Login {
                    label: self.label.clone(),
                    why: e.to_string(),
                })
            }
        }
        Ok((session, generation))
    }

    fn checkin(&self, session: Session, generation: u64) {
        let mut conn = self.conn();
        if conn.generation == generation && conn.idle.len() < self.sessions {
            conn.idle.push(session);
        }
    }

    /// Reconnects after the sessions of `generation` were found lost, or a
    /// key that was on the token is gone (the token was replaced): once no
    /// call is in flight, every session is closed, the library finalized
    /// and initialised again (C_Finalize, C_Initialize: some modules, such
    /// as SoftHSM2, only see a replaced token then), and the slot
    /// forgotten, so that the next call finds the token by its label and
    /// logs in again. Nothing happens when another call reconnected since.
    pub fn reconnect(&self, generation: u64) {
        self.healthy.store(false, Ordering::Relaxed);
        let _no_calls = self.calls.write().unwrap_or_else(|e| e.into_inner());
        {
            let mut conn = self.conn();
            if conn.generation != generation {
                return;
            }
            conn.idle.clear();
            conn.slot = None;
            conn.generation += 1;
        }
        let _ = self.ctx.clone().finalize();
        if let Err(e) = self
            .ctx
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        {
            tracing::warn!(token = %self.label, error = %e, "C_Initialize after a lost connection failed; the next call tries again");
        }
    }

    /// Runs `f` on a pooled session, on this thread (CLI, start-up checks;
    /// async code uses [`Token::call`]). `f` gets the session's generation
    /// for its handle cache. When the session turns out lost, every
    /// session is dropped and `f` runs once more on a fresh one.
    pub fn with_session<R>(
        &self,
        op: &'static str,
        f: impl Fn(&Session, u64) -> Result<R, CkError>,
    ) -> Result<R, HsmError> {
        let mut retried = false;
        loop {
            let calls = self.calls.read().unwrap_or_else(|e| e.into_inner());
            let (session, generation) = match self.checkout() {
                Ok(s) => s,
                Err(e) => {
                    self.healthy.store(false, Ordering::Relaxed);
                    return Err(e);
                }
            };
            match f(&session, generation) {
                Ok(r) => {
                    self.checkin(session, generation);
                    self.healthy.store(true, Ordering::Relaxed);
                    return Ok(r);
                }
                Err(e) if connection_lost(&e) => {
                    drop(session);
                    drop(calls);
                    self.reconnect(generation);
                    if retried {
                        return Err(self.call_error(op, e));
                    }
                    tracing::warn!(token = %self.label, op, error = %e, "token session lost; reconnecting");
                    retried = true;
                }
                Err(e) => {
                    self.checkin(session, generation);
                    return Err(self.call_error(op, e));
                }
            }
        }
    }

    /// Runs `f` from synchronous code that may be on an async worker (the
    /// TLS handshake inside rustls, a PPK unwrapped while a request binds a
    /// profile): on a multi-threaded runtime the worker hands its other
    /// tasks over (`block_in_place`) and the call takes its turn on the
    /// bounded pool like any other ([`Token::call`]); without one (CLI
    /// tools, tests) it runs on this thread.
    pub fn call_sync<R, F>(self: &Arc<Self>, op: &'static str, f: F) -> Result<R, HsmError>
    where
        R: Send + 'static,
        F: Fn(&Session, u64) -> Result<R, CkError> + Send + 'static,
    {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| h.block_on(self.call(op, f)))
            }
            _ => self.with_session(op, f),
        }
    }

    /// [`Token::reconnect`] from synchronous code that may be on an async
    /// worker (see [`Token::call_sync`]).
    pub fn call_sync_reconnect(self: &Arc<Self>, generation: u64) -> Result<(), HsmError> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                let token = self.clone();
                tokio::task::block_in_place(|| {
                    h.block_on(tokio::task::spawn_blocking(move || {
                        token.reconnect(generation)
                    }))
                })
                .map_err(|_| HsmError::Task)
            }
            _ => {
                self.reconnect(generation);
                Ok(())
            }
        }
    }

    /// One cheap call (C_GetSessionInfo) on a pooled session: reconnects
    /// after a lost connection, and sets [`Token::healthy`].
    pub async fn probe(self: &Arc<Self>) -> Result<(), HsmError> {
        self.call("C_GetSessionInfo", |s, _| s.get_session_info().map(|_| ()))
            .await
    }

    /// Runs `f` on a pooled session on tokio's blocking threads, at most
    /// `[hsm] sessions` at a time; waits at most `[hsm] wait_secs` for its
    /// turn.
    pub async fn call<R, F>(self: &Arc<Self>, op: &'static str, f: F) -> Result<R, HsmError>
    where
        R: Send + 'static,
        F: Fn(&Session, u64) -> Result<R, CkError> + Send + 'static,
    {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| HsmError::Busy(self.wait))?
            .map_err(|_| HsmError::Busy(self.wait))?;
        let token = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            token.with_session(op, f)
        })
        .await
        .map_err(|_| HsmError::Task)?
    }
}

/// The user PIN: [`PIN_ENV`] if set, else the first line of `pin_file`.
fn read_pin(c: &HsmConfig) -> Result<AuthPin, HsmError> {
    if let Ok(pin) = std::env::var(PIN_ENV) {
        if !pin.is_empty() {
            return Ok(AuthPin::from(pin));
        }
    }
    let Some(path) = &c.pin_file else {
        return Err(HsmError::Config(format!(
            "no PIN: set pin_file or the environment variable {PIN_ENV}"
        )));
    };
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| HsmError::Config(format!("pin_file {}: {e}", path.display())))?,
    );
    let pin = text.lines().next().unwrap_or_default().trim();
    if pin.is_empty() {
        return Err(HsmError::Config(format!(
            "pin_file {} is empty",
            path.display()
        )));
    }
    Ok(AuthPin::from(pin.to_owned()))
}
