//! Profile packages: the SAIP codec ([`saip`]) and protection at rest
//! ([`protect`]).

pub mod protect;
pub mod saip;
