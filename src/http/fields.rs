//! Typed access to the fields of a JSON request body, with the GSMA status
//! code for every way a field can be wrong (SGP.22 §5.2.6: 1.3.1/2.1
//! invalid, 1.3.1/2.2 missing). Shared by ES2+ and ES9+.

use crate::error::{codes, Error};
use base64::Engine;
use serde_json::{Map, Value};

/// The fields of one JSON object.
pub struct Fields<'a>(pub &'a Map<String, Value>);

impl<'a> Fields<'a> {
    /// An optional string; `null` counts as absent.
    pub fn opt_str(&self, name: &str) -> Result<Option<&'a str>, Error> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(Error::invalid(
                codes::FORMAT_INVALID,
                format!("{name} must be a string"),
            )),
        }
    }

    /// A mandatory string.
    pub fn req_str(&self, name: &str) -> Result<&'a str, Error> {
        self.opt_str(name)?
            .ok_or_else(|| Error::invalid(codes::FORMAT_MISSING, format!("{name} is missing")))
    }

    /// A mandatory boolean.
    pub fn req_bool(&self, name: &str) -> Result<bool, Error> {
        match self.0.get(name) {
            None | Some(Value::Null) => Err(Error::invalid(
                codes::FORMAT_MISSING,
                format!("{name} is missing"),
            )),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(Error::invalid(
                codes::FORMAT_INVALID,
                format!("{name} must be a boolean"),
            )),
        }
    }

    /// A mandatory base64 value (SGP.22 §6.5: binary data in JSON is base64).
    pub fn req_base64(&self, name: &str) -> Result<Vec<u8>, Error> {
        let s = self.req_str(name)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| {
                Error::invalid(codes::FORMAT_INVALID, format!("{name} is not base64: {e}"))
            })
    }

    /// A mandatory hex value of 1 to `max` bytes (transactionId, §6.5.2.6).
    pub fn req_hex(&self, name: &str, max: usize) -> Result<Vec<u8>, Error> {
        let s = self.req_str(name)?;
        let bytes = hex::decode(s)
            .map_err(|_| Error::invalid(codes::FORMAT_INVALID, format!("{name} is not hex")))?;
        if bytes.is_empty() || bytes.len() > max {
            return Err(Error::invalid(
                codes::FORMAT_INVALID,
                format!("{name} must be 1 to {max} bytes"),
            ));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codes_for_each_way_a_field_is_wrong() {
        let v = json!({"a": "QUJD", "b": 5, "t": "0A1b", "bad": "!!", "long": "00".repeat(17)});
        let f = Fields(v.as_object().expect("object"));
        assert_eq!(f.req_base64("a").expect("base64"), b"ABC");
        assert_eq!(f.req_str("b").unwrap_err().code, codes::FORMAT_INVALID);
        assert_eq!(f.req_str("zz").unwrap_err().code, codes::FORMAT_MISSING);
        assert_eq!(f.req_hex("t", 16).expect("hex"), vec![0x0a, 0x1b]);
        assert_eq!(f.req_base64("bad").unwrap_err().code, codes::FORMAT_INVALID);
        assert_eq!(
            f.req_hex("long", 16).unwrap_err().code,
            codes::FORMAT_INVALID
        );
    }
}
