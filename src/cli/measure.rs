//! What the load generators share: latency percentiles, CPU readings of
//! the server and of the generator, the TLS handshake's share of the
//! cryptographic floor, ES2+ answer checks and progress lines.

use serde_json::{json, Value};
use std::time::Instant;
use tokio::net::TcpStream;

/// Latency percentiles, milliseconds.
pub(super) fn percentiles(mut v: Vec<u64>) -> Value {
    v.sort_unstable();
    let q = |q: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i.min(v.len() - 1)] as f64 / 1000.0
    };
    json!({
        "count": v.len(),
        "p50_ms": q(0.5),
        "p90_ms": q(0.9),
        "p99_ms": q(0.99),
        "max_ms": v.last().map_or(0.0, |m| *m as f64 / 1000.0),
    })
}

/// Microseconds per call of `f`: the best of 7 batches of `n` calls,
/// after one warm-up batch.
pub(super) fn best_of<E>(n: u32, mut f: impl FnMut() -> Result<(), E>) -> Result<f64, E> {
    for _ in 0..n {
        f()?;
    }
    let mut best = f64::MAX;
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..n {
            f()?;
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    }
    Ok(best)
}

/// Times the TLS server's handshake cryptography with the server's own
/// provider (aws-lc-rs via rustls): a P-256 ECDSA CertificateVerify
/// signature, and the key exchange of `group` (the one negotiated, by
/// name; X25519 if unknown).
pub(super) fn floor_tls(group: Option<&str>) -> Result<(f64, f64, String), String> {
    use rustls::crypto::aws_lc_rs::default_provider;
    let provider = default_provider();
    let kx = provider
        .kx_groups
        .iter()
        .find(|g| Some(format!("{:?}", g.name()).as_str()) == group)
        .or_else(|| {
            provider
                .kx_groups
                .iter()
                .find(|g| g.name() == rustls::NamedGroup::X25519)
        })
        .ok_or("no key exchange group")?;
    let name = format!("{:?}", kx.name());
    let client_share = kx.start().map_err(|e| e.to_string())?.pub_key().to_vec();
    let kx_us = best_of(100, || kx.start_and_complete(&client_share).map(|_| ()))
        .map_err(|e| e.to_string())?;
    let pair =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(pair.serialize_der().into());
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| e.to_string())?;
    let signer = signing
        .choose_scheme(&[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])
        .ok_or("no P-256 signature scheme")?;
    // TLS 1.3 CertificateVerify content: 64 spaces, the context string, a
    // zero byte and the transcript hash (RFC 8446 §4.4.3).
    let mut msg = vec![0x20u8; 64];
    msg.extend_from_slice(b"TLS 1.3, server CertificateVerify\0");
    msg.extend_from_slice(&[0xA5; 32]);
    let sign_us = best_of(200, || signer.sign(&msg).map(|_| ())).map_err(|e| e.to_string())?;
    Ok((sign_us, kx_us, name))
}

/// The server's CPU seconds from its metrics page.
pub(super) async fn scrape_cpu(url: &str) -> Result<f64, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or("--server-metrics takes a plain http:// URL")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let mut s = TcpStream::connect(hostport)
        .await
        .map_err(|e| format!("{hostport}: {e}"))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut buf = vec![];
    s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("{url}: no process_cpu_seconds_total"))
}

/// Server CPU readings before or after the measured phase.
pub(super) struct CpuMarks {
    /// The server's utime+stime from `/proc`.
    pub proc: Option<f64>,
    /// The server's `process_cpu_seconds_total`.
    pub metrics: Option<f64>,
    /// This process's CPU.
    pub client: Option<f64>,
}

/// Reads the server's CPU (from `/proc/PID/stat` and/or its metrics page)
/// and this process's.
pub(super) async fn cpu_marks(
    server_pid: Option<u32>,
    server_metrics: Option<&str>,
) -> Result<CpuMarks, String> {
    let proc = match server_pid {
        Some(pid) => Some(
            crate::metrics::process_cpu_seconds(&pid.to_string())
                .ok_or_else(|| format!("no /proc/{pid}/stat"))?,
        ),
        None => None,
    };
    let metrics = match server_metrics {
        Some(url) => Some(scrape_cpu(url).await?),
        None => None,
    };
    Ok(CpuMarks {
        proc,
        metrics,
        client: crate::metrics::process_cpu_seconds("self"),
    })
}

/// Parses the `iccid` of an ES2+ answer, or says why it failed.
pub(super) fn es2_result(v: &Value, status: u16) -> Result<&Value, String> {
    let st = &v["header"]["functionExecutionStatus"];
    if status == 200 && st["status"] == "Executed-Success" {
        Ok(v)
    } else {
        let d = &st["statusCodeData"];
        Err(format!(
            "HTTP {status} {} {}/{} {}",
            st["status"].as_str().unwrap_or(""),
            d["subjectCode"].as_str().unwrap_or(""),
            d["reasonCode"].as_str().unwrap_or(""),
            d["message"].as_str().unwrap_or("")
        ))
    }
}

/// A progress line on stderr: redrawn in place on a terminal, else one
/// line every tenth of the way.
pub(super) fn progress(done: usize, total: usize, what: &str) {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprint!("\r  {what} {done}/{total}");
        if done == total {
            eprintln!();
        }
    } else if done == total || done % (total / 10).max(1) == 0 {
        eprintln!("  {what} {done}/{total}");
    }
}
