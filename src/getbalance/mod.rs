//! The GetBalance API of Windows Mobile Plans enhanced account management
//! ([MP-Account]), on its own HTTPS listener (`getbalance_listen`),
//! and the usage reports that debit the balances.
//!
//! | method | path | who |
//! |---|---|---|
//! | GET | `/v1/sims/iccid:<ICCID>/balances?fieldsTemplate=basic\|full&limit=N&location=XX` | Microsoft's service (mTLS with the configured subject, or basic auth) |
//! | POST | `/v1/sims/iccid:<ICCID>/usage` `{"dataUsedInMB": n, "location": "XX"}` | the operator (its ES2+ client certificate) |
//!
//! Status codes: 200 (a zero balance too: `0.0` and `PT0S`), 400 naming
//! the bad parameter, 401 (no or expired certificate, bad basic
//! credentials), 403 (untrusted certificate), 404 (unknown ICCID), 405, 409
//! (repeated `X-MS-DM-TransactionId`), 429 with `Retry-After`. Bad input is
//! never a 500.
//!
//! A separate listener because the certificate request it makes would
//! reach browsers on the portal's listener, and because only Microsoft's
//! service and the operator need to reach it.

pub mod auth;
pub mod limits;

use crate::app::App;
use crate::config::{Config, GetBalanceAuth};
use crate::http::query::{percent_decode, Query};
use crate::http::{self, ConnInfo, Outcome};
use crate::ids::Iccid;
use crate::limits::RateLimiter;
use crate::store::balance::{BalanceRecord, BalanceType};
use auth::{Authenticator, Denied};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};
use limits::TransactionWindow;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The request and response header carrying Microsoft's transaction id.
pub const TRANSACTION_HEADER: &str = "x-ms-dm-transactionid";

/// The GetBalance listener's state: a cheap-to-share handle.
pub struct Service {
    auth: Authenticator,
    limiter: RateLimiter,
    seen: TransactionWindow,
    basic_challenge: bool,
}

impl Service {
    /// Builds it from the config (loads the CAs).
    pub fn from_config(c: &Config) -> Result<Service, String> {
        let g = &c.getbalance;
        Ok(Service {
            auth: Authenticator::from_config(c)?,
            limiter: RateLimiter::new(g.rate_limit_per_sec, g.rate_limit_burst),
            seen: TransactionWindow::new(
                Duration::from_secs(g.transaction_id_window_secs),
                g.transaction_id_window_max,
            ),
            basic_challenge: g.auth == GetBalanceAuth::Basic,
        })
    }
}

/// A finished answer.
struct Reply {
    status: StatusCode,
    body: Value,
    headers: Vec<(&'static str, HeaderValue)>,
}

impl Reply {
    fn new(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            body,
            headers: vec![],
        }
    }

    fn bad(parameter: &str, message: impl Into<String>) -> Reply {
        Reply::new(
            StatusCode::BAD_REQUEST,
            json!({"error": message.into(), "parameter": parameter}),
        )
    }

    fn error(status: StatusCode, message: impl Into<String>) -> Reply {
        Reply::new(status, json!({"error": message.into()}))
    }

    fn header(mut self, name: &'static str, value: HeaderValue) -> Reply {
        self.headers.push((name, value));
        self
    }
}

/// `fieldsTemplate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    /// type, dataRemainingInMB, timeRemaining (and the id, as the docs'
    /// sample answer has it).
    Basic,
    /// Every property: also `locations`.
    Full,
}

/// One balance resource, as GetBalance answers it. Both spellings of
/// `dataRemainingInMB` are emitted (the table's and the samples'), and
/// either is accepted when reading one.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Balance {
    /// The operator's internal id.
    pub id: String,
    /// MODIRECT, MODIRECTPAYG, NONE or NOTSUPPORTED.
    #[serde(rename = "type")]
    pub balance_type: String,
    /// MB left.
    #[serde(rename = "dataRemainingInMB", alias = "dataRemaininginMB")]
    pub data_remaining_in_mb: f64,
    /// ISO 8601 duration.
    #[serde(rename = "timeRemaining")]
    pub time_remaining: String,
    /// ISO 3166 codes (`full` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locations: Option<Vec<String>>,
}

impl Balance {
    /// The JSON with both spellings of dataRemainingInMB.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        v["dataRemaininginMB"] = json!(self.data_remaining_in_mb);
        v
    }
}

/// The balances of a SIM at `now`: the active ones at `location`, ending
/// first first, at most `limit`; or one zero balance (the walled-garden
/// state: `NONE`, 0 and `PT0S`), or `NOTSUPPORTED`, whose id is the ICCID.
pub fn balances(
    iccid: &Iccid,
    rec: Option<&BalanceRecord>,
    now: i64,
    location: Option<&str>,
    limit: Option<usize>,
    template: Template,
) -> Vec<Balance> {
    let zero = |t: BalanceType, id: &str| Balance {
        id: id.to_owned(),
        balance_type: t.as_str().to_owned(),
        data_remaining_in_mb: 0.0,
        time_remaining: crate::time::iso8601_duration(0),
        locations: (template == Template::Full).then(Vec::new),
    };
    let Some(rec) = rec else {
        return vec![zero(BalanceType::None, iccid.as_str())];
    };
    if rec.not_supported {
        return vec![zero(BalanceType::NotSupported, iccid.as_str())];
    }
    let active = rec.active(now, location);
    if active.is_empty() {
        return vec![zero(BalanceType::None, iccid.as_str())];
    }
    active
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(|b| Balance {
            id: b.id.clone(),
            balance_type: b.balance_type.as_str().to_owned(),
            data_remaining_in_mb: b.remaining_kb as f64 / 1000.0,
            time_remaining: crate::time::iso8601_duration(b.expires_at - now),
            locations: (template == Template::Full).then(|| b.locations.clone()),
        })
        .collect()
}

/// The ICCID of a simId path segment: `iccid:<ICCID>`, percent-encoded or
/// not, with the blank the docs' example has after the colon tolerated.
pub fn sim_id(segment: &str) -> Option<Iccid> {
    let decoded = percent_decode(segment, false)?;
    let t = decoded.trim();
    let rest = t
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("iccid:"))
        .map(|_| &t[6..])?;
    Iccid::parse(rest.trim())
}

fn denied(svc: &Service, d: Denied) -> Reply {
    match d {
        Denied::Unauthorized(m) => {
            let r = Reply::error(StatusCode::UNAUTHORIZED, m);
            if svc.basic_challenge {
                r.header(
                    "www-authenticate",
                    HeaderValue::from_static("Basic realm=\"GetBalance\""),
                )
            } else {
                r
            }
        }
        Denied::Forbidden(m) => Reply::error(StatusCode::FORBIDDEN, m),
    }
}

/// Handles a request on the GetBalance listener.
pub async fn handle(
    app: App,
    svc: Arc<Service>,
    req: Request<Incoming>,
    conn: &ConnInfo,
) -> Outcome {
    let path = req.uri().path().to_owned();
    let route = path
        .strip_prefix("/v1/sims/")
        .and_then(|rest| rest.split_once('/'))
        .map(|(sim, tail)| (sim.to_owned(), tail.to_owned()));
    let txid = req.headers().get(TRANSACTION_HEADER).cloned();
    let (function, reply) = match route {
        Some((sim, tail)) if tail == "balances" => (
            "getBalance",
            if req.method() == Method::GET {
                get_balance(&app, &svc, &req, conn, &sim)
            } else {
                Reply::error(StatusCode::METHOD_NOT_ALLOWED, "use GET")
                    .header("allow", HeaderValue::from_static("GET"))
            },
        ),
        Some((sim, tail)) if tail == "usage" => (
            "usage",
            if req.method() == Method::POST {
                usage(&app, &svc, req, conn, &sim).await
            } else {
                Reply::error(StatusCode::METHOD_NOT_ALLOWED, "use POST")
                    .header("allow", HeaderValue::from_static("POST"))
            },
        ),
        _ => (
            "unknown",
            Reply::error(
                StatusCode::NOT_FOUND,
                format!("no GetBalance endpoint {}", crate::error::quote(&path)),
            ),
        ),
    };
    let mut response = http::json_response(reply.status, &reply.body);
    let h = response.headers_mut();
    h.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    if let Some(t) = txid {
        h.insert(TRANSACTION_HEADER, t);
    }
    for (name, value) in reply.headers {
        h.insert(name, value);
    }
    let ok = reply.status.is_success();
    Outcome {
        response,
        function,
        status: if ok { "ok" } else { "error" },
        code: if ok {
            String::new()
        } else {
            reply.status.as_u16().to_string()
        },
    }
}

fn rate_limited(svc: &Service) -> Option<Reply> {
    svc.limiter.take().err().map(|secs| {
        Reply::error(StatusCode::TOO_MANY_REQUESTS, "too many requests").header(
            "retry-after",
            HeaderValue::from_str(&secs.to_string()).unwrap_or(HeaderValue::from_static("1")),
        )
    })
}

fn get_balance(
    app: &App,
    svc: &Service,
    req: &Request<Incoming>,
    conn: &ConnInfo,
    sim: &str,
) -> Reply {
    if let Some(r) = rate_limited(svc) {
        return r;
    }
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(d) = svc.auth.caller(&conn.client_chain, authorization) {
        return denied(svc, d);
    }
    let Some(iccid) = sim_id(sim) else {
        return Reply::bad(
            "simId",
            "simId must be iccid:<ICCID> (19 digits, or 20 with a trailing F)",
        );
    };
    let q = Query::parse(req.uri().query());
    let template = match q.get("fieldsTemplate") {
        None | Some(Ok("basic")) => Template::Basic,
        Some(Ok("full")) => Template::Full,
        Some(_) => return Reply::bad("fieldsTemplate", "fieldsTemplate must be basic or full"),
    };
    let limit = match q.get("limit") {
        None => None,
        Some(Ok(l)) => match l.parse::<u32>() {
            Ok(n) if n >= 1 => Some(n as usize),
            _ => return Reply::bad("limit", "limit must be a positive integer"),
        },
        Some(Err(())) => return Reply::bad("limit", "limit must be a positive integer"),
    };
    let location = match q.get("location") {
        None => None,
        Some(Ok(l)) if l.len() == 2 && l.bytes().all(|b| b.is_ascii_alphabetic()) => Some(l),
        Some(_) => return Reply::bad("location", "location must be a two-letter ISO 3166 code"),
    };
    let txid = match req.headers().get(TRANSACTION_HEADER).map(|v| v.as_bytes()) {
        Some(t) if !t.is_empty() && t.len() <= 256 => String::from_utf8_lossy(t).trim().to_owned(),
        _ => {
            return Reply::bad(
                "X-MS-DM-TransactionId",
                "the X-MS-DM-TransactionId header (1 to 256 bytes) is required",
            )
        }
    };
    if !svc.seen.first_time(&txid) {
        return Reply::error(
            StatusCode::CONFLICT,
            format!(
                "X-MS-DM-TransactionId {} was already used",
                crate::error::quote(&txid)
            ),
        );
    }
    let known = app.store.sim_known(&iccid);
    let rec = app.store.balance(&iccid);
    match (known, rec) {
        (Ok(false), _) => Reply::error(StatusCode::NOT_FOUND, format!("ICCID {iccid} is unknown")),
        (Ok(true), Ok(rec)) => {
            let list = balances(
                &iccid,
                rec.as_ref(),
                crate::time::now(),
                location,
                limit,
                template,
            );
            Reply::new(
                StatusCode::OK,
                json!({"balances": list.iter().map(Balance::to_json).collect::<Vec<_>>()}),
            )
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "GetBalance: store read failed");
            let e = crate::mobileplans::MpError::from(e.clone());
            Reply::new(e.status(), e.body())
        }
    }
}

async fn usage(
    app: &App,
    svc: &Service,
    req: Request<Incoming>,
    conn: &ConnInfo,
    sim: &str,
) -> Reply {
    if let Some(r) = rate_limited(svc) {
        return r;
    }
    let operator = match svc.auth.operator(&conn.client_chain) {
        Ok(o) => o,
        Err(d) => return denied(svc, d),
    };
    let Some(iccid) = sim_id(sim) else {
        return Reply::bad("simId", "simId must be iccid:<ICCID>");
    };
    let body = match http::read_body(req.into_body(), app.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return Reply::bad("body", e.message),
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(m)) => Value::Object(m),
        _ => return Reply::bad("body", "the body must be a JSON object"),
    };
    let used = match v.get("dataUsedInMB") {
        Some(n) => match crate::mobileplans::mb_to_kb(n, "dataUsedInMB") {
            Ok(kb) => kb,
            Err(_) => {
                return Reply::bad(
                    "dataUsedInMB",
                    "dataUsedInMB must be a number of MB from 0 to 10^12",
                )
            }
        },
        None => return Reply::bad("dataUsedInMB", "dataUsedInMB is missing"),
    };
    let location = match v.get("location") {
        None | Some(Value::Null) => None,
        Some(Value::String(l)) if l.len() == 2 && l.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Some(l.as_str())
        }
        Some(_) => return Reply::bad("location", "location must be a two-letter ISO 3166 code"),
    };
    let now = crate::time::now();
    let debited = match app
        .store
        .debit_usage(&operator, &iccid, used, location, now)
    {
        Ok(d) => d,
        Err(e) => {
            if e.is_ours() {
                tracing::error!(error = %e.message, "usage: store write failed");
            }
            let e = crate::mobileplans::MpError::from(e);
            return Reply::new(e.status(), e.body());
        }
    };
    if let Err(e) = app.store.sync().await {
        tracing::error!(error = %e, "usage: flush failed");
        let e = crate::mobileplans::MpError::from(e);
        return Reply::new(e.status(), e.body());
    }
    let list = balances(
        &iccid,
        Some(&debited.record),
        now,
        None,
        None,
        Template::Full,
    );
    Reply::new(
        StatusCode::OK,
        json!({
            "iccid": iccid.as_str(),
            "debitedInMB": used.saturating_sub(debited.uncovered_kb) as f64 / 1000.0,
            "uncoveredInMB": debited.uncovered_kb as f64 / 1000.0,
            "balances": list.iter().map(Balance::to_json).collect::<Vec<_>>(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::balance::Credit;

    #[test]
    fn sim_ids_as_the_docs_write_them() {
        let want = Iccid::parse("8988247000100003319");
        assert_eq!(sim_id("iccid:8988247000100003319"), want);
        assert_eq!(sim_id("iccid%3A8988247000100003319"), want);
        assert_eq!(sim_id("iccid:%208988247000100003319"), want);
        assert_eq!(sim_id("ICCID:8988247000100003319F"), want);
        assert_eq!(sim_id("8988247000100003319"), None);
        assert_eq!(sim_id("iccid:898824700010000331"), None);
        assert_eq!(sim_id("iccid:%zz"), None);
    }

    #[test]
    fn zero_not_supported_and_active_balances() {
        let iccid = Iccid::parse("8988247000100003319").expect("iccid");
        let z = balances(&iccid, None, 0, None, None, Template::Basic);
        assert_eq!(z.len(), 1);
        assert_eq!(z[0].balance_type, "NONE");
        assert_eq!(z[0].time_remaining, "PT0S");
        let v = z[0].to_json();
        assert_eq!(v["dataRemainingInMB"], json!(0.0));
        assert_eq!(v["dataRemaininginMB"], json!(0.0));
        assert!(v.get("locations").is_none());

        let mut r = BalanceRecord::new(&iccid, "op", 0);
        r.credit(
            &Credit {
                id: Some("23445".into()),
                balance_type: BalanceType::ModirectPayg,
                data_kb: 123_000,
                expires_at: 23 * 86400 + 23 * 3600,
                locations: vec!["US".into()],
                plan_name: "p".into(),
            },
            None,
            0,
        );
        let b = balances(&iccid, Some(&r), 0, None, Some(1), Template::Full);
        assert_eq!(
            b[0].to_json(),
            json!({"id": "23445", "type": "MODIRECTPAYG", "dataRemainingInMB": 123.0,
                   "dataRemaininginMB": 123.0, "timeRemaining": "P23DT23H", "locations": ["US"]})
        );
        let parsed: Balance = serde_json::from_str(
            r#"{"id":"1","type":"NONE","dataRemaininginMB":5.5,"timeRemaining":"PT0S"}"#,
        )
        .expect("the samples' spelling");
        assert_eq!(parsed.data_remaining_in_mb, 5.5);
        let elsewhere = balances(&iccid, Some(&r), 0, Some("us"), None, Template::Basic);
        assert_eq!(
            elsewhere[0].balance_type, "NONE",
            "location is case-sensitive"
        );
        r.not_supported = true;
        assert_eq!(
            balances(&iccid, Some(&r), 0, None, None, Template::Basic)[0].balance_type,
            "NOTSUPPORTED"
        );
    }
}
