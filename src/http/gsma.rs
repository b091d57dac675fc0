//! The GSMA JSON binding shared by ES2+ and ES9+ (SGP.22 §6.2, §6.5.1):
//! the headers every function call carries, the request body, and the
//! response envelope with its `functionExecutionStatus`.

use super::{read_body, Body};
use crate::error::{codes, Error};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Map, Value};

/// The X-Admin-Protocol value we send (SGP.22 §6.2): the highest version we implement.
pub const ADMIN_PROTOCOL: &str = "gsma/rsp/v2.2.0";

/// Checks the headers every GSMA function call carries (SGP.22 §6.2):
/// `X-Admin-Protocol: gsma/rsp/v2.*` and a JSON Content-Type (matched by
/// prefix, so `application/json;charset=UTF-8` is fine).
pub fn check_headers(headers: &hyper::HeaderMap) -> Result<(), Error> {
    let proto = headers
        .get("x-admin-protocol")
        .ok_or_else(|| {
            Error::invalid(codes::VERSION_MISSING, "X-Admin-Protocol header is missing")
        })?
        .to_str()
        .unwrap_or("");
    let version = proto.trim().strip_prefix("gsma/rsp/v").unwrap_or("");
    if !version.starts_with("2.") {
        return Err(Error::invalid(
            codes::VERSION_UNSUPPORTED,
            format!(
                "unsupported X-Admin-Protocol {}: this server speaks gsma/rsp/v2.x",
                crate::error::quote(proto)
            ),
        ));
    }
    let ct = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .trim()
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(Error::invalid(
            codes::FORMAT_INVALID,
            format!(
                "Content-Type must be application/json, got {}",
                crate::error::quote(ct)
            ),
        ));
    }
    Ok(())
}

/// A GSMA function call's body, read after the checks every function
/// shares.
pub struct CallBody {
    /// The body as received (ES2+ idempotency hashes it).
    pub bytes: Bytes,
    /// The body parsed as a JSON object.
    pub json: Map<String, Value>,
}

/// Reads a function call (SGP.22 §6.5.1): the body within the size limit
/// and a JSON object, with the X-Admin-Protocol and Content-Type headers.
/// The body is read before any refusal is answered: one left unread would
/// make the server close a keep-alive connection the client, told nothing,
/// goes on using. A body that cannot be read whole is refused with
/// `Connection: close`.
pub async fn read_call(req: Request<Incoming>, limit: usize) -> Result<CallBody, GsmaError> {
    let headers = check_headers(req.headers());
    let bytes = read_body(req.into_body(), limit)
        .await
        .map_err(|e| GsmaError::from(e).closing())?;
    headers?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(codes::FORMAT_INVALID, format!("malformed JSON: {e}")))?;
    match value {
        Value::Object(json) => Ok(CallBody { bytes, json }),
        _ => Err(Error::invalid(codes::FORMAT_INVALID, "the request must be a JSON object").into()),
    }
}

/// `header.functionExecutionStatus` for a result (SGP.22 §6.5.1.4).
pub fn execution_status(err: Option<&Error>) -> Value {
    match err {
        None => json!({"status": "Executed-Success"}),
        Some(e) => {
            json!({"status": "Failed", "statusCodeData": {
                "subjectCode": e.code.subject, "reasonCode": e.code.reason, "message": e.public_message()}})
        }
    }
}

/// The bytes of a response message: `{"header": {...}, ...body}`.
pub fn message(err: Option<&Error>, body: Map<String, Value>) -> Vec<u8> {
    let mut msg = Map::new();
    msg.insert(
        "header".into(),
        json!({"functionExecutionStatus": execution_status(err)}),
    );
    msg.extend(body);
    serde_json::to_vec(&Value::Object(msg)).unwrap_or_default()
}

/// A successful function execution with `body` beside the header.
pub fn success(body: Map<String, Value>) -> Response<Body> {
    response(StatusCode::OK, message(None, body))
}

/// A GSMA JSON response from already-rendered bytes, with the headers
/// every response carries.
pub fn response(http: StatusCode, bytes: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = http;
    let h = r.headers_mut();
    h.insert(
        "x-admin-protocol",
        hyper::header::HeaderValue::from_static(ADMIN_PROTOCOL),
    );
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A `Failed` function execution (SGP.22 §6.5.1.4): HTTP 200, or 404/405
/// when the path names no function or the method is not POST.
#[derive(Debug)]
pub struct GsmaError {
    /// The HTTP status.
    pub http: StatusCode,
    /// The status code and message.
    pub error: Error,
    /// Logged already, at a throttled rate.
    pub logged: bool,
    /// The connection cannot serve another request (its request body was
    /// not read whole): answered with `Connection: close`.
    pub close: bool,
}

impl GsmaError {
    /// The refusal of a request the routing table does not name: 1.6/3.1.
    pub fn unrouted(miss: &super::api::Unrouted, interface: &str, path: &str) -> GsmaError {
        use super::api::Unrouted;
        let (http, message) = match miss {
            Unrouted::NotFound => (
                StatusCode::NOT_FOUND,
                format!("no {interface} function at {}", crate::error::quote(path)),
            ),
            Unrouted::MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "GSMA functions are called with POST".to_owned(),
            ),
        };
        GsmaError {
            http,
            error: Error::invalid(codes::FUNCTION_UNSUPPORTED, message),
            logged: false,
            close: false,
        }
    }

    /// The same refusal, closing the connection after it.
    pub fn closing(mut self) -> GsmaError {
        self.close = true;
        self
    }
}

impl From<Error> for GsmaError {
    fn from(error: Error) -> GsmaError {
        GsmaError {
            http: StatusCode::OK,
            error,
            logged: false,
            close: false,
        }
    }
}

impl super::api::ApiError for GsmaError {
    fn outcome(&self) -> super::api::Outcome {
        if self.error.is_ours() {
            super::api::Outcome::Error
        } else {
            super::api::Outcome::Refused
        }
    }

    fn code(&self) -> String {
        self.error.code.to_string()
    }

    fn detail(&self) -> &str {
        &self.error.message
    }

    fn logged(&self) -> bool {
        self.logged
    }

    fn into_response(self) -> Response<Body> {
        let mut r = response(self.http, message(Some(&self.error), Map::new()));
        if self.close {
            r.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
        }
        if self.http == StatusCode::METHOD_NOT_ALLOWED {
            r.headers_mut().insert(
                hyper::header::ALLOW,
                hyper::header::HeaderValue::from_static("POST"),
            );
        }
        r
    }
}
