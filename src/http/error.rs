//! The refusal of the JSON APIs outside SGP.22 (admin, Mobile Plans,
//! GetBalance, operations): an HTTP status and a JSON body
//! `{"error": "...", "code"?, "parameter"?, "decision"?}`.

use super::api::{ApiError, Outcome};
use super::Body;
use crate::error::{Blame, Error};
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

/// A refused or failed call of a JSON API (boxed: request paths return it
/// in every `Result`).
#[derive(Debug)]
pub struct HttpError(Box<Parts>);

#[derive(Debug)]
struct Parts {
    status: StatusCode,
    /// What the caller reads.
    message: String,
    /// What the log reads, when it says more than the caller may see.
    detail: Option<String>,
    /// The GSMA status code of a store refusal (SGP.22 §5.2.6).
    code: Option<String>,
    /// The request parameter at fault.
    parameter: Option<String>,
    /// A Mobile Plans decision as it stands (on 409).
    decision: Option<Value>,
    headers: Vec<(&'static str, HeaderValue)>,
}

impl HttpError {
    /// A refusal with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> HttpError {
        HttpError(Box::new(Parts {
            status,
            message: message.into(),
            detail: None,
            code: None,
            parameter: None,
            decision: None,
            headers: vec![],
        }))
    }

    /// 400.
    pub fn bad(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, message)
    }

    /// 400 naming the parameter at fault.
    pub fn bad_parameter(parameter: &str, message: impl Into<String>) -> HttpError {
        let mut e = HttpError::bad(message);
        e.0.parameter = Some(parameter.to_owned());
        e
    }

    /// Our own failure: the caller reads `public`, the log `detail`.
    pub fn ours(status: StatusCode, public: &str, detail: impl Into<String>) -> HttpError {
        let mut e = HttpError::new(status, public);
        e.0.detail = Some(detail.into());
        e
    }

    /// The answer for a request the routing table does not name.
    pub fn unrouted(miss: &super::api::Unrouted, what: &str, path: &str) -> HttpError {
        match miss {
            super::api::Unrouted::NotFound => {
                HttpError::not_found(format!("no {what} endpoint {}", crate::error::quote(path)))
            }
            super::api::Unrouted::MethodNotAllowed { allow, .. } => {
                HttpError::new(StatusCode::METHOD_NOT_ALLOWED, format!("use {allow}"))
                    .header_str("allow", allow)
            }
        }
    }

    /// Adds a response header.
    pub fn header(mut self, name: &'static str, value: HeaderValue) -> HttpError {
        self.0.headers.push((name, value));
        self
    }

    fn header_str(self, name: &'static str, value: &str) -> HttpError {
        match HeaderValue::from_str(value) {
            Ok(v) => self.header(name, v),
            Err(_) => self,
        }
    }

    /// Attaches the decision as it stands.
    pub fn with_decision(mut self, decision: Value) -> HttpError {
        self.0.decision = Some(decision);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let p = &self.0;
        let mut v = json!({"error": p.message});
        if let Some(c) = &p.code {
            v["code"] = json!(c);
        }
        if let Some(p) = &p.parameter {
            v["parameter"] = json!(p);
        }
        if let Some(d) = &p.decision {
            v["decision"] = d.clone();
        }
        v
    }
}

/// A store or protocol error: malformed 400, not allowed 403, unknown
/// (`x.9`) 404, other conditions 409, ours 500, a store that cannot write
/// 503. The GSMA status code goes along as `code`.
impl From<Error> for HttpError {
    fn from(e: Error) -> HttpError {
        let status = match e.blame {
            Blame::InvalidRequest => StatusCode::BAD_REQUEST,
            Blame::NotAllowed => StatusCode::FORBIDDEN,
            Blame::Conditions if e.code.reason == "3.9" => StatusCode::NOT_FOUND,
            Blame::Conditions => StatusCode::CONFLICT,
            Blame::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Blame::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut out = HttpError::new(status, e.public_message());
        if e.is_ours() {
            out.0.detail = Some(e.message.clone());
        }
        out.0.code = Some(e.code.to_string());
        out
    }
}

impl ApiError for HttpError {
    fn outcome(&self) -> Outcome {
        if self.0.status.is_server_error() {
            Outcome::Error
        } else {
            Outcome::Refused
        }
    }

    fn code(&self) -> String {
        self.0
            .code
            .clone()
            .unwrap_or_else(|| self.0.status.as_u16().to_string())
    }

    fn detail(&self) -> &str {
        self.0.detail.as_deref().unwrap_or(&self.0.message)
    }

    fn into_response(self) -> Response<Body> {
        let mut r = super::json_response(self.0.status, &self.body());
        for (name, value) in self.0.headers {
            r.headers_mut().insert(name, value);
        }
        r
    }
}

/// A refusal already rendered by its API (the portal's pages).
pub struct Rendered(pub Response<Body>);

impl ApiError for Rendered {
    fn outcome(&self) -> Outcome {
        if self.0.status().is_server_error() {
            Outcome::Error
        } else {
            Outcome::Refused
        }
    }

    fn code(&self) -> String {
        self.0.status().as_u16().to_string()
    }

    fn detail(&self) -> &str {
        self.0.status().canonical_reason().unwrap_or("refused")
    }

    fn into_response(self) -> Response<Body> {
        self.0
    }
}
