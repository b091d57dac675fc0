//! Headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs), with stand-in Mobile Plans
//! objects injected before every page's own scripts. They record each
//! call in `sessionStorage`, so the calls survive the portal's navigations.
//!
//! Without Chromium the browser tests are skipped with a message, unless
//! `SMDPPLUS_BROWSER_TESTS=require` (set by `.ci/run`), which makes them fail.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The objects the Mobile Plans app injects ([MP-Callbacks]), as
/// recorders. Enum members are their own names; `notifyProfileDownload`
/// and `notifyBalanceAddition` return an operation context `{Id}`.
pub const STAND_INS: &str = r#"
(function () {
  function load() { try { return JSON.parse(sessionStorage.getItem("mpCalls") || "[]"); } catch (e) { return []; } }
  var n = 0;
  function record(object, method, args) {
    var calls = load();
    calls.push({object: object, method: method, args: JSON.parse(JSON.stringify(Array.prototype.slice.call(args)))});
    sessionStorage.setItem("mpCalls", JSON.stringify(calls));
    n += 1;
    return {Id: "op-" + calls.length};
  }
  function members(names) { var o = {}; names.forEach(function (k) { o[k] = k; }); return o; }
  window.__mpCalls = load;
  // The docs forbid pop-ups: any attempt is recorded.
  window.open = function () { record("window", "open", arguments); return null; };
  window.MobilePlansUserAccount = members(["new", "existing", "bailed", "none"]);
  window.MobilePlansPurchaseInstrument = members(["new", "existing", "bailed", "none"]);
  window.MobilePlansLineType = members(["new", "existing", "bailed", "none"]);
  window.MobilePlansMoDirectStatus = members(["complete", "serviceError", "invalidSIM", "logOnFailed",
    "purchaseFailed", "clientError", "billingError", "cancelled"]);
  window.MobilePlans = {
    createPurchaseMetaData: function () { return {}; },
    notifyPurchaseWithProfileDownload: function () { record("MobilePlans", "notifyPurchaseWithProfileDownload", arguments); },
    notifyCancelledPurchase: function () { record("MobilePlans", "notifyCancelledPurchase", arguments); },
    notifyBalanceAddition: function () { record("MobilePlans", "notifyBalanceAddition", arguments); }
  };
  window.MobilePlansInlineOperations = {
    notifyProfileDownload: function () { return record("MobilePlansInlineOperations", "notifyProfileDownload", arguments); },
    notifyOperationCancel: function () { record("MobilePlansInlineOperations", "notifyOperationCancel", arguments); },
    notifyBalanceAddition: function () { return record("MobilePlansInlineOperations", "notifyBalanceAddition", arguments); }
  };
})();
"#;

/// A headless Chromium session.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    shots: PathBuf,
    shot: usize,
    _profile: tempfile::TempDir,
}

/// One HTTP exchange with chromedriver (plain HTTP on loopback): the
/// answer is read to its Content-Length (chromedriver keeps connections
/// open), within a minute.
async fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    tokio::time::timeout(Duration::from_secs(60), exchange(port, method, path, body))
        .await
        .map_err(|_| format!("{method} {path}: chromedriver did not answer"))?
}

async fn exchange(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![];
    let mut chunk = vec![0u8; 16384];
    let (head_end, length) = loop {
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the headers".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (i + 4, length);
        }
    };
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let end = (head_end + length).min(buf.len());
    Ok((
        status,
        serde_json::from_slice(&buf[head_end..end]).unwrap_or(Value::Null),
    ))
}

impl Browser {
    /// Starts chromedriver and a headless Chromium (800x600), with the
    /// stand-ins injected. `None` when Chromium is not installed and the
    /// tests are not required.
    pub async fn start(test: &str) -> Option<Browser> {
        let installed =
            std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
        if !installed {
            assert!(
                std::env::var("SMDPPLUS_BROWSER_TESTS").as_deref() != Ok("require"),
                "Chromium and chromedriver are required (SMDPPLUS_BROWSER_TESTS=require)"
            );
            eprintln!("skipped {test}: {CHROMIUM} or {CHROMEDRIVER} is not installed");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, v)) = http(port, "GET", "/status", None).await {
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        // The flags of the machine notes: no sandbox as root, and no
        // background networking on this closed network.
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--disable-dev-shm-usage", "--window-size=800,600",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let (status, v) = http(port, "POST", "/session", Some(&caps))
            .await
            .expect("new session");
        assert_eq!(status, 200, "new session: {v}");
        let session = v["value"]["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("portal-screenshots")
            .join(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        let b = Browser {
            driver,
            port,
            session,
            shots,
            shot: 0,
            _profile: profile,
        };
        b.cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": STAND_INS}),
        )
        .await;
        Some(b)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let (status, v) = http(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        )
        .await?;
        if status == 200 {
            Ok(v["value"].clone())
        } else {
            Err(format!("{method} {path}: HTTP {status}: {v}"))
        }
    }

    /// A Chrome DevTools Protocol command through chromedriver.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.call(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": cmd, "params": params})),
        )
        .await
        .expect("cdp")
    }

    /// Headers sent with every request from now on, as the app adds
    /// `Accept-Language` and the `X-MP-LPAError-*` headers.
    pub async fn set_headers(&self, headers: &[(&str, &str)]) {
        let map: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        self.cdp("Network.enable", json!({})).await;
        self.cdp("Network.setExtraHTTPHeaders", json!({"headers": map}))
            .await;
    }

    /// Navigates (GET), as the app does.
    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url})))
            .await
            .expect("navigate");
    }

    /// Runs a script in the page and returns its value.
    pub async fn exec(&self, script: &str) -> Result<Value, String> {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Clicks the element with this CSS selector.
    pub async fn click(&self, css: &str) {
        let e = self
            .call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"));
        let id = e
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("element id")
            .to_owned();
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})))
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Waits until `expr` (a JavaScript expression) is true.
    pub async fn wait(&self, expr: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = Value::Null;
        loop {
            if let Ok(v) = self.exec(&format!("return !!({expr});")).await {
                if v == true {
                    return;
                }
                last = v;
            }
            if Instant::now() > deadline {
                let html = self
                    .exec("return document.documentElement.outerHTML;")
                    .await
                    .unwrap_or_default();
                panic!("timed out waiting for {expr} ({last}); page: {html}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the portal step (`<main data-step>`).
    pub async fn step(&self, step: &str) {
        self.wait(&format!(
            "document.querySelector('main') && document.querySelector('main').getAttribute('data-step') === '{step}'"
        ))
        .await;
    }

    /// The text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.exec(&format!(
            "var e = document.querySelector({}); return e ? e.textContent : null;",
            serde_json::to_string(css).unwrap_or_default()
        ))
        .await
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
    }

    /// Every call the page made to the stand-ins.
    pub async fn calls(&self) -> Vec<Value> {
        self.exec("return window.__mpCalls ? window.__mpCalls() : [];")
            .await
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Saves a screenshot under the test output folder.
    pub async fn screenshot(&mut self, name: &str) {
        use base64::Engine;
        let v = self
            .call("GET", "/screenshot", None)
            .await
            .expect("screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("base64 PNG");
        self.shot += 1;
        let path = self.shots.join(format!("{:02}-{name}.png", self.shot));
        std::fs::write(&path, png).expect("write screenshot");
    }

    /// The folder of this test's screenshots.
    pub fn screenshots(&self) -> &std::path::Path {
        &self.shots
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Close the session (and its Chromium) before chromedriver goes.
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            // One read: the answer is small, and the connection may stay open.
            let mut sink = [0u8; 4096];
            let _ = s.read(&mut sink);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
