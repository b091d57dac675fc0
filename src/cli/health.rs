//! `smdpplus health`: one plain-HTTP GET of an operations endpoint, for
//! container and service health checks on images that ship no HTTP client.
//! Exit status 0 when the endpoint answers 200, 1 otherwise.

use std::process::ExitCode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Splits `http://host:port/path` into (`host:port`, `/path`); the port
/// defaults to 80 and the path to `/`.
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs (the operations listener)"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let has_port = match authority.rsplit_once(':') {
        Some((_, p)) => !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    };
    let authority = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_owned()))
}

/// GETs `url` and returns the HTTP status.
async fn status_of(url: &str) -> Result<u16, String> {
    let (authority, path) = split_url(url)?;
    let mut s = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| format!("{authority}: {e}"))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| format!("{authority}: {e}"))?;
    // The status line is all we need; the operations answers are short.
    let mut buf = vec![0u8; 1024];
    let mut n = 0;
    while n < buf.len() && !buf[..n].contains(&b'\n') {
        let got = s
            .read(&mut buf[n..])
            .await
            .map_err(|e| format!("{authority}: {e}"))?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split(' ')
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or_else(|| format!("{url}: not an HTTP answer"))
}

/// Runs the check: prints the outcome on stderr when it fails.
pub async fn run(url: &str, timeout: Duration) -> Result<ExitCode, String> {
    match tokio::time::timeout(timeout, status_of(url)).await {
        Err(_) => Err(format!("{url}: no answer within {}s", timeout.as_secs())),
        Ok(Err(e)) => Err(e),
        Ok(Ok(200)) => Ok(ExitCode::SUCCESS),
        Ok(Ok(status)) => Err(format!("{url}: HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls() {
        let s = |u: &str| split_url(u).map(|(a, p)| format!("{a} {p}"));
        assert_eq!(
            s("http://127.0.0.1:9090/readyz"),
            Ok("127.0.0.1:9090 /readyz".into())
        );
        assert_eq!(s("http://localhost"), Ok("localhost:80 /".into()));
        assert_eq!(
            s("http://[::1]:9090/healthz"),
            Ok("[::1]:9090 /healthz".into())
        );
        assert_eq!(s("http://[::1]/x"), Ok("[::1]:80 /x".into()));
        assert!(s("https://127.0.0.1:9090/readyz").is_err());
        assert!(s("http:///readyz").is_err());
    }
}
