//! base64 (standard alphabet, padded) for `Vec<u8>` fields, as a serde
//! `with` module: the ES9+ JSON bodies (SGP.22 §6.5.2), the ES9+ session
//! and the records the store and the profile package protection keep.

use base64::Engine;
use serde::{Deserialize, Deserializer, Serializer};

/// Serialises bytes as base64.
pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
}

/// Parses base64 into bytes.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(serde::de::Error::custom)
}
