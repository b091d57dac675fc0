//! What every listener enforces around HTTP, so that slow or numerous
//! clients cannot exhaust the process: a cap on open connections (per
//! listener, and per client address), a TLS handshake deadline, a
//! whole-request deadline (headers and body), caps on the request header
//! block's size and number of fields, and an accept loop that backs off on
//! errors (`EMFILE` and the like) instead of spinning.
//!
//! Each listener has its own limits (`[listeners.<name>]` in the TOML file),
//! so that a flood on a public listener cannot starve ES2+ or the
//! operations listener.

use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use serde::Deserialize;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits of one listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerLimits {
    /// A request, header block and body, must have arrived this long after
    /// its first byte; an idle keep-alive connection is closed when no
    /// request header is complete this long after the previous response.
    pub request_timeout: Duration,
    /// The TLS handshake must be done this long after the TCP accept.
    pub tls_handshake_timeout: Duration,
    /// Open connections at most; past it new ones are closed at once.
    pub max_connections: usize,
    /// Open connections from one client address at most (0: no cap).
    pub max_connections_per_ip: usize,
    /// Largest request header block (request line included), bytes.
    pub max_header_bytes: usize,
    /// Most header fields in a request.
    pub max_headers: usize,
}

impl ListenerLimits {
    /// The defaults of a public listener with `max_connections` and
    /// `max_connections_per_ip`.
    const fn public(max_connections: usize, max_connections_per_ip: usize) -> ListenerLimits {
        ListenerLimits {
            request_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections,
            max_connections_per_ip,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
        }
    }
}

/// One `[listeners.<name>]` table; every key is optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListenerLimitsFile {
    /// See [`ListenerLimits::request_timeout`] (seconds, at least 1).
    pub request_timeout_secs: Option<u64>,
    /// See [`ListenerLimits::tls_handshake_timeout`] (seconds, at least 1).
    pub tls_handshake_timeout_secs: Option<u64>,
    /// See [`ListenerLimits::max_connections`] (at least 1).
    pub max_connections: Option<usize>,
    /// See [`ListenerLimits::max_connections_per_ip`].
    pub max_connections_per_ip: Option<usize>,
    /// See [`ListenerLimits::max_header_bytes`] (at least 1024).
    pub max_header_bytes: Option<usize>,
    /// See [`ListenerLimits::max_headers`] (at least 8).
    pub max_headers: Option<usize>,
}

impl ListenerLimitsFile {
    fn over(&self, d: ListenerLimits) -> ListenerLimits {
        ListenerLimits {
            request_timeout: self
                .request_timeout_secs
                .map_or(d.request_timeout, |s| Duration::from_secs(s.max(1))),
            tls_handshake_timeout: self
                .tls_handshake_timeout_secs
                .map_or(d.tls_handshake_timeout, |s| Duration::from_secs(s.max(1))),
            max_connections: self.max_connections.unwrap_or(d.max_connections).max(1),
            max_connections_per_ip: self
                .max_connections_per_ip
                .unwrap_or(d.max_connections_per_ip),
            max_header_bytes: self
                .max_header_bytes
                .unwrap_or(d.max_header_bytes)
                .max(1024),
            max_headers: self.max_headers.unwrap_or(d.max_headers).max(8),
        }
    }
}

/// The `[listeners]` table: one optional table per listener.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenersFile {
    /// ES9+ (LPAs, public).
    pub es9: ListenerLimitsFile,
    /// ES2+ and the admin API (operators, mutual TLS).
    pub es2: ListenerLimitsFile,
    /// Operations: /metrics, /healthz, /readyz.
    pub ops: ListenerLimitsFile,
    /// Operator web: the Mobile Plans portal and decision API (public).
    pub operator_web: ListenerLimitsFile,
    /// GetBalance (public).
    pub getbalance: ListenerLimitsFile,
}

/// The limits of every listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listeners {
    /// ES9+.
    pub es9: ListenerLimits,
    /// ES2+ and the admin API.
    pub es2: ListenerLimits,
    /// Operations.
    pub ops: ListenerLimits,
    /// Operator web.
    pub operator_web: ListenerLimits,
    /// GetBalance.
    pub getbalance: ListenerLimits,
}

impl Listeners {
    /// The built-in defaults overridden by the file's tables. The defaults
    /// fit a small (2-core) host: the five caps add up to well under the
    /// usual hard fd limit, and ES2+ and operations keep their own room
    /// whatever the public listeners receive.
    pub fn resolve(file: &ListenersFile) -> Listeners {
        Listeners {
            es9: file.es9.over(ListenerLimits::public(4096, 64)),
            // Operators authenticate with a certificate; the admin API takes
            // bulk uploads of up to 16 MiB, hence the longer deadline.
            es2: file.es2.over(ListenerLimits {
                request_timeout: Duration::from_secs(60),
                ..ListenerLimits::public(512, 0)
            }),
            ops: file.ops.over(ListenerLimits::public(64, 0)),
            operator_web: file.operator_web.over(ListenerLimits::public(2048, 64)),
            // Microsoft's service calls from few addresses.
            getbalance: file.getbalance.over(ListenerLimits::public(1024, 256)),
        }
    }

    /// The sum of the five connection caps.
    pub fn total_connections(&self) -> u64 {
        [
            &self.es9,
            &self.es2,
            &self.ops,
            &self.operator_web,
            &self.getbalance,
        ]
        .iter()
        .map(|l| l.max_connections as u64)
        .sum()
    }
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners::resolve(&ListenersFile::default())
    }
}

/// Raises the process's soft limit on open files to its hard limit and
/// logs both; warns when the listeners' connection caps (plus room for the
/// store and outgoing calls) do not fit. Returns the soft limit in force.
pub fn raise_fd_limit(listeners: &Listeners) -> Option<u64> {
    let resource = rlimit::Resource::NOFILE;
    let soft = match resource.get() {
        Ok((soft, hard)) if soft < hard => match resource.set(hard, hard) {
            Ok(()) => {
                tracing::info!(
                    from = soft,
                    to = hard,
                    hard,
                    "raised the open file limit to its hard limit"
                );
                hard
            }
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "could not raise the open file limit");
                soft
            }
        },
        Ok((soft, hard)) => {
            tracing::info!(soft, hard, "open file limit");
            soft
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read the open file limit");
            return None;
        }
    };
    let needed = listeners.total_connections() + 256;
    if needed > soft {
        tracing::warn!(
            fd_limit = soft,
            listener_caps = listeners.total_connections(),
            "the listeners' max_connections add up to more than the open file limit allows: \
             lower them in [listeners.*] or raise the limit, or a flood can starve every listener"
        );
    }
    Some(soft)
}

/// Why a connection was refused at accept time (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The listener's `max_connections` are open.
    MaxConnections,
    /// The client address's `max_connections_per_ip` are open.
    MaxConnectionsPerIp,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerIp => "max_connections_per_ip",
        }
    }
}

type PerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// Counts a listener's open connections, in total and per client address.
/// The per-address map only holds addresses with an open connection, so it
/// never has more than `max_connections` entries.
pub struct ConnLimiter {
    total: Arc<Semaphore>,
    per_ip_max: usize,
    per_ip: PerIp,
    open: prometheus::IntGauge,
}

/// One admitted connection; dropping it frees its place.
pub struct ConnSlot {
    _permit: OwnedSemaphorePermit,
    ip: Option<(IpAddr, PerIp)>,
    open: prometheus::IntGauge,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.open.dec();
        if let Some((ip, map)) = &self.ip {
            let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(ip);
                }
            }
        }
    }
}

impl ConnLimiter {
    /// A limiter for `interface` with `limits`.
    pub fn new(interface: &'static str, limits: &ListenerLimits, metrics: &Metrics) -> ConnLimiter {
        for r in [Refusal::MaxConnections, Refusal::MaxConnectionsPerIp] {
            // Present from the start, at 0.
            let _ = metrics
                .connections_refused
                .with_label_values(&[interface, r.label()]);
        }
        ConnLimiter {
            total: Arc::new(Semaphore::new(limits.max_connections)),
            per_ip_max: limits.max_connections_per_ip,
            per_ip: Arc::new(Mutex::new(HashMap::new())),
            open: metrics.open_connections.with_label_values(&[interface]),
        }
    }

    /// Admits a connection from `ip`, or says which cap is reached.
    pub fn admit(&self, ip: IpAddr) -> Result<ConnSlot, Refusal> {
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::MaxConnections)?;
        let ip = if self.per_ip_max > 0 {
            let ip = ip.to_canonical();
            let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(ip).or_insert(0);
            if *n >= self.per_ip_max {
                return Err(Refusal::MaxConnectionsPerIp);
            }
            *n += 1;
            Some((ip, self.per_ip.clone()))
        } else {
            None
        };
        self.open.inc();
        Ok(ConnSlot {
            _permit: permit,
            ip,
            open: self.open.clone(),
        })
    }
}

/// Lets a log line through at most once a second and counts the ones held
/// back, so that events a client can cause at will cannot flood the log.
pub struct LogThrottle {
    bucket: RateLimiter,
    held: AtomicU64,
}

impl LogThrottle {
    /// One line a second.
    pub fn new() -> LogThrottle {
        LogThrottle {
            bucket: RateLimiter::new(1, 1),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be
    /// written now.
    pub fn admit(&self) -> Option<u64> {
        match self.bucket.take() {
            Ok(()) => Some(self.held.swap(0, Ordering::Relaxed)),
            Err(_) => {
                self.held.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        LogThrottle::new()
    }
}

/// The accept loop's pause after an error: 10 ms, doubling to 1 s, back
/// to 10 ms after a successful accept. Errors are logged at most once a
/// second with their count.
pub struct AcceptBackoff {
    delay: Duration,
    log: LogThrottle,
}

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

impl AcceptBackoff {
    /// No error yet.
    pub fn new() -> AcceptBackoff {
        AcceptBackoff {
            delay: ACCEPT_BACKOFF_MIN,
            log: LogThrottle::new(),
        }
    }

    /// An accept succeeded.
    pub fn reset(&mut self) {
        self.delay = ACCEPT_BACKOFF_MIN;
    }

    /// An accept failed with `e`: counts and (throttled) logs it, and says
    /// how long to pause.
    pub fn failed(
        &mut self,
        interface: &'static str,
        e: &std::io::Error,
        metrics: &Metrics,
    ) -> Duration {
        metrics.accept_errors.with_label_values(&[interface]).inc();
        let delay = self.delay;
        if let Some(held) = self.log.admit() {
            tracing::warn!(
                interface,
                error = %e,
                errors = held + 1,
                backoff_ms = delay.as_millis() as u64,
                "accept failed"
            );
        }
        self.delay = (delay * 2).min(ACCEPT_BACKOFF_MAX);
        delay
    }
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff::new()
    }
}

/// When the request being served must have been received whole.
#[derive(Clone)]
pub(crate) struct RequestDeadline {
    at: tokio::time::Instant,
    expired: Arc<AtomicBool>,
}

tokio::task_local! {
    static DEADLINE: RequestDeadline;
}

impl RequestDeadline {
    /// A deadline at `at`.
    pub(crate) fn new(at: Instant) -> RequestDeadline {
        RequestDeadline {
            at: tokio::time::Instant::from_std(at),
            expired: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Runs `handler` with this deadline in force for its body reads;
    /// true when a body read ran past it.
    pub(crate) async fn run<T>(self, handler: impl Future<Output = T>) -> (T, bool) {
        let expired = self.expired.clone();
        let out = DEADLINE.scope(self, handler).await;
        (out, expired.load(Ordering::Relaxed))
    }
}

/// Awaits `read` (a request body read) within the deadline of the request
/// being served; `None` when the deadline passed first.
pub(crate) async fn within_deadline<F: Future>(read: F) -> Option<F::Output> {
    match DEADLINE.try_with(|d| d.clone()) {
        Ok(d) => match tokio::time::timeout_at(d.at, read).await {
            Ok(v) => Some(v),
            Err(_) => {
                d.expired.store(true, Ordering::Relaxed);
                None
            }
        },
        Err(_) => Some(read.await),
    }
}

/// When the current request on a connection began: the first byte read
/// while no request was being served.
#[derive(Default)]
pub(crate) struct Activity {
    state: Mutex<(bool, Option<Instant>)>,
}

impl Activity {
    fn on_read(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !s.0 && s.1.is_none() {
            s.1 = Some(Instant::now());
        }
    }

    /// A request's head was parsed: when its first byte came.
    pub(crate) fn begin(&self) -> Instant {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = true;
        s.1.take().unwrap_or_else(Instant::now)
    }

    /// The response is ready: bytes read from now on belong to the next
    /// request.
    pub(crate) fn end(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 = false;
    }
}

/// A stream that tells its [`Activity`] when bytes arrive.
pub(crate) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Tracked<S> {
        Tracked { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_ip: usize) -> ListenerLimits {
        ListenerLimits {
            max_connections: max,
            max_connections_per_ip: per_ip,
            ..ListenerLimits::public(1, 0)
        }
    }

    #[test]
    fn caps_in_total_and_per_address_and_frees_on_drop() {
        let m = Metrics::new();
        let l = ConnLimiter::new("t", &limits(3, 2), &m);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        let a1 = l.admit(a).unwrap();
        let _a2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some(Refusal::MaxConnectionsPerIp));
        let _b1 = l.admit(b).unwrap();
        assert_eq!(l.admit(b).err(), Some(Refusal::MaxConnections));
        drop(a1);
        assert!(l.admit(a).is_ok());
        assert_eq!(l.per_ip.lock().unwrap().len(), 2);
    }

    #[test]
    fn per_address_map_forgets_closed_addresses() {
        let m = Metrics::new();
        let l = ConnLimiter::new("t", &limits(10, 1), &m);
        for i in 0..100u8 {
            let slot = l.admit(IpAddr::from([10, 0, 0, i])).unwrap();
            drop(slot);
        }
        assert!(l.per_ip.lock().unwrap().is_empty());
        assert_eq!(m.open_connections.with_label_values(&["t"]).get(), 0);
    }

    #[test]
    fn file_overrides_defaults_and_clamps() {
        let f: ListenersFile = toml::from_str(
            "[es9]\nmax_connections = 0\nrequest_timeout_secs = 2\nmax_header_bytes = 10\n",
        )
        .unwrap();
        let l = Listeners::resolve(&f);
        assert_eq!(l.es9.max_connections, 1);
        assert_eq!(l.es9.request_timeout, Duration::from_secs(2));
        assert_eq!(l.es9.max_header_bytes, 1024);
        assert_eq!(l.es2, Listeners::default().es2);
        assert!(toml::from_str::<ListenersFile>("[es9]\nmax_conns = 1\n").is_err());
        assert!(toml::from_str::<ListenersFile>("[es3]\n").is_err());
    }

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let m = Metrics::new();
        let mut b = AcceptBackoff::new();
        let e = std::io::Error::other("x");
        let d: Vec<u64> = (0..9)
            .map(|_| b.failed("t", &e, &m).as_millis() as u64)
            .collect();
        assert_eq!(d, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.failed("t", &e, &m), Duration::from_millis(10));
        assert_eq!(m.accept_errors.with_label_values(&["t"]).get(), 10);
    }
}
