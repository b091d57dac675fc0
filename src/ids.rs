//! Identifiers that cross the wire: EID, ICCID and MatchingID.
//!
//! Formats follow SGP.22 §6.5.2 (JSON patterns `^[0-9]{32}$` for the EID and
//! `^[0-9]{19}[0-9F]?$` for the ICCID) and §4.1.1 for the MatchingID.
//! Check digits are *not* part of the wire format check: real test eUICCs use
//! EIDs whose ISO 7064 check digits are wrong, so the protocol layers only log
//! and count them ([`Eid::check_digits_ok`]), while inventory import enforces
//! them ([`Iccid::luhn_ok`]).

use rand::Rng;
use std::fmt;

/// A 32-digit eUICC identifier (SGP.02 / SGP.22 §6.5.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Eid(String);

impl Eid {
    /// Parses an EID: exactly 32 decimal digits.
    pub fn parse(s: &str) -> Option<Eid> {
        (s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit())).then(|| Eid(s.to_owned()))
    }

    /// ISO 7064 MOD 97-10 over the whole EID: the number modulo 97 equals 1.
    pub fn check_digits_ok(&self) -> bool {
        self.0
            .bytes()
            .fold(0u32, |acc, b| (acc * 10 + u32::from(b - b'0')) % 97)
            == 1
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Eid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An ICCID, kept in canonical form: 19 or 20 digits with any trailing `F`
/// padding removed, so `8901...1` and `8901...1F` name the same profile.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Iccid(String);

impl Iccid {
    /// Parses `^[0-9]{19}[0-9F]?$` (lower-case `f` is tolerated).
    pub fn parse(s: &str) -> Option<Iccid> {
        let b = s.as_bytes();
        let digits = match b.len() {
            19 => s,
            20 if b[19] == b'F' || b[19] == b'f' => &s[..19],
            20 => s,
            _ => return None,
        };
        digits
            .bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| Iccid(digits.to_owned()))
    }

    /// Luhn check over all digits, the last one being the check digit (ITU-T E.118).
    pub fn luhn_ok(&self) -> bool {
        luhn_sum(self.0.as_bytes()) % 10 == 0
    }

    /// Builds an ICCID from its digits without the check digit (18 or 19
    /// digits), appending the Luhn digit.
    pub fn with_check_digit(body: &str) -> Option<Iccid> {
        if !(18..=19).contains(&body.len()) || !body.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let mut s = body.to_owned();
        s.push('0');
        let sum = luhn_sum(s.as_bytes());
        let check = (10 - sum % 10) % 10;
        s.pop();
        s.push(char::from(b'0' + check as u8));
        Some(Iccid(s))
    }

    /// The canonical digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn luhn_sum(digits: &[u8]) -> u32 {
    digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = u32::from(c - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum()
}

impl fmt::Display for Iccid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// MatchingID alphabet (SGP.22 §4.1.1): upper-case letters, digits and `-`.
pub fn matching_id_is_valid(s: &str) -> bool {
    s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase() || b == b'-')
}

/// Generates a MatchingID of four groups of five characters from a CSPRNG,
/// e.g. `K7Q2M-0ZP4A-9XW3C-T5B1N` (about 103 bits of entropy).
pub fn generate_matching_id<R: Rng + ?Sized>(rng: &mut R) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = String::with_capacity(23);
    for group in 0..4 {
        if group > 0 {
            out.push('-');
        }
        for _ in 0..5 {
            out.push(char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgp26_test_eid_has_valid_check_digits() {
        let eid = Eid::parse("89049032123451234512345678901235").expect("32 digits");
        assert!(eid.check_digits_ok());
        let bad = Eid::parse("89049032123451234512345678901234").expect("32 digits");
        assert!(!bad.check_digits_ok());
    }

    #[test]
    fn eid_format() {
        assert!(Eid::parse("8904903212345123451234567890123").is_none());
        assert!(Eid::parse("8904903212345123451234567890123A").is_none());
        assert!(Eid::parse("890490321234512345123456789012345").is_none());
    }

    #[test]
    fn iccid_forms_and_luhn() {
        let a = Iccid::parse("8944123456789012347").expect("19 digits");
        let b = Iccid::parse("8944123456789012347F").expect("19 digits + F");
        assert_eq!(a, b);
        let g = Iccid::with_check_digit("894412345678901234").expect("18 digits");
        assert!(g.luhn_ok());
        assert_eq!(g.as_str().len(), 19);
        assert!(Iccid::parse("894412345678901234").is_none());
        assert!(Iccid::parse("89441234567890123X").is_none());
        assert!(Iccid::parse("8944123456789012345678").is_none());
        // Flip the last digit: Luhn must fail.
        let mut s = g.as_str().to_owned();
        let last = s.pop().expect("non-empty");
        s.push(if last == '0' { '1' } else { '0' });
        assert!(!Iccid::parse(&s).expect("19 digits").luhn_ok());
    }

    #[test]
    fn matching_ids() {
        let mut rng = rand::thread_rng();
        let id = generate_matching_id(&mut rng);
        assert!(matching_id_is_valid(&id));
        assert_eq!(id.len(), 23);
        assert!(!matching_id_is_valid("abc"));
        assert!(matching_id_is_valid("04386-AGYFT-A74Y8-3F815"));
    }
}
