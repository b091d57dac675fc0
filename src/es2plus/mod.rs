//! ES2+ (Operator -> SM-DP+), SGP.22 §5.3 and the JSON binding §6.5.2.1-6.5.2.5.
//!
//! Each function is a plain request struct (the CLI sends the same structs)
//! with a `parse` from the JSON body and a conversion into a store
//! [`Command`]. [`handle`] is the HTTP handler: headers, envelope,
//! authorisation, idempotency, then the store, then durability, then the
//! answer.

pub mod notify;

use crate::app::App;
use crate::error::{codes, Error};
use crate::http::fields::Fields;
use crate::http::{self, ConnInfo, Outcome};
use crate::ids::{matching_id_is_valid, Eid, Iccid};
use crate::store::{Command, Ctx, FinalStatus, Idem, ProfileRecord};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The ES2+ functions the SM-DP+ provides (§6.5.2, table 57).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    /// ES2+.DownloadOrder (§5.3.1).
    DownloadOrder,
    /// ES2+.ConfirmOrder (§5.3.2).
    ConfirmOrder,
    /// ES2+.CancelOrder (§5.3.3).
    CancelOrder,
    /// ES2+.ReleaseProfile (§5.3.4).
    ReleaseProfile,
}

impl Function {
    /// Every ES2+ function the SM-DP+ provides, in the order of table 57.
    pub const ALL: [Function; 4] = [
        Function::DownloadOrder,
        Function::ConfirmOrder,
        Function::CancelOrder,
        Function::ReleaseProfile,
    ];

    /// The path segment after `/gsma/rsp2/es2plus/`.
    pub fn name(self) -> &'static str {
        match self {
            Function::DownloadOrder => "downloadOrder",
            Function::ConfirmOrder => "confirmOrder",
            Function::CancelOrder => "cancelOrder",
            Function::ReleaseProfile => "releaseProfile",
        }
    }

    /// Looks a function up by its path segment.
    pub fn from_name(s: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.name() == s)
    }

    /// The full path.
    pub fn path(self) -> String {
        format!("/gsma/rsp2/es2plus/{}", self.name())
    }
}

/// The request header every ES2+ call carries (§6.5.1.3).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestHeader {
    /// Identifies the operator.
    pub function_requester_identifier: String,
    /// Identifies the call; a re-send with the same value and body is answered from cache.
    pub function_call_identifier: String,
}

/// ES2+.DownloadOrder input (table 22).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DownloadOrder {
    /// EID (optional).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eid: Option<String>,
    /// ICCID (conditional).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iccid: Option<String>,
    /// Profile type (conditional).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_type: Option<String>,
}

/// ES2+.ConfirmOrder input (table 25).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmOrder {
    /// ICCID.
    pub iccid: String,
    /// EID (optional).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eid: Option<String>,
    /// MatchingID chosen by the operator (optional).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matching_id: Option<String>,
    /// Confirmation code (optional).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmation_code: Option<String>,
    /// SM-DS address (optional).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smds_address: Option<String>,
    /// Release immediately.
    pub release_flag: bool,
}

/// ES2+.CancelOrder input (table 28).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelOrder {
    /// ICCID.
    pub iccid: String,
    /// EID (conditional: required when the order has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eid: Option<String>,
    /// MatchingID (conditional: required when the order has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matching_id: Option<String>,
    /// `Available` or `Unavailable` (table 29).
    pub final_profile_status_indicator: String,
}

/// ES2+.ReleaseProfile input (table 31).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseProfile {
    /// ICCID.
    pub iccid: String,
}

/// Parses an EID from the wire. A wrong check digit is logged and counted,
/// never refused (test eUICCs use such EIDs).
fn wire_eid(app: &App, s: Option<&str>) -> Result<Option<Eid>, Error> {
    let Some(s) = s else { return Ok(None) };
    let eid = Eid::parse(s).ok_or_else(|| {
        Error::invalid(
            codes::EID_INVALID,
            format!("eid {} is not 32 digits", crate::error::quote(s)),
        )
    })?;
    if !eid.check_digits_ok() {
        app.metrics
            .check_digit_mismatches
            .with_label_values(&["eid"])
            .inc();
        tracing::warn!(eid = %eid, "EID check digits are wrong; accepted");
    }
    Ok(Some(eid))
}

fn wire_iccid(app: &App, s: &str) -> Result<Iccid, Error> {
    let iccid = Iccid::parse(s).ok_or_else(|| {
        Error::invalid(
            codes::ICCID_INVALID,
            format!("iccid {} is not 19-20 digits", crate::error::quote(s)),
        )
    })?;
    if !iccid.luhn_ok() {
        app.metrics
            .check_digit_mismatches
            .with_label_values(&["iccid"])
            .inc();
        tracing::warn!(iccid = %iccid, "ICCID Luhn digit is wrong; accepted");
    }
    Ok(iccid)
}

/// The two hashes of a confirmation code we accept later: SHA-256 of its
/// ASCII text and, when the text is hex, of its decoded bytes (§5.3.2;
/// LPAs differ in which one they hash).
pub fn confirmation_code_hashes(code: &str) -> Vec<String> {
    let mut out = vec![hex::encode(Sha256::digest(code.as_bytes()))];
    if let Ok(bytes) = hex::decode(code) {
        let h = hex::encode(Sha256::digest(&bytes));
        if !out.contains(&h) {
            out.push(h);
        }
    }
    out
}

/// Builds the store command for a function call.
fn command(
    app: &App,
    f: Function,
    body: &Map<String, Value>,
    operator: &str,
) -> Result<Command, Error> {
    let b = Fields(body);
    let operator = operator.to_owned();
    Ok(match f {
        Function::DownloadOrder => {
            let eid = wire_eid(app, b.opt_str("eid")?)?;
            let iccid = b
                .opt_str("iccid")?
                .map(|s| wire_iccid(app, s))
                .transpose()?;
            let profile_type = b.opt_str("profileType")?.map(str::to_owned);
            if iccid.is_none() && profile_type.is_none() {
                return Err(Error::invalid(
                    codes::FORMAT_CONDITIONAL_MISSING,
                    "one of iccid and profileType is required",
                ));
            }
            Command::DownloadOrder {
                operator,
                eid,
                iccid,
                profile_type,
            }
        }
        Function::ConfirmOrder => {
            let iccid = wire_iccid(app, b.req_str("iccid")?)?;
            let eid = wire_eid(app, b.opt_str("eid")?)?;
            let release = b.req_bool("releaseFlag")?;
            let matching_id = b.opt_str("matchingId")?.map(str::to_owned);
            if let Some(m) = &matching_id {
                if !matching_id_is_valid(m) {
                    return Err(Error::invalid(
                        codes::MATCHING_ID_INVALID,
                        "matchingId may only use 0-9, A-Z and '-'",
                    ));
                }
            }
            let cc_hashes = b
                .opt_str("confirmationCode")?
                .map(confirmation_code_hashes)
                .unwrap_or_default();
            if let Some(smds) = b.opt_str("smdsAddress")? {
                // ES12 event registration is not part of this deployment: say so
                // with the spec's code rather than pretend it was registered.
                return Err(Error::refused(
                    codes::SMDS_INACCESSIBLE,
                    format!(
                        "SM-DS {} is not reachable: no SM-DS (ES12) is configured",
                        crate::error::quote(smds)
                    ),
                ));
            }
            Command::ConfirmOrder {
                operator,
                iccid,
                eid,
                matching_id,
                cc_hashes,
                smds_address: None,
                release,
            }
        }
        Function::CancelOrder => {
            let iccid = wire_iccid(app, b.req_str("iccid")?)?;
            let eid = wire_eid(app, b.opt_str("eid")?)?;
            let matching_id = b.opt_str("matchingId")?.map(str::to_owned);
            let final_status = match b.req_str("finalProfileStatusIndicator")? {
                "Available" => FinalStatus::Available,
                "Unavailable" => FinalStatus::Unavailable,
                other => {
                    return Err(Error::invalid(
                        codes::FORMAT_INVALID,
                        format!(
                            "finalProfileStatusIndicator {} is neither Available nor Unavailable",
                            crate::error::quote(other)
                        ),
                    ))
                }
            };
            Command::CancelOrder {
                operator,
                iccid,
                eid,
                matching_id,
                final_status,
            }
        }
        Function::ReleaseProfile => Command::ReleaseProfile {
            operator,
            iccid: wire_iccid(app, b.req_str("iccid")?)?,
        },
    })
}

/// The success body of a function (tables 23, 26; cancel and release have none).
fn success_body(f: Function, smdp_address: &str, r: &ProfileRecord) -> Map<String, Value> {
    let mut m = Map::new();
    match f {
        Function::DownloadOrder => {
            http::trace::record(http::trace::Field::Iccid, &r.iccid);
            m.insert("iccid".into(), Value::String(r.iccid.clone()));
        }
        Function::ConfirmOrder => {
            if let Some(e) = &r.eid {
                m.insert("eid".into(), Value::String(e.clone()));
            }
            m.insert(
                "matchingId".into(),
                Value::String(r.matching_id.clone().unwrap_or_default()),
            );
            m.insert("smdpAddress".into(), Value::String(smdp_address.to_owned()));
        }
        Function::CancelOrder | Function::ReleaseProfile => {}
    }
    m
}

/// The ES2+ listener's handler for `/gsma/rsp2/es2plus/*`.
pub async fn handle(app: App, req: Request<Incoming>, conn: &ConnInfo) -> Outcome {
    let limit = app.config.max_body_bytes;
    let call = match http::gsma_request(
        "ES2+",
        req,
        "/gsma/rsp2/es2plus/",
        Function::from_name,
        Function::name,
        limit,
    )
    .await
    {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let name = call.function.name();
    match apply(&app, call, conn).await {
        Ok(bytes) => Outcome {
            response: http::gsma_bytes(StatusCode::OK, bytes),
            function: name,
            status: "Executed-Success",
            code: String::new(),
        },
        Err(e) => http::gsma_failed("ES2+", name, StatusCode::OK, e),
    }
}

async fn apply(
    app: &App,
    call: http::GsmaRequest<Function>,
    conn: &ConnInfo,
) -> Result<Vec<u8>, Error> {
    let (f, body, obj) = (call.function, call.body, &call.json);
    let header = match obj.get("header") {
        Some(Value::Object(h)) => h,
        Some(_) => {
            return Err(Error::invalid(
                codes::FORMAT_INVALID,
                "header must be an object",
            ))
        }
        None => return Err(Error::invalid(codes::FORMAT_MISSING, "header is missing")),
    };
    let h = Fields(header);
    let requester = h.req_str("functionRequesterIdentifier")?;
    let call_id = h.req_str("functionCallIdentifier")?;
    http::trace::record(http::trace::Field::FunctionCallId, call_id);
    if let Some(Value::String(i)) = obj.get("iccid") {
        http::trace::record(http::trace::Field::Iccid, i);
    }
    // The TLS layer only lets configured operators in, so a missing CN
    // cannot happen on this listener; refuse rather than assume.
    let operator = conn
        .client_cn
        .as_deref()
        .ok_or_else(|| Error::not_allowed(codes::REQUESTER_NOT_ALLOWED, "no client certificate"))?;
    if requester != operator {
        return Err(Error::not_allowed(
            codes::REQUESTER_NOT_ALLOWED,
            format!(
                "functionRequesterIdentifier {} does not match the client certificate",
                crate::error::quote(requester)
            ),
        ));
    }

    let mut hasher = Sha256::new();
    for part in [
        f.name().as_bytes(),
        requester.as_bytes(),
        call_id.as_bytes(),
        &body,
    ] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let key: [u8; 32] = hasher.finalize().into();
    if let Some(previous) = app.store.idempotent_response(&key)? {
        tracing::info!(
            function = f.name(),
            call_id,
            "re-sent request answered from the idempotency record"
        );
        // The original call may still be waiting for its flush.
        app.store.sync().await?;
        return Ok(previous);
    }

    let cmd = command(app, f, obj, operator)?;
    let smdp_address = app.config.smdp_address.clone();
    let render = move |r: &ProfileRecord| {
        let mut m = Map::new();
        m.insert(
            "header".into(),
            serde_json::json!({"functionExecutionStatus": http::execution_status(None)}),
        );
        m.extend(success_body(f, &smdp_address, r));
        serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
    };
    let ctx = Ctx {
        caller: operator,
        now: crate::time::now(),
        idem: Some(Idem {
            key,
            render: &render,
        }),
    };
    let applied = app.store.apply(&cmd, &ctx)?;
    // Durable before acknowledged.
    app.store.sync().await?;
    if applied.changed {
        app.outbox_wake.notify_one();
    }
    Ok(render(&applied.record))
}

/// Builds a full request message: header plus body (what the CLI sends).
pub fn request_message<T: Serialize>(requester: &str, call_id: &str, body: &T) -> Vec<u8> {
    let mut m = match serde_json::to_value(body) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let header = RequestHeader {
        function_requester_identifier: requester.into(),
        function_call_identifier: call_id.into(),
    };
    m.insert(
        "header".into(),
        serde_json::to_value(header).unwrap_or(Value::Null),
    );
    serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cc_hashes_cover_ascii_and_hex() {
        let h = confirmation_code_hashes("12345678");
        assert_eq!(h.len(), 2);
        assert_eq!(h[0], hex::encode(Sha256::digest(b"12345678")));
        assert_eq!(h[1], hex::encode(Sha256::digest([0x12, 0x34, 0x56, 0x78])));
        assert_eq!(
            confirmation_code_hashes("abc").len(),
            1,
            "odd-length text is not hex"
        );
    }

    #[test]
    fn request_message_has_header_and_camel_case_fields() {
        let body = ConfirmOrder {
            iccid: "8900000000000000001".into(),
            release_flag: true,
            ..Default::default()
        };
        let v: Value = serde_json::from_slice(&request_message("op", "c1", &body)).expect("json");
        assert_eq!(v["header"]["functionRequesterIdentifier"], "op");
        assert_eq!(v["releaseFlag"], true);
        assert!(v.get("eid").is_none());
    }
}
