//! One span per request, so that an operator can follow a download or an
//! order through the log: every request gets a request id (echoed in the
//! `x-request-id` response header) and, once its body is parsed, the
//! protocol identifiers it names. Every line logged while the request is
//! served, its refusals included, carries them; with `--log-format json`
//! they are fields of the line's `span` object.
//!
//! One grep for an ES9+ transactionId finds the four calls of a download
//! (InitiateAuthentication, AuthenticateClient, GetBoundProfilePackage and
//! the HandleNotification of its installation result).

use std::net::SocketAddr;
use tracing::field::Empty;

/// The response header that carries the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The identifiers a request's span may carry once they are known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// ES9+ transactionId (upper-case hex, SGP.22 §6.5.2).
    TransactionId,
    /// ES2+ functionCallIdentifier (§6.5.1.3).
    FunctionCallId,
    /// The profile's ICCID.
    Iccid,
    /// The Windows Mobile Plans transactionId.
    MobilePlansTransactionId,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::TransactionId => "transaction_id",
            Field::FunctionCallId => "function_call_id",
            Field::Iccid => "iccid",
            Field::MobilePlansTransactionId => "mp_transaction_id",
        }
    }
}

/// A fresh request id: 16 hex digits.
pub fn request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The span of one request on `listener`.
pub fn span(
    listener: &'static str,
    request_id: &str,
    peer: SocketAddr,
    operator: Option<&str>,
) -> tracing::Span {
    tracing::info_span!(
        "request",
        listener,
        request_id,
        %peer,
        operator = operator.unwrap_or("-"),
        transaction_id = Empty,
        function_call_id = Empty,
        iccid = Empty,
        mp_transaction_id = Empty,
    )
}

/// Records `value` as `field` of the current request's span. Values come
/// from clients: only the first 64 printable ASCII characters are kept.
pub fn record(field: Field, value: &str) {
    let clean: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect();
    tracing::Span::current().record(field.name(), clean.as_str());
}
