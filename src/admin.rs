//! The operator admin API on the ES2+ listener (mutual TLS, operator-scoped).
//! Not part of SGP.22: inventory, order expiry, profile state and history,
//! and the notification outbox. Plain HTTP status codes with a JSON
//! `{"error": ..., "code": ...}` body.
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
use crate::error::{Blame, Error};
use crate::http::query::Query;
use crate::http::{self, ConnInfo, Outcome};
use crate::ids::Iccid;
use crate::store::lifecycle::State;
use crate::store::{
    Command, Ctx, HistoryEntry, ListFilter, NewProfile, OutboxItem, PointStatus, ProfileRecord,
};
use base64::Engine;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

/// Path prefix of the admin API.
pub const PREFIX: &str = "/smdpplus/admin/v1/";

/// A refused admin call.
struct AdminError(StatusCode, String, Option<String>);

impl From<Error> for AdminError {
    fn from(e: Error) -> AdminError {
        let status = match e.blame {
            Blame::InvalidRequest => StatusCode::BAD_REQUEST,
            Blame::NotAllowed => StatusCode::FORBIDDEN,
            Blame::Conditions if e.code.reason == "3.9" => StatusCode::NOT_FOUND,
            Blame::Conditions => StatusCode::CONFLICT,
            Blame::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Blame::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        if e.is_ours() {
            // The detail (an OS error, say) goes to the log only.
            tracing::error!(error = %e.message, "admin call failed");
        }
        AdminError(
            status,
            e.public_message().to_owned(),
            Some(e.code.to_string()),
        )
    }
}

impl From<crate::mobileplans::MpError> for AdminError {
    fn from(e: crate::mobileplans::MpError) -> AdminError {
        use crate::mobileplans::MpError;
        let message = match &e {
            MpError::BadRequest { parameter, message } if !parameter.is_empty() => {
                format!("{parameter}: {message}")
            }
            MpError::BadRequest { message, .. }
            | MpError::Forbidden(message)
            | MpError::NotFound(message)
            | MpError::Conflict { message, .. } => message.clone(),
            MpError::Internal(_) | MpError::Unavailable(_) => e.body()["error"]
                .as_str()
                .unwrap_or("internal error")
                .to_owned(),
        };
        if let MpError::Internal(m) | MpError::Unavailable(m) = &e {
            tracing::error!(error = %m, "admin call failed");
        }
        AdminError(e.status(), message, None)
    }
}

fn bad(msg: impl Into<String>) -> AdminError {
    AdminError(StatusCode::BAD_REQUEST, msg.into(), None)
}

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

/// Handles `/smdpplus/admin/v1/*`.
pub async fn handle(app: App, req: Request<Incoming>, conn: &ConnInfo) -> Outcome {
    let function = "admin";
    let result = route(&app, req, conn).await;
    let (status, body, code) = match result {
        Ok(v) => (StatusCode::OK, v, String::new()),
        Err(AdminError(s, msg, code)) => (
            s,
            json!({"error": msg, "code": code}),
            code.unwrap_or_default(),
        ),
    };
    let label = if status.is_success() { "ok" } else { "error" };
    Outcome {
        response: http::json_response(status, &body),
        function,
        status: label,
        code,
    }
}

/// A query parameter, percent-decoded; one that does not decode is a 400.
fn query_param<'a>(query: &'a Query, name: &str) -> Result<Option<&'a str>, AdminError> {
    query
        .get(name)
        .transpose()
        .map_err(|()| bad(format!("{name} is not valid percent-encoded UTF-8")))
}

fn iccid_param(s: &str) -> Result<Iccid, AdminError> {
    Iccid::parse(s).ok_or_else(|| bad(format!("{} is not an ICCID", crate::error::quote(s))))
}

async fn json_body(app: &App, req: Request<Incoming>) -> Result<Value, AdminError> {
    let body = http::read_body(req.into_body(), app.config.max_body_bytes.max(16 << 20)).await?;
    serde_json::from_slice(&body).map_err(|e| bad(format!("malformed JSON: {e}")))
}

async fn route(app: &App, req: Request<Incoming>, conn: &ConnInfo) -> Result<Value, AdminError> {
    let operator = conn.client_cn.clone().ok_or_else(|| {
        AdminError(
            StatusCode::UNAUTHORIZED,
            "client certificate required".into(),
            None,
        )
    })?;
    let path = req
        .uri()
        .path()
        .strip_prefix(PREFIX)
        .unwrap_or("")
        .to_owned();
    let query = Query::parse(req.uri().query());
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["profiles"]) => {
            let state = match query_param(&query, "state")? {
                Some(s) => Some(
                    State::parse(s)
                        .ok_or_else(|| bad(format!("unknown state {}", crate::error::quote(s))))?,
                ),
                None => None,
            };
            let limit = match query_param(&query, "limit")? {
                Some(l) => Some(
                    l.parse::<usize>()
                        .map_err(|_| bad("limit must be a number"))?,
                ),
                None => Some(1000),
            };
            let filter = ListFilter {
                operator: Some(operator),
                state,
                profile_type: query_param(&query, "profileType")?.map(str::to_owned),
                limit,
            };
            let list = app.store.list(&filter)?;
            Ok(json!({"profiles": list.iter().map(profile_view).collect::<Vec<_>>()}))
        }
        (Method::POST, ["profiles"]) => {
            let v = json_body(app, req).await?;
            let items = v
                .get("profiles")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("profiles must be an array"))?;
            let mut new = Vec::with_capacity(items.len());
            for (i, it) in items.iter().enumerate() {
                let n = i + 1;
                let iccid = it
                    .get("iccid")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("item {n}: iccid is missing")))?;
                let iccid = Iccid::parse(iccid).ok_or_else(|| {
                    bad(format!(
                        "item {n}: {} is not an ICCID",
                        crate::error::quote(iccid)
                    ))
                })?;
                let profile_type = it
                    .get("profileType")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("item {n}: profileType is missing")))?;
                let package = match it.get("package").and_then(Value::as_str) {
                    Some(b64) => base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|e| bad(format!("item {n}: package is not base64: {e}")))?,
                    None => placeholder_package(&iccid),
                };
                new.push(NewProfile::protected(
                    iccid,
                    profile_type.to_owned(),
                    operator.clone(),
                    &package,
                    &app.keyring(),
                )?);
            }
            let added = app
                .store
                .add_profiles(&new, &operator, crate::time::now())?;
            app.store.sync().await?;
            Ok(json!({"added": added}))
        }
        (Method::GET, ["profiles", iccid]) => {
            let iccid = iccid_param(iccid)?;
            let rec = app.store.get(&iccid)?.filter(|r| r.operator == operator);
            let rec = rec.ok_or_else(|| {
                AdminError(StatusCode::NOT_FOUND, format!("no profile {iccid}"), None)
            })?;
            let history = app.store.history(&iccid)?;
            Ok(
                json!({"profile": profile_view(&rec), "history": history.iter().map(history_view).collect::<Vec<_>>()}),
            )
        }
        (Method::GET, ["profiles", iccid, "package"]) => {
            // The unprotected package, for operators debugging their own
            // test inventory: only with an explicit `unprotected=true`.
            if query_param(&query, "unprotected")? != Some("true") {
                return Err(bad("the package is only exported with unprotected=true"));
            }
            let iccid = iccid_param(iccid)?;
            let rec = app.store.get(&iccid)?.filter(|r| r.operator == operator);
            let rec = rec.ok_or_else(|| {
                AdminError(StatusCode::NOT_FOUND, format!("no profile {iccid}"), None)
            })?;
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
        (Method::PUT, ["profiles", iccid, "expiry"]) => {
            let iccid = iccid_param(iccid)?;
            let v = json_body(app, req).await?;
            let at = v
                .get("expiresAt")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("expiresAt is missing"))?;
            let expires_at = crate::time::parse_datetime(at).ok_or_else(|| {
                bad(format!(
                    "expiresAt {} is not an RFC 3339 date-time",
                    crate::error::quote(at)
                ))
            })?;
            let cmd = Command::SetExpiry {
                operator: operator.clone(),
                iccid,
                expires_at,
            };
            let applied = app.store.apply(
                &cmd,
                &Ctx {
                    caller: &operator,
                    now: crate::time::now(),
                    idem: None,
                },
            )?;
            app.store.sync().await?;
            Ok(json!({"profile": profile_view(&applied.record)}))
        }
        (Method::POST, ["mobileplans", "orders"]) => {
            let v = json_body(app, req).await?;
            let c = crate::mobileplans::Checkout::from_json(&v, crate::time::now())?;
            let (order, created) = crate::mobileplans::checkout(app, &operator, &c).await?;
            let capability = app.mobile_plans.capability(&order);
            let answer = crate::mobileplans::decide(app, order)?;
            Ok(json!({"created": created, "decision": answer.to_json(), "capability": capability}))
        }
        (Method::GET, ["mobileplans", "orders"]) => {
            use crate::mobileplans::Lookup;
            let lookup = match (query_param(&query, "iccid")?, query_param(&query, "eid")?) {
                (Some(i), None) => Lookup::Iccid(iccid_param(i)?),
                (None, Some(e)) => Lookup::Eid(
                    crate::ids::Eid::parse(e)
                        .ok_or_else(|| bad(format!("{e:?} is not an EID (32 digits)")))?,
                ),
                _ => return Err(bad("give one of iccid and eid")),
            };
            let order = crate::mobileplans::find_for_operator(app, &lookup, &operator)?;
            let capability = app.mobile_plans.capability(&order);
            Ok(
                json!({"decision": crate::mobileplans::decide(app, order)?.to_json(), "capability": capability}),
            )
        }
        (Method::GET, ["mobileplans", "orders", txid]) => {
            let txid = crate::http::query::percent_decode(txid, false)
                .ok_or_else(|| bad("the transactionId is not valid percent-encoded UTF-8"))?;
            let lookup = crate::mobileplans::Lookup::Transaction(txid);
            let order = crate::mobileplans::find(app, &lookup)?;
            if order.operator != operator {
                return Err(AdminError(
                    StatusCode::NOT_FOUND,
                    "no such Mobile Plans order".into(),
                    None,
                ));
            }
            let capability = app.mobile_plans.capability(&order);
            Ok(
                json!({"decision": crate::mobileplans::decide(app, order)?.to_json(), "capability": capability}),
            )
        }
        (Method::POST, ["mobileplans", "orders", txid, "confirm"]) => {
            let txid = crate::http::query::percent_decode(txid, false)
                .ok_or_else(|| bad("the transactionId is not valid percent-encoded UTF-8"))?;
            let order =
                crate::mobileplans::find(app, &crate::mobileplans::Lookup::Transaction(txid))?;
            if order.operator != operator {
                return Err(AdminError(
                    StatusCode::NOT_FOUND,
                    "no such Mobile Plans order".into(),
                    None,
                ));
            }
            let answer = crate::mobileplans::confirm(app, &order.transaction_id, &operator).await?;
            Ok(json!({"decision": answer.to_json()}))
        }
        (Method::PUT, ["balances", iccid]) => {
            let iccid = iccid_param(iccid)?;
            if !iccid.luhn_ok() {
                return Err(bad(format!("ICCID {iccid} has a bad Luhn check digit")));
            }
            let v = json_body(app, req).await?;
            let not_supported = match v.get("notSupported") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(bad("notSupported must be a boolean")),
            };
            if app
                .store
                .get(&iccid)?
                .is_some_and(|p| p.operator != operator)
            {
                // As for an unknown ICCID: no probing of another
                // operator's inventory.
                return Err(crate::store::unknown_iccid(&iccid).into());
            }
            let now = crate::time::now();
            let rec = app
                .store
                .register_sim(&operator, &iccid, not_supported, now)?;
            app.store.sync().await?;
            Ok(json!({"balance": balance_view(&rec, now)}))
        }
        (Method::POST, ["balances", iccid, "credit"]) => {
            let iccid = iccid_param(iccid)?;
            let v = json_body(app, req).await?;
            let m = v
                .as_object()
                .ok_or_else(|| bad("the body must be a JSON object"))?;
            let (kb, secs, balance_type, locations) = crate::mobileplans::credit_spec(m)?
                .ok_or_else(|| bad("dataInMB: dataInMB is missing"))?;
            let plan_name = m
                .get("planName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let id = match m.get("id") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => Some(s.clone()),
                Some(_) => return Err(bad("id must be a string of 1 to 64 characters")),
            };
            if app
                .store
                .get(&iccid)?
                .is_some_and(|p| p.operator != operator)
            {
                // As for an unknown ICCID: no probing of another
                // operator's inventory.
                return Err(crate::store::unknown_iccid(&iccid).into());
            }
            let now = crate::time::now();
            let credit = crate::store::balance::Credit {
                id,
                balance_type,
                data_kb: kb,
                expires_at: now.saturating_add(secs),
                locations,
                plan_name,
            };
            let (rec, id) = app.store.credit_balance(&operator, &iccid, &credit, now)?;
            app.store.sync().await?;
            Ok(json!({"credited": id, "balance": balance_view(&rec, now)}))
        }
        (Method::GET, ["balances", iccid]) => {
            let iccid = iccid_param(iccid)?;
            let rec = app
                .store
                .balance(&iccid)?
                .filter(|r| r.operator == operator);
            let rec = rec.ok_or_else(|| {
                AdminError(
                    StatusCode::NOT_FOUND,
                    format!("no balance for {iccid}"),
                    None,
                )
            })?;
            Ok(json!({"balance": balance_view(&rec, crate::time::now())}))
        }
        (Method::GET, ["outbox"]) => {
            let items: Vec<_> = app
                .store
                .outbox()?
                .iter()
                .filter(|o| o.operator == operator)
                .map(outbox_view)
                .collect();
            Ok(json!({"items": items}))
        }
        (_, _) => Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("no admin endpoint {} {}", req.method(), req.uri().path()),
            None,
        )),
    }
}

/// The package stored until real profile packages are generated or imported:
/// a DER OCTET STRING naming the ICCID, so it is recognisable in dumps.
pub fn placeholder_package(iccid: &Iccid) -> Vec<u8> {
    let text = format!("smdpplus placeholder package for ICCID {iccid}");
    let mut out = vec![0x04, text.len() as u8];
    out.extend_from_slice(text.as_bytes());
    out
}
