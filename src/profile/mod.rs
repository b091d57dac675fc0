//! Profile packages: protection at rest ([`protect`]).

pub mod protect;
pub mod rotate;
