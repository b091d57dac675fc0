//! Profile packages: the SAIP codec ([`saip`]), templates and their
//! personalization ([`template`], [`params`]), bulk generation
//! ([`generate`]), protection at rest ([`protect`]) and master key
//! rotation ([`rotate`]).

pub mod generate;
pub mod import;
pub mod params;
pub mod protect;
pub mod rotate;
pub mod saip;
pub mod stored;
pub mod template;
