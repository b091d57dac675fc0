//! Profile packages: protection at rest ([`protect`]).

pub mod protect;
