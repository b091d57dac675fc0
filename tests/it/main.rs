//! The integration tests, in one binary: each module was a test crate of
//! its own, and linking the whole library into each of them cost more than
//! compiling it. Run one module with `cargo test --test it store_es9::`.
//!
//! They share one process: a test sets environment variables, limits and
//! the current directory on the child processes it starts, never on itself.

mod asn1_samples;
mod common;

mod asn1_capture;
mod asn1_fuzz;
mod asn1_roundtrip;
mod cli_help;
mod concurrency;
mod crypto_kat;
mod deploy_files;
mod durability;
mod es2plus_api;
mod es9_capture;
mod es9plus_download;
mod es9plus_eligibility;
mod es9plus_limits;
mod hsm;
mod key_rotation;
mod listener_certs;
mod listener_limits;
mod load_download;
mod load_es2;
mod mobileplans_access;
mod mobileplans_decision;
mod mobileplans_getbalance;
mod mobileplans_hold;
mod mobileplans_portal;
mod mobileplans_release;
mod mobileplans_walled_garden;
mod multinode;
mod openapi;
mod outbox;
mod pki_euicc;
mod profiles_export;
mod profiles_generate;
mod profiles_import;
mod request_tracing;
mod saip_fuzz;
mod saip_generate;
mod saip_independent;
mod saip_roundtrip;
mod smdp_address;
mod storage_faults;
mod store_counts;
mod store_es9;
mod store_migrate;
mod store_mobileplans;
mod store_outbox;
mod store_pg_sql;
mod store_postgres;
mod store_props;
mod store_seen;
mod test_clock;
