//! Contents of the standard elementary files that personalization writes:
//! EF.ICCID (ETSI TS 102 221 §13.2), EF.IMSI, EF.ACC, EF.SPN and EF.AD
//! (3GPP TS 31.102 §4.2), the ISIM's EF.IMPI, EF.IMPU and EF.DOMAIN
//! (3GPP TS 31.103 §4.2, identities of 3GPP TS 23.003 §13), the PIN value
//! coding (TS 102 221 §9.5.1), the service tables (TS 31.102 §4.2.8) and
//! the access rules of EF.ARR (TS 102 221 §9.2.4), and the ICCID of the
//! SAIP ProfileHeader.

use std::fmt;

use crate::ids::Iccid;

/// Why a value cannot be encoded into its file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EfError {
    /// An IMSI is 6 to 15 decimal digits (3GPP TS 23.003 §2.2).
    #[error("IMSI must be 6 to 15 digits")]
    Imsi,
    /// The MNC is 2 or 3 digits.
    #[error("MNC length must be 2 or 3")]
    MncLength,
    /// A PIN, PUK or ADM value is 4 to 8 decimal digits.
    #[error("PIN/PUK/ADM values are 4 to 8 digits")]
    Pin,
    /// The service provider name does not fit EF.SPN.
    #[error("SPN does not fit EF.SPN: {0}")]
    Spn(&'static str),
    /// A service number outside the table.
    #[error("service {0} does not fit a {1}-octet service table")]
    Service(u16, usize),
}

/// An IMSI: 6 to 15 decimal digits (3GPP TS 23.003 §2.2), MCC first.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Imsi(String);

impl Imsi {
    /// Parses an IMSI.
    pub fn parse(s: &str) -> Result<Imsi, EfError> {
        if (6..=15).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Imsi(s.to_owned()))
        } else {
            Err(EfError::Imsi)
        }
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The mobile country code (the first three digits).
    pub fn mcc(&self) -> &str {
        self.0.get(..3).unwrap_or("")
    }

    /// The mobile network code, `mnc_digits` (2 or 3) long.
    pub fn mnc(&self, mnc_digits: u8) -> Result<&str, EfError> {
        match mnc_digits {
            2 | 3 => self
                .0
                .get(3..3 + usize::from(mnc_digits))
                .ok_or(EfError::Imsi),
            _ => Err(EfError::MncLength),
        }
    }

    /// The last digit, which selects the access control class.
    fn last_digit(&self) -> u8 {
        self.0.bytes().last().map_or(0, |b| b - b'0')
    }
}

impl fmt::Display for Imsi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Imsi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Imsi({})", self.0)
    }
}

/// Packs decimal digits two per octet, `F`-padded to `len` octets, with
/// the first digit of each pair in the high nibble (`swap = false`) or the
/// low nibble (`swap = true`, the TS 102 221/TS 31.102 BCD coding).
fn pack_digits(digits: &str, len: usize, swap: bool) -> Vec<u8> {
    let mut nibbles: Vec<u8> = digits
        .bytes()
        .map(|b| b.wrapping_sub(b'0') & 0x0F)
        .collect();
    nibbles.resize(len * 2, 0x0F);
    nibbles
        .chunks(2)
        .map(|pair| {
            let (a, b) = match pair {
                [a, b] => (*a, *b),
                _ => (0x0F, 0x0F),
            };
            if swap {
                (b << 4) | a
            } else {
                (a << 4) | b
            }
        })
        .collect()
}

/// Unpacks digits, stopping at the first `F` nibble; `None` on another
/// non-decimal nibble.
fn unpack_digits(bytes: &[u8], swap: bool) -> Option<String> {
    let mut out = String::new();
    for b in bytes {
        let (first, second) = if swap {
            (b & 0x0F, b >> 4)
        } else {
            (b >> 4, b & 0x0F)
        };
        for n in [first, second] {
            match n {
                0..=9 => out.push(char::from(b'0' + n)),
                0x0F => return Some(out),
                _ => return None,
            }
        }
    }
    Some(out)
}

/// The ProfileHeader `iccid`: the digits in order, two per octet, padded
/// with `F` (not nibble-swapped).
pub fn header_iccid(iccid: &Iccid) -> [u8; 10] {
    let mut out = [0xFF; 10];
    for (dst, src) in out.iter_mut().zip(pack_digits(iccid.as_str(), 10, false)) {
        *dst = src;
    }
    out
}

/// The ICCID of a ProfileHeader `iccid`, if it is 19 or 20 digits.
pub fn iccid_from_header(bytes: &[u8; 10]) -> Option<Iccid> {
    Iccid::parse(&unpack_digits(bytes, false)?)
}

/// EF.ICCID (TS 102 221 §13.2): the digits BCD-coded with swapped nibbles,
/// padded with `F`.
pub fn ef_iccid(iccid: &Iccid) -> [u8; 10] {
    let mut out = [0xFF; 10];
    for (dst, src) in out.iter_mut().zip(pack_digits(iccid.as_str(), 10, true)) {
        *dst = src;
    }
    out
}

/// The ICCID held by EF.ICCID contents.
pub fn iccid_from_ef(bytes: &[u8]) -> Option<Iccid> {
    Iccid::parse(&unpack_digits(bytes, true)?)
}

/// EF.IMSI (TS 31.102 §4.2.2): the length of the IMSI in octets, then the
/// type nibble (`1` = IMSI, with `8` set for an odd number of digits) and
/// the digits, BCD with swapped nibbles, padded to 9 octets with `F`.
pub fn ef_imsi(imsi: &Imsi) -> [u8; 9] {
    let digits = imsi.as_str();
    let odd = digits.len() % 2 == 1;
    // The type nibble stands in for a digit before the first one.
    let mut nibbles = vec![if odd { 0x9 } else { 0x1 }];
    nibbles.extend(digits.bytes().map(|b| b - b'0'));
    let used = nibbles.len().div_ceil(2);
    nibbles.resize(16, 0x0F);
    let mut out = [0xFF; 9];
    out[0] = used as u8;
    for (dst, pair) in out.iter_mut().skip(1).zip(nibbles.chunks(2)) {
        if let [a, b] = pair {
            *dst = (b << 4) | a;
        }
    }
    out
}

/// The IMSI held by EF.IMSI contents.
pub fn imsi_from_ef(bytes: &[u8]) -> Option<Imsi> {
    let (&len, rest) = bytes.split_first()?;
    let body = rest.get(..usize::from(len))?;
    let (&first, tail) = body.split_first()?;
    // Type nibble 1 (IMSI), with the parity bit 8 for an odd count; the
    // first digit is in the high nibble either way.
    if first & 0x07 != 0x1 || first >> 4 > 9 {
        return None;
    }
    let mut digits = String::from(char::from(b'0' + (first >> 4)));
    digits.push_str(&unpack_digits(tail, true)?);
    Imsi::parse(&digits).ok()
}

/// EF.ACC (TS 31.102 §4.2.15): the access control class given by the
/// last IMSI digit (TS 22.011 §4.2), as a 16-bit field.
pub fn ef_acc(imsi: &Imsi) -> [u8; 2] {
    (1u16 << imsi.last_digit()).to_be_bytes()
}

/// EF.AD (TS 31.102 §4.2.18): normal operation, no additional
/// information, and the MNC length in octet 4.
pub fn ef_ad(mnc_digits: u8) -> Result<[u8; 4], EfError> {
    match mnc_digits {
        2 | 3 => Ok([0x00, 0x00, 0x00, mnc_digits]),
        _ => Err(EfError::MncLength),
    }
}

/// The GSM 7-bit default alphabet code of a character, where one exists
/// and is safe to use unpacked (3GPP TS 23.038 §6.2.1).
fn gsm7(c: char) -> Option<u8> {
    match c {
        'A'..='Z'
        | 'a'..='z'
        | '0'..='9'
        | ' '
        | '!'
        | '"'
        | '#'
        | '%'
        | '&'
        | '\''
        | '('
        | ')'
        | '*'
        | '+'
        | ','
        | '-'
        | '.'
        | '/'
        | ':'
        | ';'
        | '<'
        | '='
        | '>'
        | '?' => u8::try_from(u32::from(c)).ok(),
        '@' => Some(0x00),
        '$' => Some(0x02),
        '_' => Some(0x11),
        _ => None,
    }
}

/// EF.SPN (TS 31.102 §4.2.12): the display condition, then the name in
/// the unpacked GSM default alphabet (or UCS2, `80` + UTF-16BE, when a
/// character is outside it; TS 31.102 Annex A), padded to 16 octets with
/// `FF`.
pub fn ef_spn(display_condition: u8, name: &str) -> Result<[u8; 17], EfError> {
    if name.is_empty() {
        return Err(EfError::Spn("empty name"));
    }
    let encoded: Vec<u8> = match name.chars().map(gsm7).collect::<Option<Vec<u8>>>() {
        Some(gsm) => gsm,
        None => {
            let mut ucs2 = vec![0x80];
            for unit in name.encode_utf16() {
                ucs2.extend_from_slice(&unit.to_be_bytes());
            }
            ucs2
        }
    };
    if encoded.len() > 16 {
        return Err(EfError::Spn("longer than 16 octets"));
    }
    let mut out = [0xFF; 17];
    out[0] = display_condition;
    for (dst, src) in out.iter_mut().skip(1).zip(encoded) {
        *dst = src;
    }
    Ok(out)
}

/// The home network domain name (TS 23.003 §13.2):
/// `ims.mnc<MNC>.mcc<MCC>.3gppnetwork.org`, a 2-digit MNC padded with a
/// leading zero.
pub fn home_domain(imsi: &Imsi, mnc_digits: u8) -> Result<String, EfError> {
    let mnc = imsi.mnc(mnc_digits)?;
    Ok(format!(
        "ims.mnc{:0>3}.mcc{}.3gppnetwork.org",
        mnc,
        imsi.mcc()
    ))
}

/// A URI/NAI TLV of the ISIM files: tag `80`, length, UTF-8 (TS 31.103
/// §4.2.2 to §4.2.4).
fn isim_tlv(value: &str) -> Vec<u8> {
    let mut out = vec![0x80];
    crate::asn1::der::write_length(value.len(), &mut out);
    out.extend_from_slice(value.as_bytes());
    out
}

/// EF.IMPI (TS 31.103 §4.2.2): the private identity derived from the
/// IMSI, `<IMSI>@<home domain>` (TS 23.003 §13.3).
pub fn ef_impi(imsi: &Imsi, mnc_digits: u8) -> Result<Vec<u8>, EfError> {
    Ok(isim_tlv(&format!(
        "{imsi}@{}",
        home_domain(imsi, mnc_digits)?
    )))
}

/// One EF.IMPU record (TS 31.103 §4.2.4): the temporary public identity
/// `sip:<IMSI>@<home domain>` (TS 23.003 §13.4B).
pub fn ef_impu(imsi: &Imsi, mnc_digits: u8) -> Result<Vec<u8>, EfError> {
    Ok(isim_tlv(&format!(
        "sip:{imsi}@{}",
        home_domain(imsi, mnc_digits)?
    )))
}

/// EF.DOMAIN (TS 31.103 §4.2.3): the home network domain name.
pub fn ef_domain(imsi: &Imsi, mnc_digits: u8) -> Result<Vec<u8>, EfError> {
    Ok(isim_tlv(&home_domain(imsi, mnc_digits)?))
}

/// A PIN, PUK or ADM value as stored (TS 102 221 §9.5.1): the ASCII
/// digits, padded to 8 octets with `FF`.
pub fn pin_value(digits: &str) -> Result<[u8; 8], EfError> {
    if !(4..=8).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EfError::Pin);
    }
    let mut out = [0xFF; 8];
    for (dst, src) in out.iter_mut().zip(digits.bytes()) {
        *dst = src;
    }
    Ok(out)
}

/// A service table (EF.UST TS 31.102 §4.2.8, EF.IST TS 31.103 §4.2.7, ...):
/// service `n` is bit `(n - 1) % 8` (b1 first) of octet `(n - 1) / 8`.
pub fn service_table(services: &[u16], len: usize) -> Result<Vec<u8>, EfError> {
    let mut out = vec![0u8; len];
    for &n in services {
        let index = usize::from(n.checked_sub(1).ok_or(EfError::Service(n, len))?);
        let byte = out.get_mut(index / 8).ok_or(EfError::Service(n, len))?;
        *byte |= 1 << (index % 8);
    }
    Ok(out)
}

/// The security condition of one access rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// `90 00`: always.
    Always,
    /// `97 00`: never.
    Never,
    /// User verification with this key reference (`A4` control reference
    /// template: `83` key reference, `95 08` usage qualifier "user
    /// verification").
    Key(u8),
}

impl Condition {
    fn write(self, out: &mut Vec<u8>) {
        match self {
            Condition::Always => out.extend_from_slice(&[0x90, 0x00]),
            Condition::Never => out.extend_from_slice(&[0x97, 0x00]),
            Condition::Key(k) => {
                out.extend_from_slice(&[0xA4, 0x06, 0x83, 0x01, k, 0x95, 0x01, 0x08])
            }
        }
    }
}

/// One record of EF.ARR in the expanded format (TS 102 221 §9.2.4): access
/// modes grouped by condition, in the order the conditions first appear.
/// `modes` pairs an access mode bit (TS 102 221 §9.3.1: `01` READ / DELETE
/// child, `02` UPDATE / CREATE EF, `04` WRITE / CREATE DF, `08`
/// DEACTIVATE, `10` ACTIVATE, `20` TERMINATE, `40` DELETE) with its
/// condition; `increase` adds the INCREASE command (`84 01 32`).
pub fn arr_record(modes: &[(u8, Condition)], increase: Option<Condition>) -> Vec<u8> {
    let mut groups: Vec<(Condition, u8)> = Vec::new();
    for (bit, cond) in modes {
        match groups.iter_mut().find(|(c, _)| c == cond) {
            Some((_, am)) => *am |= bit,
            None => groups.push((*cond, *bit)),
        }
    }
    let mut out = Vec::new();
    for (cond, am) in groups {
        out.extend_from_slice(&[0x80, 0x01, am]);
        cond.write(&mut out);
    }
    if let Some(cond) = increase {
        out.extend_from_slice(&[0x84, 0x01, 0x32]);
        cond.write(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iccid_codings() {
        let iccid = Iccid::parse("8999900000000000006").unwrap();
        assert_eq!(
            header_iccid(&iccid),
            [0x89, 0x99, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x6F]
        );
        assert_eq!(
            ef_iccid(&iccid),
            [0x98, 0x99, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xF6]
        );
        assert_eq!(
            iccid_from_header(&header_iccid(&iccid)),
            Some(iccid.clone())
        );
        assert_eq!(iccid_from_ef(&ef_iccid(&iccid)), Some(iccid));
        assert_eq!(iccid_from_header(&[0xAB; 10]), None);
    }

    #[test]
    fn imsi_coding() {
        // 15 digits: odd, type nibble 9.
        let imsi = Imsi::parse("001010123456789").unwrap();
        assert_eq!(
            ef_imsi(&imsi),
            [0x08, 0x09, 0x10, 0x10, 0x10, 0x32, 0x54, 0x76, 0x98]
        );
        assert_eq!(imsi_from_ef(&ef_imsi(&imsi)), Some(imsi.clone()));
        // 14 digits: even, type nibble 1, padded.
        let even = Imsi::parse("00101012345678").unwrap();
        assert_eq!(
            ef_imsi(&even),
            [0x08, 0x01, 0x10, 0x10, 0x10, 0x32, 0x54, 0x76, 0xF8]
        );
        assert_eq!(imsi_from_ef(&ef_imsi(&even)), Some(even));
        assert_eq!(imsi.mcc(), "001");
        assert_eq!(imsi.mnc(2), Ok("01"));
        assert_eq!(imsi.mnc(3), Ok("010"));
        assert!(Imsi::parse("12345").is_err());
        assert!(Imsi::parse("1234567890123456").is_err());
        assert!(Imsi::parse("00101x").is_err());
    }

    #[test]
    fn acc_ad_spn() {
        assert_eq!(
            ef_acc(&Imsi::parse("001010000000000").unwrap()),
            [0x00, 0x01]
        );
        assert_eq!(
            ef_acc(&Imsi::parse("001010000000009").unwrap()),
            [0x02, 0x00]
        );
        assert_eq!(ef_ad(2), Ok([0, 0, 0, 2]));
        assert!(ef_ad(4).is_err());
        let spn = ef_spn(1, "smdp_plus").unwrap();
        assert_eq!(&spn[..5], &[0x01, b's', b'm', b'd', b'p']);
        assert_eq!(spn[5], 0x11);
        assert_eq!(spn[10], 0xFF);
        let ucs2 = ef_spn(0, "Ünï").unwrap();
        assert_eq!(
            &ucs2[..8],
            &[0x00, 0x80, 0x00, 0xDC, 0x00, 0x6E, 0x00, 0xEF]
        );
        assert!(ef_spn(0, "12345678901234567").is_err());
        assert!(ef_spn(0, "").is_err());
    }

    #[test]
    fn isim_identities() {
        let imsi = Imsi::parse("001010123456789").unwrap();
        let impi = ef_impi(&imsi, 2).unwrap();
        assert_eq!(impi[0], 0x80);
        assert_eq!(
            &impi[2..],
            b"001010123456789@ims.mnc001.mcc001.3gppnetwork.org"
        );
        assert_eq!(usize::from(impi[1]), impi.len() - 2);
        let impu = ef_impu(&imsi, 3).unwrap();
        assert!(impu.ends_with(b"sip:001010123456789@ims.mnc010.mcc001.3gppnetwork.org"));
        assert_eq!(
            &ef_domain(&imsi, 2).unwrap()[2..],
            b"ims.mnc001.mcc001.3gppnetwork.org"
        );
    }

    #[test]
    fn pins_services_and_rules() {
        assert_eq!(pin_value("1234"), Ok(*b"1234\xFF\xFF\xFF\xFF"));
        assert_eq!(pin_value("12345678"), Ok(*b"12345678"));
        assert!(pin_value("123").is_err());
        assert!(pin_value("123456789").is_err());
        assert!(pin_value("12a4").is_err());
        assert_eq!(
            service_table(&[1, 10, 12, 19], 3),
            Ok(vec![0x01, 0x0A, 0x04])
        );
        assert!(service_table(&[25], 3).is_err());
        assert!(service_table(&[0], 3).is_err());
        let rec = arr_record(
            &[
                (0x01, Condition::Key(0x01)),
                (0x02, Condition::Key(0x0A)),
                (0x08, Condition::Key(0x0A)),
                (0x10, Condition::Key(0x0A)),
            ],
            None,
        );
        assert_eq!(
            hex::encode_upper(rec),
            "800101A40683010195010880011AA40683010A950108"
        );
        let inc = arr_record(&[(0x01, Condition::Always)], Some(Condition::Key(0x01)));
        assert_eq!(hex::encode_upper(inc), "8001019000840132A406830101950108");
    }
}
