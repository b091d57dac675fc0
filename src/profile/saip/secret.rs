//! Secret octets inside a profile package: Ki, OPc, PIN, PUK and ADM
//! values, security domain key data.

use std::fmt;
use zeroize::Zeroizing;

/// Octets that must never reach a log: zeroized on drop, and `Debug` shows
/// only the length.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Copies `bytes` into a new secret.
    pub fn new(bytes: &[u8]) -> Secret {
        Secret(Zeroizing::new(bytes.to_vec()))
    }

    /// Takes ownership of `bytes`.
    pub fn from_vec(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    /// The octets. Callers must not log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The number of octets.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no octets.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_octets() {
        let s = Secret::new(&[0xAB; 16]);
        let shown = format!("{s:?}");
        assert_eq!(shown, "Secret(16 bytes)");
        assert!(!shown.to_lowercase().contains("ab"));
        assert_eq!(s.expose(), &[0xAB; 16]);
    }
}
