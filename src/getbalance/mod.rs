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

use crate::app::App;
use crate::config::{Config, GetBalanceAuth};
use crate::http::api::{Api, Call, Route, Unrouted};
use crate::http::error::HttpError;
use crate::http::query::{percent_decode, Query};
use crate::http::{self, ConnInfo};
use crate::ids::Iccid;
use crate::limits::RateLimiter;
use crate::store::balance::{BalanceRecord, BalanceType};
use auth::{Authenticator, Denied};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// The request and response header carrying Microsoft's transaction id.
pub const TRANSACTION_HEADER: &str = "x-ms-dm-transactionid";

/// The GetBalance listener's state: a cheap-to-share handle.
pub struct Service {
    auth: Authenticator,
    limiter: RateLimiter,
    /// How long an `X-MS-DM-TransactionId` is remembered (409 for a
    /// repeat; the uses are kept in the store).
    window: Duration,
    basic_challenge: bool,
}

impl Service {
    /// Builds it from the config (loads the CAs).
    pub fn from_config(c: &Config) -> Result<Service, String> {
        let g = &c.getbalance;
        Ok(Service {
            auth: Authenticator::from_config(c)?,
            limiter: RateLimiter::new(g.rate_limit_per_sec, g.rate_limit_burst),
            window: Duration::from_secs(g.transaction_id_window_secs),
            basic_challenge: g.auth == GetBalanceAuth::Basic,
        })
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

fn denied(svc: &Service, d: Denied) -> HttpError {
    match d {
        Denied::Unauthorized(m) => {
            let r = HttpError::new(StatusCode::UNAUTHORIZED, m);
            if svc.basic_challenge {
                r.header(
                    "www-authenticate",
                    HeaderValue::from_static("Basic realm=\"GetBalance\""),
                )
            } else {
                r
            }
        }
        Denied::Forbidden(m) => HttpError::new(StatusCode::FORBIDDEN, m),
    }
}

/// The GetBalance endpoints ([MP-Account]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A SIM's balances.
    GetBalance,
    /// Usage reported by the network (debits the balance).
    Usage,
}

static ROUTES: &[Route<Endpoint>] = &[
    Route {
        method: Method::GET,
        path: "/v1/sims/{simId}/balances",
        endpoint: Endpoint::GetBalance,
    },
    Route {
        method: Method::POST,
        path: "/v1/sims/{simId}/usage",
        endpoint: Endpoint::Usage,
    },
];

/// GetBalance on its own listener.
pub struct GetBalance {
    app: App,
    svc: Service,
}

impl GetBalance {
    /// The API with its authenticator, rate limit and transaction window.
    pub fn new(app: App, svc: Service) -> GetBalance {
        GetBalance { app, svc }
    }
}

/// What every answer carries: no caching, and the caller's transaction id.
fn stamp(h: &mut hyper::HeaderMap, txid: Option<HeaderValue>) {
    h.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    if let Some(t) = txid {
        h.insert(TRANSACTION_HEADER, t);
    }
}

impl Api for GetBalance {
    const NAME: &'static str = "getbalance";
    const PREFIX: &'static str = "";
    type Endpoint = Endpoint;
    type Error = HttpError;

    fn routes() -> &'static [Route<Endpoint>] {
        ROUTES
    }

    fn name(e: Endpoint) -> &'static str {
        match e {
            Endpoint::GetBalance => "getBalance",
            Endpoint::Usage => "usage",
        }
    }

    fn unrouted(&self, miss: &Unrouted, req: &Request<Incoming>) -> HttpError {
        let e = HttpError::unrouted(miss, "GetBalance", req.uri().path());
        e.header(
            hyper::header::CACHE_CONTROL.as_str(),
            HeaderValue::from_static("no-store"),
        )
    }

    async fn handle(&self, call: Call<Endpoint>) -> Result<Response<http::Body>, HttpError> {
        let (app, svc) = (&self.app, &self.svc);
        let txid = call.req.headers().get(TRANSACTION_HEADER).cloned();
        let sim = call.params.first().map(String::as_str).unwrap_or_default();
        let result = match call.endpoint {
            Endpoint::GetBalance => get_balance(app, svc, &call.req, &call.conn, sim),
            Endpoint::Usage => usage(app, svc, call.req, &call.conn, sim).await,
        };
        match result {
            Ok(v) => {
                let mut response = http::json_response(StatusCode::OK, &v);
                stamp(response.headers_mut(), txid);
                Ok(response)
            }
            Err(e) => {
                let e = e.header(
                    hyper::header::CACHE_CONTROL.as_str(),
                    HeaderValue::from_static("no-store"),
                );
                Err(match txid {
                    Some(t) => e.header(TRANSACTION_HEADER, t),
                    None => e,
                })
            }
        }
    }
}

fn rate_limited(svc: &Service) -> Result<(), HttpError> {
    svc.limiter.take().map_err(|secs| {
        HttpError::new(StatusCode::TOO_MANY_REQUESTS, "too many requests").header(
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
) -> Result<Value, HttpError> {
    rate_limited(svc)?;
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    svc.auth
        .caller(&conn.client_chain, authorization)
        .map_err(|d| denied(svc, d))?;
    let bad = HttpError::bad_parameter;
    let iccid = sim_id(sim).ok_or_else(|| {
        bad(
            "simId",
            "simId must be iccid:<ICCID> (19 digits, or 20 with a trailing F)",
        )
    })?;
    let q = Query::parse(req.uri().query());
    let template = match q.get("fieldsTemplate") {
        None | Some(Ok("basic")) => Template::Basic,
        Some(Ok("full")) => Template::Full,
        Some(_) => {
            return Err(bad(
                "fieldsTemplate",
                "fieldsTemplate must be basic or full",
            ))
        }
    };
    let limit = match q.get("limit") {
        None => None,
        Some(Ok(l)) => match l.parse::<u32>() {
            Ok(n) if n >= 1 => Some(n as usize),
            _ => return Err(bad("limit", "limit must be a positive integer")),
        },
        Some(Err(())) => return Err(bad("limit", "limit must be a positive integer")),
    };
    let location = match q.get("location") {
        None => None,
        Some(Ok(l)) if l.len() == 2 && l.bytes().all(|b| b.is_ascii_alphabetic()) => Some(l),
        Some(_) => {
            return Err(bad(
                "location",
                "location must be a two-letter ISO 3166 code",
            ))
        }
    };
    let txid = match req.headers().get(TRANSACTION_HEADER).map(|v| v.as_bytes()) {
        Some(t) if !t.is_empty() && t.len() <= 256 => String::from_utf8_lossy(t).trim().to_owned(),
        _ => {
            return Err(bad(
                "X-MS-DM-TransactionId",
                "the X-MS-DM-TransactionId header (1 to 256 bytes) is required",
            ))
        }
    };
    let window = i64::try_from(svc.window.as_secs()).unwrap_or(i64::MAX);
    let first = app
        .store
        .first_use(&format!("getbalance:{txid}"), crate::time::now(), window)
        .map_err(store_failed)?;
    if !first {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            format!(
                "X-MS-DM-TransactionId {} was already used",
                crate::error::quote(&txid)
            ),
        ));
    }
    if !app.store.sim_known(&iccid).map_err(store_failed)? {
        return Err(HttpError::not_found(format!("ICCID {iccid} is unknown")));
    }
    let rec = app.store.balance(&iccid).map_err(store_failed)?;
    let list = balances(
        &iccid,
        rec.as_ref(),
        crate::time::now(),
        location,
        limit,
        template,
    );
    Ok(json!({"balances": list.iter().map(Balance::to_json).collect::<Vec<_>>()}))
}

/// A store failure as the Mobile Plans APIs answer it.
fn store_failed(e: crate::error::Error) -> HttpError {
    crate::mobileplans::MpError::from(e).into()
}

async fn usage(
    app: &App,
    svc: &Service,
    req: Request<Incoming>,
    conn: &ConnInfo,
    sim: &str,
) -> Result<Value, HttpError> {
    rate_limited(svc)?;
    let operator = svc
        .auth
        .operator(&conn.client_chain)
        .map_err(|d| denied(svc, d))?;
    let bad = |p: &str, m: &str| HttpError::bad_parameter(p, m);
    let iccid = sim_id(sim).ok_or_else(|| bad("simId", "simId must be iccid:<ICCID>"))?;
    let body = http::read_body(req.into_body(), app.config.max_body_bytes)
        .await
        .map_err(|e| bad("body", &e.message))?;
    let v: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(m)) => Value::Object(m),
        _ => return Err(bad("body", "the body must be a JSON object")),
    };
    let used = match v.get("dataUsedInMB") {
        Some(n) => crate::mobileplans::mb_to_kb(n, "dataUsedInMB").map_err(|_| {
            bad(
                "dataUsedInMB",
                "dataUsedInMB must be a number of MB from 0 to 10^12",
            )
        })?,
        None => return Err(bad("dataUsedInMB", "dataUsedInMB is missing")),
    };
    let location = match v.get("location") {
        None | Some(Value::Null) => None,
        Some(Value::String(l)) if l.len() == 2 && l.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Some(l.as_str())
        }
        Some(_) => {
            return Err(bad(
                "location",
                "location must be a two-letter ISO 3166 code",
            ))
        }
    };
    let now = crate::time::now();
    let debited = app
        .store
        .debit_usage(&operator, &iccid, used, location, now)
        .map_err(store_failed)?;
    app.store.sync().await.map_err(store_failed)?;
    let list = balances(
        &iccid,
        Some(&debited.record),
        now,
        None,
        None,
        Template::Full,
    );
    Ok(json!({
        "iccid": iccid.as_str(),
        "debitedInMB": used.saturating_sub(debited.uncovered_kb) as f64 / 1000.0,
        "uncoveredInMB": debited.uncovered_kb as f64 / 1000.0,
        "balances": list.iter().map(Balance::to_json).collect::<Vec<_>>(),
    }))
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
