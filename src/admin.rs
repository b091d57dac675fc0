//! The operator admin API on the ES2+ listener (mutual TLS, operator-scoped).
//! Not part of SGP.22: inventory, order expiry, profile state and history,
//! and the notification outbox. Plain HTTP status codes with a JSON
//! [`HttpError`] body: `{"error": ...}`, with the GSMA `code` of a store
//! refusal and the `parameter` at fault where there is one.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/smdpplus/admin/v1/profiles?state=&profileType=&limit=` | list profiles |
//! | POST | `/smdpplus/admin/v1/profiles` | add profiles to the inventory |
//! | GET | `/smdpplus/admin/v1/profiles/{iccid}` | one profile and its history |
//! | GET | `/smdpplus/admin/v1/profiles/{iccid}/package?unprotected=true` | the package in clear (debugging) |
//! | PUT | `/smdpplus/admin/v1/profiles/{iccid}/expiry` | set an order's expiry |
//! | GET | `/smdpplus/admin/v1/outbox` | pending notifications |
//! | POST | `/smdpplus/admin/v1/mobileplans/orders` | place a Mobile Plans purchase (checkout) |
//! | GET | `/smdpplus/admin/v1/mobileplans/orders/{transactionId}` | the order and its callback decision |
//! | GET | `/smdpplus/admin/v1/mobileplans/orders?iccid=` (or `eid=`) | the latest order of the operator for a line (or an eUICC) |
//! | POST | `/smdpplus/admin/v1/mobileplans/orders/{transactionId}/confirm` | confirm a held portal order (payment): its profile is released |
//! | PUT | `/smdpplus/admin/v1/balances/{iccid}` | register a SIM for GetBalance (`notSupported`) |
//! | POST | `/smdpplus/admin/v1/balances/{iccid}/credit` | credit a balance outside a Mobile Plans purchase |
//! | GET | `/smdpplus/admin/v1/balances/{iccid}` | a SIM's balance buckets |

use crate::app::App;
use crate::error::Error;
use crate::http;
use crate::http::api::{Api, Call, Route, Unrouted};
use crate::http::error::HttpError;
use crate::http::query::Query;
use crate::ids::Iccid;
use crate::store::lifecycle::State;
use crate::store::{
    Command, Ctx, HistoryEntry, ListFilter, NewProfile, OutboxItem, PointStatus, ProfileRecord,
};
use base64::Engine;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

/// The admin view of a profile. Confirmation-code hashes stay inside.
pub fn profile_view(r: &ProfileRecord) -> Value {
    json!({
        "iccid": r.iccid,
        "profileType": r.profile_type,
        "operator": r.operator,
        "state": r.state.as_str(),
        "eid": r.eid,
        "matchingId": r.matching_id,
        "confirmationCodeRequired": !r.cc_hashes.is_empty(),
        "downloadAttempts": r.download_attempts,
        "confirmationCodeAttempts": r.cc_attempts,
        "expiresAt": r.expires_at.map(crate::time::datetime),
        "createdAt": crate::time::datetime(r.created_at),
        "updatedAt": crate::time::datetime(r.updated_at),
        "packageRef": r.package_ref,
        "errorReason": r.error_reason,
    })
}

/// The admin view of a SIM's balance buckets.
fn balance_view(r: &crate::store::balance::BalanceRecord, now: i64) -> Value {
    let buckets: Vec<Value> = r
        .buckets
        .iter()
        .map(|b| {
            json!({
                "id": b.id,
                "type": b.balance_type.as_str(),
                "dataRemainingInMB": b.remaining_kb as f64 / 1000.0,
                "creditedInMB": b.credited_kb as f64 / 1000.0,
                "expiresAt": crate::time::datetime(b.expires_at),
                "timeRemaining": crate::time::iso8601_duration(b.expires_at - now),
                "active": b.active_at(now, None),
                "locations": b.locations,
                "planName": b.plan_name,
                "order": b.order,
            })
        })
        .collect();
    json!({"iccid": r.iccid, "notSupported": r.not_supported, "buckets": buckets})
}

fn history_view(h: &HistoryEntry) -> Value {
    json!({
        "at": crate::time::datetime(h.at),
        "event": h.event.as_str(),
        "from": h.from.map(State::as_str),
        "to": h.to.as_str(),
        "caller": h.caller,
        "retry": h.retry.map(crate::store::RetryKind::as_str),
    })
}

fn outbox_view(o: &OutboxItem) -> Value {
    let (status, code) = match &o.status {
        PointStatus::Success => ("Executed-Success", None),
        PointStatus::Failed {
            subject, reason, ..
        } => ("Failed", Some(format!("{subject}/{reason}"))),
    };
    json!({
        "id": o.id,
        "operator": o.operator,
        "iccid": o.iccid,
        "eid": o.eid,
        "notificationPointId": o.point,
        "status": status,
        "code": code,
        "timestamp": crate::time::datetime(o.timestamp),
        "attempts": o.attempts,
        "nextAttemptMs": o.next_attempt_ms,
        "lastError": o.last_error,
    })
}

/// The admin API's endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// List the operator's profiles.
    ListProfiles,
    /// Add profiles to the inventory.
    AddProfiles,
    /// One profile and its history.
    GetProfile,
    /// A package in clear, for debugging.
    ExportPackage,
    /// Set an order's expiry.
    SetExpiry,
    /// The notifications waiting in the outbox.
    Outbox,
    /// Place a Mobile Plans purchase.
    PlaceOrder,
    /// The latest Mobile Plans order of a line or an eUICC.
    FindOrder,
    /// A Mobile Plans order and its callback decision.
    GetOrder,
    /// Confirm a held portal order.
    ConfirmOrder,
    /// Register a SIM for GetBalance.
    RegisterSim,
    /// Credit a balance.
    CreditBalance,
    /// A SIM's balance buckets.
    Balance,
}

const fn at(method: Method, path: &'static str, endpoint: Endpoint) -> Route<Endpoint> {
    Route {
        method,
        path,
        endpoint,
    }
}

static ROUTES: &[Route<Endpoint>] = &[
    at(
        Method::GET,
        "/smdpplus/admin/v1/profiles",
        Endpoint::ListProfiles,
    ),
    at(
        Method::POST,
        "/smdpplus/admin/v1/profiles",
        Endpoint::AddProfiles,
    ),
    at(
        Method::GET,
        "/smdpplus/admin/v1/profiles/{iccid}",
        Endpoint::GetProfile,
    ),
    at(
        Method::GET,
        "/smdpplus/admin/v1/profiles/{iccid}/package",
        Endpoint::ExportPackage,
    ),
    at(
        Method::PUT,
        "/smdpplus/admin/v1/profiles/{iccid}/expiry",
        Endpoint::SetExpiry,
    ),
    at(Method::GET, "/smdpplus/admin/v1/outbox", Endpoint::Outbox),
    at(
        Method::POST,
        "/smdpplus/admin/v1/mobileplans/orders",
        Endpoint::PlaceOrder,
    ),
    at(
        Method::GET,
        "/smdpplus/admin/v1/mobileplans/orders",
        Endpoint::FindOrder,
    ),
    at(
        Method::GET,
        "/smdpplus/admin/v1/mobileplans/orders/{transactionId}",
        Endpoint::GetOrder,
    ),
    at(
        Method::POST,
        "/smdpplus/admin/v1/mobileplans/orders/{transactionId}/confirm",
        Endpoint::ConfirmOrder,
    ),
    at(
        Method::PUT,
        "/smdpplus/admin/v1/balances/{iccid}",
        Endpoint::RegisterSim,
    ),
    at(
        Method::POST,
        "/smdpplus/admin/v1/balances/{iccid}/credit",
        Endpoint::CreditBalance,
    ),
    at(
        Method::GET,
        "/smdpplus/admin/v1/balances/{iccid}",
        Endpoint::Balance,
    ),
];

/// The operator admin API (mutual TLS on the ES2+ listener).
pub struct Admin(pub App);

impl Api for Admin {
    const NAME: &'static str = "admin";
    const PREFIX: &'static str = "/smdpplus/admin/v1";
    type Endpoint = Endpoint;
    type Error = HttpError;

    fn routes() -> &'static [Route<Endpoint>] {
        ROUTES
    }

    fn name(e: Endpoint) -> &'static str {
        match e {
            Endpoint::ListProfiles => "listProfiles",
            Endpoint::AddProfiles => "addProfiles",
            Endpoint::GetProfile => "getProfile",
            Endpoint::ExportPackage => "exportPackage",
            Endpoint::SetExpiry => "setExpiry",
            Endpoint::Outbox => "outbox",
            Endpoint::PlaceOrder => "placeOrder",
            Endpoint::FindOrder => "findOrder",
            Endpoint::GetOrder => "getOrder",
            Endpoint::ConfirmOrder => "confirmOrder",
            Endpoint::RegisterSim => "registerSim",
            Endpoint::CreditBalance => "creditBalance",
            Endpoint::Balance => "balance",
        }
    }

    fn unrouted(&self, miss: &Unrouted, req: &Request<Incoming>) -> HttpError {
        HttpError::unrouted(miss, "admin", req.uri().path())
    }

    async fn handle(&self, call: Call<Endpoint>) -> Result<Response<http::Body>, HttpError> {
        let app = &self.0;
        // The TLS layer lets configured operators only; refuse rather than
        // assume when there is no certificate name.
        let operator = call.conn.client_cn.clone().ok_or_else(|| {
            HttpError::new(StatusCode::UNAUTHORIZED, "client certificate required")
        })?;
        let query = Query::parse(call.req.uri().query());
        let param = call.params.first().map(String::as_str).unwrap_or_default();
        let req = call.req;
        let v = match call.endpoint {
            Endpoint::ListProfiles => list_profiles(app, operator, &query)?,
            Endpoint::AddProfiles => add_profiles(app, &operator, req).await?,
            Endpoint::GetProfile => get_profile(app, &operator, &iccid_param(param)?)?,
            Endpoint::ExportPackage => export_package(app, &operator, param, &query)?,
            Endpoint::SetExpiry => set_expiry(app, &operator, &iccid_param(param)?, req).await?,
            Endpoint::Outbox => {
                let items: Vec<_> = app
                    .store
                    .outbox()?
                    .iter()
                    .filter(|o| o.operator == operator)
                    .map(outbox_view)
                    .collect();
                json!({"items": items})
            }
            Endpoint::PlaceOrder => {
                let v = json_body(app, req).await?;
                let c = crate::mobileplans::Checkout::from_json(&v, crate::time::now())?;
                let (order, created) = crate::mobileplans::checkout(app, &operator, &c).await?;
                let capability = app.mobile_plans.capability(&order);
                let answer = crate::mobileplans::decide(app, order)?;
                json!({"created": created, "decision": answer.to_json(), "capability": capability})
            }
            Endpoint::FindOrder => find_order(app, &operator, &query)?,
            Endpoint::GetOrder => {
                let order = own_order(app, &operator, param)?;
                let capability = app.mobile_plans.capability(&order);
                json!({"decision": crate::mobileplans::decide(app, order)?.to_json(), "capability": capability})
            }
            Endpoint::ConfirmOrder => {
                let order = own_order(app, &operator, param)?;
                let answer =
                    crate::mobileplans::confirm(app, &order.transaction_id, &operator).await?;
                json!({"decision": answer.to_json()})
            }
            Endpoint::RegisterSim => {
                register_sim(app, &operator, &iccid_param(param)?, req).await?
            }
            Endpoint::CreditBalance => {
                credit_balance(app, &operator, &iccid_param(param)?, req).await?
            }
            Endpoint::Balance => {
                let iccid = iccid_param(param)?;
                let rec = app
                    .store
                    .balance(&iccid)?
                    .filter(|r| r.operator == operator)
                    .ok_or_else(|| HttpError::not_found(format!("no balance for {iccid}")))?;
                json!({"balance": balance_view(&rec, crate::time::now())})
            }
        };
        Ok(http::json_response(StatusCode::OK, &v))
    }
}

/// A query parameter, percent-decoded; one that does not decode is a 400.
fn query_param<'a>(query: &'a Query, name: &str) -> Result<Option<&'a str>, HttpError> {
    query
        .get(name)
        .transpose()
        .map_err(|()| HttpError::bad(format!("{name} is not valid percent-encoded UTF-8")))
}

fn iccid_param(s: &str) -> Result<Iccid, HttpError> {
    Iccid::parse(s)
        .ok_or_else(|| HttpError::bad(format!("{} is not an ICCID", crate::error::quote(s))))
}

async fn json_body(app: &App, req: Request<Incoming>) -> Result<Value, HttpError> {
    let body = http::read_body(req.into_body(), app.config.max_body_bytes.max(16 << 20)).await?;
    serde_json::from_slice(&body).map_err(|e| HttpError::bad(format!("malformed JSON: {e}")))
}

/// The operator's own profile; another operator's answers as unknown.
fn own_profile(app: &App, operator: &str, iccid: &Iccid) -> Result<ProfileRecord, HttpError> {
    app.store
        .get(iccid)?
        .filter(|r| r.operator == operator)
        .ok_or_else(|| HttpError::not_found(format!("no profile {iccid}")))
}

/// The operator's own Mobile Plans order by its (percent-encoded)
/// transactionId; another operator's answers as unknown.
fn own_order(
    app: &App,
    operator: &str,
    txid: &str,
) -> Result<crate::store::mobileplans::MobilePlansOrder, HttpError> {
    let txid = crate::http::query::percent_decode(txid, false)
        .ok_or_else(|| HttpError::bad("the transactionId is not valid percent-encoded UTF-8"))?;
    let order = crate::mobileplans::find(app, &crate::mobileplans::Lookup::Transaction(txid))?;
    if order.operator != operator {
        return Err(HttpError::not_found("no such Mobile Plans order"));
    }
    Ok(order)
}

/// Refuses a balance call on another operator's ICCID as for an unknown
/// one: no probing of another operator's inventory.
fn not_anothers(app: &App, operator: &str, iccid: &Iccid) -> Result<(), HttpError> {
    if app
        .store
        .get(iccid)?
        .is_some_and(|p| p.operator != operator)
    {
        return Err(crate::store::unknown_iccid(iccid).into());
    }
    Ok(())
}

fn list_profiles(app: &App, operator: String, query: &Query) -> Result<Value, HttpError> {
    let state =
        match query_param(query, "state")? {
            Some(s) => Some(State::parse(s).ok_or_else(|| {
                HttpError::bad(format!("unknown state {}", crate::error::quote(s)))
            })?),
            None => None,
        };
    let limit = match query_param(query, "limit")? {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| HttpError::bad("limit must be a number"))?,
        ),
        None => Some(1000),
    };
    let filter = ListFilter {
        operator: Some(operator),
        state,
        profile_type: query_param(query, "profileType")?.map(str::to_owned),
        limit,
    };
    let list = app.store.list(&filter)?;
    Ok(json!({"profiles": list.iter().map(profile_view).collect::<Vec<_>>()}))
}

async fn add_profiles(
    app: &App,
    operator: &str,
    req: Request<Incoming>,
) -> Result<Value, HttpError> {
    let v = json_body(app, req).await?;
    let items = v
        .get("profiles")
        .and_then(Value::as_array)
        .ok_or_else(|| HttpError::bad("profiles must be an array"))?;
    let mut new = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let n = i + 1;
        let field = |name: &str| {
            it.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| HttpError::bad(format!("item {n}: {name} is missing")))
        };
        let iccid = field("iccid")?;
        let iccid = Iccid::parse(iccid).ok_or_else(|| {
            HttpError::bad(format!(
                "item {n}: {} is not an ICCID",
                crate::error::quote(iccid)
            ))
        })?;
        let profile_type = field("profileType")?;
        let package = match it.get("package").and_then(Value::as_str) {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| HttpError::bad(format!("item {n}: package is not base64: {e}")))?,
            None => placeholder_package(&iccid),
        };
        new.push(NewProfile::protected(
            iccid,
            profile_type.to_owned(),
            operator.to_owned(),
            &package,
            &app.keyring(),
        )?);
    }
    let added = app.store.add_profiles(&new, operator, crate::time::now())?;
    app.store.sync().await?;
    Ok(json!({"added": added}))
}

fn get_profile(app: &App, operator: &str, iccid: &Iccid) -> Result<Value, HttpError> {
    let rec = own_profile(app, operator, iccid)?;
    let history = app.store.history(iccid)?;
    let mut profile = profile_view(&rec);
    // The delivered package kept for a retry in a later session.
    profile["boundPackageKeptUntil"] = json!(app
        .store
        .kept_package(iccid, crate::time::now())?
        .map(|k| crate::time::datetime(k.expires_at)));
    Ok(json!({"profile": profile, "history": history.iter().map(history_view).collect::<Vec<_>>()}))
}

/// The unprotected package, for operators debugging their own test
/// inventory: only with an explicit `unprotected=true`.
fn export_package(
    app: &App,
    operator: &str,
    iccid: &str,
    query: &Query,
) -> Result<Value, HttpError> {
    if query_param(query, "unprotected")? != Some("true") {
        return Err(HttpError::bad(
            "the package is only exported with unprotected=true",
        ));
    }
    let iccid = iccid_param(iccid)?;
    let rec = own_profile(app, operator, &iccid)?;
    let stored = app
        .store
        .package(&rec)?
        .ok_or_else(|| Error::internal("profile package missing"))?;
    let upp = crate::profile::stored::StoredPackage::from_bytes(&stored)
        .and_then(|p| p.unprotected(&app.keyring(), &app.templates, iccid.as_str()))
        .map_err(|e| Error::internal(e.to_string()))?;
    tracing::warn!(%iccid, %operator, "unprotected profile package exported");
    Ok(
        json!({"iccid": rec.iccid, "package": base64::engine::general_purpose::STANDARD.encode(upp.as_slice())}),
    )
}

async fn set_expiry(
    app: &App,
    operator: &str,
    iccid: &Iccid,
    req: Request<Incoming>,
) -> Result<Value, HttpError> {
    let v = json_body(app, req).await?;
    let at = v
        .get("expiresAt")
        .and_then(Value::as_str)
        .ok_or_else(|| HttpError::bad("expiresAt is missing"))?;
    let expires_at = crate::time::parse_datetime(at).ok_or_else(|| {
        HttpError::bad(format!(
            "expiresAt {} is not an RFC 3339 date-time",
            crate::error::quote(at)
        ))
    })?;
    let cmd = Command::SetExpiry {
        operator: operator.to_owned(),
        iccid: iccid.clone(),
        expires_at,
    };
    let ctx = Ctx {
        caller: operator,
        now: crate::time::now(),
        idem: None,
    };
    let applied = app.store.apply(&cmd, &ctx)?;
    app.store.sync().await?;
    Ok(json!({"profile": profile_view(&applied.record)}))
}

fn find_order(app: &App, operator: &str, query: &Query) -> Result<Value, HttpError> {
    use crate::mobileplans::Lookup;
    let lookup = match (query_param(query, "iccid")?, query_param(query, "eid")?) {
        (Some(i), None) => Lookup::Iccid(iccid_param(i)?),
        (None, Some(e)) => Lookup::Eid(crate::ids::Eid::parse(e).ok_or_else(|| {
            HttpError::bad(format!(
                "{} is not an EID (32 digits)",
                crate::error::quote(e)
            ))
        })?),
        _ => return Err(HttpError::bad("give one of iccid and eid")),
    };
    let order = crate::mobileplans::find_for_operator(app, &lookup, operator)?;
    let capability = app.mobile_plans.capability(&order);
    Ok(
        json!({"decision": crate::mobileplans::decide(app, order)?.to_json(), "capability": capability}),
    )
}

async fn register_sim(
    app: &App,
    operator: &str,
    iccid: &Iccid,
    req: Request<Incoming>,
) -> Result<Value, HttpError> {
    if !iccid.luhn_ok() {
        return Err(HttpError::bad(format!(
            "ICCID {iccid} has a bad Luhn check digit"
        )));
    }
    let v = json_body(app, req).await?;
    let not_supported = match v.get("notSupported") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(HttpError::bad("notSupported must be a boolean")),
    };
    not_anothers(app, operator, iccid)?;
    let now = crate::time::now();
    let rec = app
        .store
        .register_sim(operator, iccid, not_supported, now)?;
    app.store.sync().await?;
    Ok(json!({"balance": balance_view(&rec, now)}))
}

async fn credit_balance(
    app: &App,
    operator: &str,
    iccid: &Iccid,
    req: Request<Incoming>,
) -> Result<Value, HttpError> {
    let v = json_body(app, req).await?;
    let m = v
        .as_object()
        .ok_or_else(|| HttpError::bad("the body must be a JSON object"))?;
    let (kb, secs, balance_type, locations) = crate::mobileplans::credit_spec(m)?
        .ok_or_else(|| HttpError::bad_parameter("dataInMB", "dataInMB is missing"))?;
    let plan_name = m
        .get("planName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let id = match m.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => Some(s.clone()),
        Some(_) => {
            return Err(HttpError::bad_parameter(
                "id",
                "id must be a string of 1 to 64 characters",
            ))
        }
    };
    not_anothers(app, operator, iccid)?;
    let now = crate::time::now();
    let credit = crate::store::balance::Credit {
        id,
        balance_type,
        data_kb: kb,
        expires_at: now.saturating_add(secs),
        locations,
        plan_name,
    };
    let (rec, id) = app.store.credit_balance(operator, iccid, &credit, now)?;
    app.store.sync().await?;
    Ok(json!({"credited": id, "balance": balance_view(&rec, now)}))
}

/// The package stored until real profile packages are generated or imported:
/// a DER OCTET STRING naming the ICCID, so it is recognisable in dumps.
pub fn placeholder_package(iccid: &Iccid) -> Vec<u8> {
    let text = format!("smdpplus placeholder package for ICCID {iccid}");
    let mut out = vec![0x04, text.len() as u8];
    out.extend_from_slice(text.as_bytes());
    out
}
