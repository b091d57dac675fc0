//! smdpplus: a GSMA SGP.22 v2.2 SM-DP+.
//!
//! # Layout
//! A request's path through the code:
//! - [`server`] wires the listeners, workers and shutdown around the shared
//!   [`app::App`];
//! - [`http`] accepts TLS, serves HTTP/1.1, records metrics and renders the
//!   GSMA JSON envelope;
//! - [`es2plus`] parses ES2+ calls into store [`store::Command`]s;
//! - [`store`] applies them atomically and durably, with the lifecycle table
//!   in [`store::lifecycle`];
//! - [`es2plus::notify`] delivers ES2+ notifications from the outbox;
//! - [`sweeper`] and [`rotation`] keep time-driven promises (expiry,
//!   scheduled releases, key rotation) and [`ops`] serves metrics and health.
//!
//! Beside that path: [`asn1`] decodes and encodes the ES9+ DER data objects
//! (strict DER TLV layer in [`asn1::der`], one type per RSP data object in
//! [`asn1::rsp`]), [`crypto`] holds the SGP.22 cryptography (ECDSA, ECKA, the
//! BSP key derivation and SCP03t) and [`pki`] the certificates.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod asn1;
pub mod b64;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod error;
pub mod es2plus;
pub mod es9plus;
pub mod euicc;
pub mod getbalance;
pub mod hsm;
pub mod http;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod mobileplans;
pub mod ops;
pub mod pki;
pub mod profile;
pub mod rotation;
pub mod server;
pub mod store;
pub mod sweeper;
pub mod time;
