//! Profile packages: the SAIP codec ([`saip`]), templates and their
//! personalization ([`template`], [`params`]), bulk generation
//! ([`generate`]) and protection at rest ([`protect`]).

pub mod generate;
pub mod params;
pub mod protect;
pub mod saip;
pub mod template;
