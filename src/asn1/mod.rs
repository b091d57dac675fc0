//! ASN.1/DER codecs for what ES9+ carries (SGP.22 v2.2 §5.6, §5.7 and the
//! `RSPDefinitions` module).
//!
//! Two layers, in the style of rustls' `msgs::codec`:
//! - [`der`]: a strict DER TLV reader and a canonical writer. It knows tags,
//!   lengths and primitive values, nothing about RSP.
//! - [`rsp`]: one Rust type per RSP data object, each with `decode` (which
//!   consumes all of its input or fails) and `encode`.
//!
//! Wherever a signature covers a value, the received bytes are kept
//! ([`der::Signed`]) so verification never depends on re-encoding.
//!
//! Decoding never panics: every rejection is an [`Asn1Error`] (property
//! tests feed random and mutated input to every decoder).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "decoders face untrusted input: no panics outside tests"
    )
)]

pub mod der;
pub mod rsp;

use der::Tag;

/// Why a DER value was rejected. Every variant is the sender's fault (the
/// bytes are malformed or do not match the ASN.1 type); on the wire it is
/// `1.3.1` / `2.1` (protocol format invalid, SGP.22 §5.2.6).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Asn1Error {
    /// The input ended inside a tag or length.
    #[error("input ends inside a TLV header")]
    Truncated,
    /// Identifier octets DER does not produce (X.690 §8.1.2): tag `00`,
    /// high-tag form for a number below 31, or a leading `80` octet.
    #[error("malformed tag")]
    InvalidTag,
    /// More than four identifier octets.
    #[error("tag longer than four octets")]
    TagTooLong,
    /// The indefinite length form (BER only, X.690 §10.1).
    #[error("indefinite length (not DER)")]
    IndefiniteLength,
    /// A long-form length that a shorter form could express (X.690 §10.1).
    #[error("length not minimally encoded (not DER)")]
    NonMinimalLength,
    /// A length of more than four octets, or the reserved `FF`.
    #[error("length field too large")]
    LengthTooLarge,
    /// A value running past the end of its input or enclosing value.
    #[error("length {length} runs past the end of the input ({available} bytes left)")]
    LengthPastEnd {
        /// The announced length.
        length: usize,
        /// What was left.
        available: usize,
    },
    /// Bytes left over after a complete value.
    #[error("{context}: {count} trailing bytes")]
    TrailingBytes {
        /// The ASN.1 type being decoded.
        context: &'static str,
        /// How many bytes were left.
        count: usize,
    },
    /// A mandatory component is absent.
    #[error("{context}: missing element {expected}")]
    MissingElement {
        /// The ASN.1 type being decoded.
        context: &'static str,
        /// The tag of the missing component.
        expected: Tag,
    },
    /// A component carries another tag than the type requires at this point.
    #[error("{context}: expected tag {expected}, found {found}")]
    UnexpectedTag {
        /// The ASN.1 type being decoded.
        context: &'static str,
        /// The tag the type requires.
        expected: Tag,
        /// The tag received.
        found: Tag,
    },
    /// A well-formed element where the type allows nothing more.
    #[error("{context}: unexpected element {found}")]
    UnexpectedElement {
        /// The ASN.1 type being decoded.
        context: &'static str,
        /// The tag received.
        found: Tag,
    },
    /// A fixed-size OCTET STRING of the wrong size.
    #[error("{context}: expected {expected} octets, found {found}")]
    WrongSize {
        /// The ASN.1 type being decoded.
        context: &'static str,
        /// The size the type requires.
        expected: usize,
        /// The size received.
        found: usize,
    },
    /// A value its type does not allow (non-minimal INTEGER, BOOLEAN other
    /// than `00`/`FF`, invalid UTF-8, malformed OID or BIT STRING, size out
    /// of the constraint, ...).
    #[error("{context}: {reason}")]
    InvalidValue {
        /// The ASN.1 type being decoded.
        context: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Asn1Error {
    /// An [`Asn1Error::InvalidValue`].
    pub const fn invalid(context: &'static str, reason: &'static str) -> Asn1Error {
        Asn1Error::InvalidValue { context, reason }
    }
}

impl From<Asn1Error> for crate::error::Error {
    /// A malformed data object is a format error: `1.3.1` / `2.1`.
    fn from(e: Asn1Error) -> crate::error::Error {
        crate::error::Error::invalid(crate::error::codes::FORMAT_INVALID, format!("ASN.1: {e}"))
    }
}
