//! ES9+ (LPA -> SM-DP+), SGP.22 §5.6 and the JSON binding §6.5.2.6-6.5.2.10.

pub mod dto;
