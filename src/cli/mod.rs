//! The `smdpplus` command line: `serve`; operator tooling that talks to a
//! running server over mutual TLS (`es2`, `profiles`, `outbox`) or writes
//! the store of a stopped one (`profiles generate`, `profiles import`,
//! `keys`); `store migrate`, which brings a PostgreSQL store's schema up
//! to date and moves a stopped server's sled store into it; the software
//! eUICC (`euicc`); and a load generator (`load`).

mod health;
mod hsm;
mod load;
mod load_download;
mod load_es2;
mod measure;
mod store;

use crate::config::{Config, FileConfig, Overrides, StoreConfig};
use crate::es2plus::{self, Function};
use crate::http::client::Client;
use crate::http::tls;
use crate::pki::dev::DevPki;
use crate::store::pg::Postgres;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// smdpplus: a GSMA SGP.22 SM-DP+.
#[derive(Parser, Debug)]
#[command(name = "smdpplus", version, about)]
pub struct Cli {
    /// Log format. Levels come from RUST_LOG (default `info`).
    #[arg(
        long,
        global = true,
        env = "SMDPPLUS_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Cmd,
}

/// How logs are written on stderr.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal only).
    Text,
    /// One JSON object a line.
    Json,
}

/// Commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the server: ES9+, ES2+ (with the admin API), operations
    /// (metrics, health), operator web (Mobile Plans portal and callback
    /// decision API) and GetBalance listeners.
    Serve(ServeArgs),
    /// Call ES2+ functions on a running server.
    Es2 {
        /// Connection options.
        #[command(flatten)]
        conn: ConnArgs,
        /// The function.
        #[command(subcommand)]
        call: Es2Call,
    },
    /// Manage profiles: list, show, add, set-expiry and export call a
    /// running server; generate and import write the store directly and
    /// need the server stopped.
    Profiles {
        /// Connection options.
        #[command(flatten)]
        conn: ConnArgs,
        /// The action.
        #[command(subcommand)]
        action: ProfilesCmd,
    },
    /// Master key management, and keys on a PKCS#11 token (`[hsm]`).
    Keys {
        /// The action.
        #[command(subcommand)]
        action: KeysCmd,
    },
    /// A software eUICC: smoke-test any SM-DP+ over ES9+.
    Euicc {
        /// The action.
        #[command(subcommand)]
        action: EuiccCmd,
    },
    /// Print the Windows Mobile Plans walled garden: the hosts the operator
    /// must zero-rate (Microsoft's, this deployment's portal and GetBalance).
    WalledGarden {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// TOML config file (for `[mobile_plans]` and `smdp_address`).
        #[arg(long, env = "SMDPPLUS_CONFIG")]
        config: Option<PathBuf>,
        /// SM-DP+ address (the default portal and GetBalance host).
        #[arg(long, env = "SMDPPLUS_SMDP_ADDRESS")]
        smdp_address: Option<String>,
    },
    /// Load generators for latency measurements.
    Load {
        /// What to load.
        #[command(subcommand)]
        action: LoadCmd,
    },
    /// Check a running server's operations endpoint (for container and
    /// service health checks): exit status 0 when it answers 200.
    Health {
        /// Plain-HTTP URL of the endpoint.
        #[arg(long, default_value = "http://127.0.0.1:9090/readyz")]
        url: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Manage the PostgreSQL store's schema (`[store] engine = "postgres"`)
    /// and move a sled store into it.
    Store {
        /// The action.
        #[command(subcommand)]
        action: StoreCmd,
    },
    /// Inspect the ES2+ notification outbox of a running server.
    Outbox {
        /// Connection options.
        #[command(flatten)]
        conn: ConnArgs,
        /// The action.
        #[command(subcommand)]
        action: OutboxCmd,
    },
}

/// `serve` options. Each overrides the config file.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "SMDPPLUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (sled database and dev PKI).
    #[arg(long, env = "SMDPPLUS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// SM-DP+ address (FQDN, `:port` when not 443) used in activation codes
    /// and confirmOrder; its host names the dev TLS certificate. Default:
    /// `localhost` with the ES9+ listener's port.
    #[arg(long, env = "SMDPPLUS_SMDP_ADDRESS")]
    pub smdp_address: Option<String>,
    /// ES9+ listen address.
    #[arg(long, env = "SMDPPLUS_ES9_LISTEN")]
    pub es9_listen: Option<SocketAddr>,
    /// ES2+ listen address.
    #[arg(long, env = "SMDPPLUS_ES2_LISTEN")]
    pub es2_listen: Option<SocketAddr>,
    /// Operations (metrics, health) listen address.
    #[arg(long, env = "SMDPPLUS_OPS_LISTEN")]
    pub ops_listen: Option<SocketAddr>,
    /// Operator-web (Mobile Plans callback decision API) listen address.
    #[arg(long, env = "SMDPPLUS_OPERATOR_WEB_LISTEN")]
    pub operator_web_listen: Option<SocketAddr>,
    /// GetBalance API listen address.
    #[arg(long, env = "SMDPPLUS_GETBALANCE_LISTEN")]
    pub getbalance_listen: Option<SocketAddr>,
    /// Tests only, in debug builds: the clock can be moved forward with
    /// `POST /test/clock?advance=SECONDS` on the operations listener.
    #[cfg(debug_assertions)]
    #[arg(long, hide = true, env = "SMDPPLUS_TEST_CLOCK")]
    pub test_clock: bool,
}

/// How to reach a running server's ES2+ listener.
#[derive(Args, Debug)]
pub struct ConnArgs {
    /// ES2+ base URL.
    #[arg(
        long,
        global = true,
        env = "SMDPPLUS_ES2_URL",
        default_value = "https://localhost:8444"
    )]
    pub server: String,
    /// Data directory whose dev PKI provides the defaults below.
    #[arg(
        long,
        global = true,
        env = "SMDPPLUS_DATA_DIR",
        default_value = "./smdpplus-data"
    )]
    pub data_dir: PathBuf,
    /// Configuration file: `profiles generate` and `profiles import` write
    /// to the store and use the master key it names (a PostgreSQL store is
    /// written beside running servers).
    #[arg(long, global = true, env = "SMDPPLUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Client certificate (default: `<data-dir>/pki/operator-client.crt`).
    #[arg(long, global = true)]
    pub cert: Option<PathBuf>,
    /// Client key (default: `<data-dir>/pki/operator-client.key`).
    #[arg(long, global = true)]
    pub key: Option<PathBuf>,
    /// CA that signed the server certificate (default: `<data-dir>/pki/ci.crt`).
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// functionRequesterIdentifier (default: the client certificate's CN).
    #[arg(long, global = true)]
    pub requester: Option<String>,
}

/// ES2+ calls.
#[derive(Subcommand, Debug)]
pub enum Es2Call {
    /// ES2+.DownloadOrder.
    DownloadOrder {
        /// EID to link.
        #[arg(long)]
        eid: Option<String>,
        /// ICCID to reserve.
        #[arg(long)]
        iccid: Option<String>,
        /// Profile type to pick from.
        #[arg(long)]
        profile_type: Option<String>,
        /// functionCallIdentifier (default: random).
        #[arg(long)]
        call_id: Option<String>,
    },
    /// ES2+.ConfirmOrder.
    ConfirmOrder {
        /// ICCID.
        #[arg(long)]
        iccid: String,
        /// EID.
        #[arg(long)]
        eid: Option<String>,
        /// MatchingID (default: generated by the SM-DP+).
        #[arg(long)]
        matching_id: Option<String>,
        /// Confirmation code.
        #[arg(long)]
        confirmation_code: Option<String>,
        /// SM-DS address.
        #[arg(long)]
        smds_address: Option<String>,
        /// Release the profile at once (releaseFlag).
        #[arg(long)]
        release: bool,
        /// functionCallIdentifier (default: random).
        #[arg(long)]
        call_id: Option<String>,
    },
    /// ES2+.ReleaseProfile.
    Release {
        /// ICCID.
        #[arg(long)]
        iccid: String,
        /// functionCallIdentifier (default: random).
        #[arg(long)]
        call_id: Option<String>,
    },
    /// ES2+.CancelOrder.
    Cancel {
        /// ICCID.
        #[arg(long)]
        iccid: String,
        /// EID (required when the order has one).
        #[arg(long)]
        eid: Option<String>,
        /// MatchingID (required when the order has one).
        #[arg(long)]
        matching_id: Option<String>,
        /// finalProfileStatusIndicator: Available or Unavailable.
        #[arg(long, default_value = "Available")]
        final_status: String,
        /// functionCallIdentifier (default: random).
        #[arg(long)]
        call_id: Option<String>,
    },
}

/// Profile actions.
#[derive(Subcommand, Debug)]
pub enum ProfilesCmd {
    /// List profiles.
    List {
        /// Only this state (Available, Allocated, Linked, Confirmed, Released, ...).
        #[arg(long)]
        state: Option<String>,
        /// Only this profile type.
        #[arg(long = "type")]
        profile_type: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Show one profile: state and history.
    Show {
        /// ICCID.
        iccid: String,
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Add profiles to the inventory (placeholder packages unless --package).
    Add {
        /// Profile type.
        #[arg(long = "type")]
        profile_type: String,
        /// A profile package (DER) for every ICCID given.
        #[arg(long)]
        package: Option<PathBuf>,
        /// ICCIDs (with a valid Luhn digit).
        #[arg(required = true)]
        iccids: Vec<String>,
    },
    /// Generate personalized template-based profiles straight into the
    /// store of a stopped server (offline), and write the operator's
    /// ICCID,IMSI,KI,OPC file for the HSS/AuC.
    Generate {
        /// Template file (default: the shipped profiles/smdpplus-usim.toml).
        #[arg(long)]
        template: Option<PathBuf>,
        /// How many profiles.
        #[arg(long)]
        count: u64,
        /// First ICCID without its check digit (18 or 19 digits).
        #[arg(long)]
        iccid_start: String,
        /// First IMSI.
        #[arg(long)]
        imsi_start: String,
        /// Profile type to file them under.
        #[arg(long)]
        profile_type: String,
        /// Owning operator (default: the first configured, `dev-operator`).
        #[arg(long, default_value = crate::config::DEV_OPERATOR)]
        operator: String,
        /// Operator output file (default: `<data-dir>/out/<type>-<unix time>.csv`).
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Import profiles straight into the store of a stopped server: an
    /// operator input file (CSV: ICCID,IMSI,KI,OPC[,profileType]) with a
    /// template, or a folder of finished packages (*.der). Every row is
    /// checked first; any bad row is reported with its line or file and
    /// nothing is imported. A CSV is read twice, batch by batch (checked,
    /// then stored), so memory stays bounded; a batch whose bytes changed
    /// since the check is not stored, and the command stops there (the
    /// batches stored before it stay, as after an interrupted import).
    Import {
        /// Operator input file (CSV).
        #[arg(long, conflicts_with = "dir")]
        csv: Option<PathBuf>,
        /// Folder of unprotected profile packages (DER).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Template for CSV rows (default: the shipped one).
        #[arg(long)]
        template: Option<PathBuf>,
        /// Profile type: for --csv, of the rows without a profileType
        /// column; for --dir, of every package, overriding its
        /// ProfileHeader's profileType (without it, the header's type).
        #[arg(long)]
        profile_type: Option<String>,
        /// Owning operator.
        #[arg(long, default_value = crate::config::DEV_OPERATOR)]
        operator: String,
        /// Lines of the CSV checked together on all cores and stored in
        /// one write; the memory the import needs grows with it.
        #[arg(long, default_value_t = crate::profile::import::CSV_BATCH_LINES,
              value_parser = positive_count)]
        batch_lines: usize,
    },
    /// Write a profile's package in clear (DER) to a file, for operators
    /// debugging their own test inventory. Needs --unprotected.
    Export {
        /// ICCID.
        iccid: String,
        /// Acknowledge that the output holds the profile's secrets in clear.
        #[arg(long)]
        unprotected: bool,
        /// Output file (created with mode 0600).
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Set the expiry of an open order (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    SetExpiry {
        /// ICCID.
        iccid: String,
        /// New expiry.
        #[arg(long)]
        expires_at: String,
    },
}

/// Master key actions.
#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Add a new master key and re-wrap every stored secret under it. With
    /// the server running (its pid file in the data directory), the server
    /// re-wraps while it keeps serving; otherwise this command does it.
    /// With `[hsm] master_key_label` in the configuration, the new key is
    /// a non-extractable AES-256 key generated on the token (a key file's
    /// keys are retired: this moves the master key onto the token).
    RotateMaster {
        /// Configuration file (for `[hsm]`, `data_dir`, `master_key_file`).
        #[arg(long, env = "SMDPPLUS_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory (default: the configuration's, else
        /// `./smdpplus-data`).
        #[arg(long, env = "SMDPPLUS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Master key file (default: `<data-dir>/master.key`).
        #[arg(long)]
        master_key_file: Option<PathBuf>,
        /// How long to wait for a running server to finish, in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
    /// Put private keys on the `[hsm]` token of the configuration: by
    /// default the SGP.26 TEST SM-DP+ DPauth and DPpb keys (NIST P-256 and
    /// brainpoolP256r1) under the labels dpauth-nist, dppb-nist,
    /// dpauth-brp and dppb-brp; with --key, the given PEM keys. Each goes
    /// on as a sensitive, non-extractable private key and its public key;
    /// a label that already holds the same key is left alone. The PIN
    /// comes from `[hsm] pin_file` or SMDPPLUS_HSM_PIN.
    HsmImport {
        /// Configuration file with an `[hsm]` section.
        #[arg(long, env = "SMDPPLUS_CONFIG")]
        config: PathBuf,
        /// LABEL=FILE: a PEM key (SEC1 `EC PRIVATE KEY`, or PKCS#8
        /// `PRIVATE KEY` for NIST P-256 such as a TLS key) to put on the
        /// token as CKA_LABEL LABEL; repeatable.
        #[arg(long = "key", value_name = "LABEL=FILE")]
        keys: Vec<String>,
    },
    /// Show what the `[hsm]` token holds and which keys the configuration
    /// expects on it: each is checked as the server's start checks it
    /// (present, the key of its certificate, a test signature verifies).
    /// Exits 1 when one is missing or does not match.
    HsmList {
        /// Configuration file with an `[hsm]` section.
        #[arg(long, env = "SMDPPLUS_CONFIG")]
        config: PathBuf,
    },
}

/// Software eUICC actions.
#[derive(Subcommand, Debug)]
pub enum EuiccCmd {
    /// Download and install a profile, printing each step and the ICCID.
    Download {
        /// SM-DP+ address, HOST[:PORT].
        #[arg(long)]
        smdp: String,
        /// MatchingID from the activation code.
        #[arg(long)]
        matching_id: Option<String>,
        /// Confirmation code.
        #[arg(long)]
        confirmation_code: Option<String>,
        /// Accept any TLS server certificate (lpac does not verify either).
        #[arg(long)]
        insecure: bool,
        /// CA file for the TLS server certificate (default: the SGP.26 test CI).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Use the SGP.26 brainpoolP256r1 test eUICC instead of the NIST one.
        #[arg(long)]
        brainpool: bool,
    },
}

/// Load generators.
#[derive(Subcommand, Debug)]
pub enum LoadCmd {
    /// GetBalance at a fixed rate over kept-alive connections; prints the
    /// latency percentiles, measured from each request's scheduled time.
    Getbalance {
        /// GetBalance listener, HOST:PORT.
        #[arg(long, default_value = "127.0.0.1:8446")]
        target: String,
        /// TLS server name.
        #[arg(long, default_value = "localhost")]
        server_name: String,
        /// ICCID to ask for.
        #[arg(long, default_value = "8999900000000000006")]
        iccid: String,
        /// Requests per second.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        /// CA of the server certificate (default: `<data-dir>/pki/ci.crt`).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Client certificate (mutual TLS mode).
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Client key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Basic credentials, USER:PASSWORD (basic mode).
        #[arg(long)]
        basic: Option<String>,
        /// Data directory whose dev PKI gives the CA default.
        #[arg(long, env = "SMDPPLUS_DATA_DIR", default_value = "./smdpplus-data")]
        data_dir: PathBuf,
    },
    /// Whole profile downloads (ES9+) by many software eUICCs, on orders
    /// placed over ES2+ first; prints downloads/s, latency percentiles per
    /// step, errors, server and client CPU per session, and the ratio of
    /// the server's CPU to its cryptographic floor.
    Download(Box<load_download::DownloadArgs>),
    /// ES2+ DownloadOrder + ConfirmOrder pairs over kept-alive mutual-TLS
    /// connections; prints pairs/s, latency percentiles per function,
    /// errors, and server and client CPU per pair.
    Es2(Box<load_es2::Es2Args>),
}

/// Outbox actions.
#[derive(Subcommand, Debug)]
pub enum OutboxCmd {
    /// List pending notifications.
    List {
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
    },
}

/// Store actions.
#[derive(Subcommand, Debug)]
pub enum StoreCmd {
    /// Apply the PostgreSQL schema migrations this build has and the
    /// database lacks, and print what was applied; with `--from sled:PATH
    /// --to postgres`, then copy everything from that sled store into
    /// PostgreSQL (profiles with their packages as stored, history, outbox,
    /// kept packages, idempotency records, balances, GetBalance transaction
    /// ids, Mobile Plans orders; not the short-lived RSP sessions) in
    /// resumable batches, and verify counts and checksums per table. The
    /// database URL comes from SMDPPLUS_STORE_URL or the config's `[store]`
    /// section (`url_file`), never with a password on the command line.
    Migrate(StoreMigrateArgs),
    /// Check the sled store's profile counts (per state and per available
    /// pool, which the store keeps so that it starts without reading every
    /// record) against a count of every record; exits 1 on a difference.
    /// Runs offline: stop the server first.
    Check(StoreCheckArgs),
}

/// `store check` options.
#[derive(Args, Debug)]
pub struct StoreCheckArgs {
    /// Data directory holding the sled store.
    #[arg(long, env = "SMDPPLUS_DATA_DIR", default_value = "./smdpplus-data")]
    pub data_dir: PathBuf,
    /// TOML config file (its data directory and `[store]` section).
    #[arg(long, env = "SMDPPLUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Replace the kept counts with those of the records.
    #[arg(long)]
    pub repair: bool,
}

/// `store migrate` options.
#[derive(Args, Debug)]
pub struct StoreMigrateArgs {
    /// TOML config file (its `[store]` section).
    #[arg(long, env = "SMDPPLUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Copy from this sled store: `sled:PATH`, where PATH is a data
    /// directory (its `db` folder holds the store) or that `db` folder
    /// itself. The server using it must be stopped.
    #[arg(long, value_name = "sled:PATH", requires = "to")]
    pub from: Option<String>,
    /// Where to copy: `postgres`, the PostgreSQL store the configuration
    /// names (`[store]` with `url_file`, or SMDPPLUS_STORE_URL). A
    /// `postgres://` URL is accepted only without a password in it.
    #[arg(long, value_name = "postgres", requires = "from")]
    pub to: Option<String>,
    /// Profiles (each with its history) or other records per batch; each
    /// batch is one transaction.
    #[arg(long, default_value_t = 1000, requires = "from")]
    pub batch_size: usize,
    /// For tests of resuming: stop with an error after this many batches.
    #[arg(long, hide = true)]
    pub stop_after_batches: Option<usize>,
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Cmd::Serve(a) => serve(a).await,
        Cmd::Es2 { conn, call } => es2(conn, call).await,
        Cmd::Profiles { conn, action } => profiles(conn, action).await,
        Cmd::Outbox {
            conn,
            action: OutboxCmd::List { json },
        } => outbox(conn, json).await,
        Cmd::Euicc { action } => euicc(action).await,
        Cmd::Store {
            action: StoreCmd::Migrate(a),
        } => store_migrate(a).await,
        Cmd::Store {
            action: StoreCmd::Check(a),
        } => store::check(a),
        Cmd::Keys { action } => keys(action).await,
        Cmd::Load { action } => load_cmd(action).await,
        Cmd::Health { url, timeout_secs } => {
            health::run(&url, Duration::from_secs(timeout_secs.max(1))).await
        }
        Cmd::WalledGarden {
            json,
            config,
            smdp_address,
        } => walled_garden(json, config, smdp_address),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smdpplus: {e}");
            ExitCode::FAILURE
        }
    }
}

fn walled_garden(
    json: bool,
    config: Option<PathBuf>,
    smdp_address: Option<String>,
) -> Result<ExitCode, String> {
    use crate::mobileplans::walled_garden;
    let file = match &config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let c = Config::resolve(
        file,
        Overrides {
            smdp_address,
            ..Overrides::default()
        },
    );
    let hosts = walled_garden::hosts(&c)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&walled_garden::json(&hosts)).unwrap_or_default()
        );
    } else {
        print!("{}", walled_garden::text(&hosts));
    }
    Ok(ExitCode::SUCCESS)
}

async fn load_cmd(action: LoadCmd) -> Result<ExitCode, String> {
    use base64::Engine;
    let action = match action {
        LoadCmd::Download(a) => return load_download::run(*a).await,
        LoadCmd::Es2(a) => return load_es2::run(*a).await,
        other => other,
    };
    let LoadCmd::Getbalance {
        target,
        server_name,
        iccid,
        rate,
        duration_secs,
        ca,
        cert,
        key,
        basic,
        data_dir,
    } = action
    else {
        return Err("unknown load generator".into());
    };
    let ca = ca.unwrap_or_else(|| DevPki::paths(&data_dir).ci_cert);
    let tls = load::client_tls(&ca, cert.as_deref(), key.as_deref())?;
    let authorization = basic.map(|b| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(b)
        )
    });
    println!("GetBalance load: {rate} requests/s for {duration_secs} s against {target}");
    let r = load::getbalance(load::LoadArgs {
        target,
        server_name,
        iccid,
        rate,
        duration_secs,
        tls,
        authorization,
    })
    .await?;
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "sent {} in {:.1} s ({:.0}/s) over {} connections; answers by status: {:?}",
        r.sent,
        r.elapsed.as_secs_f64(),
        r.sent as f64 / r.elapsed.as_secs_f64().max(1e-9),
        r.connections,
        r.statuses
    );
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(r.quantile(0.5)),
        ms(r.quantile(0.9)),
        ms(r.quantile(0.99)),
        ms(r.quantile(0.999)),
        ms(r.latencies_us.last().copied().unwrap_or(0))
    );
    let all_ok = r.statuses.keys().all(|s| *s == 200) && r.latencies_us.len() == r.sent;
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn serve(a: ServeArgs) -> Result<ExitCode, String> {
    #[cfg(debug_assertions)]
    if a.test_clock {
        crate::time::test_clock::enable();
        tracing::info!("test clock: POST /test/clock?advance=SECONDS moves time forward");
    }
    let file = match &a.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let config = Config::resolve(
        file,
        Overrides {
            data_dir: a.data_dir,
            smdp_address: a.smdp_address,
            es9_listen: a.es9_listen,
            es2_listen: a.es2_listen,
            ops_listen: a.ops_listen,
            operator_web_listen: a.operator_web_listen,
            getbalance_listen: a.getbalance_listen,
        },
    );
    crate::server::run(config)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// `smdpplus store migrate`.
async fn store_migrate(a: StoreMigrateArgs) -> Result<ExitCode, String> {
    if a.from.is_some() {
        return store::copy(a).await;
    }
    let file = match &a.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let config = Config::resolve(file, Overrides::default());
    let StoreConfig::Postgres(pg) = config.store_config()? else {
        return Err(
            "store migrate applies the PostgreSQL schema: set [store] engine = \"postgres\" \
             (and the URL in SMDPPLUS_STORE_URL, [store] url_file or [store] url)"
                .into(),
        );
    };
    apply_schema(&pg).await?;
    Ok(ExitCode::SUCCESS)
}

/// Applies the pending schema migrations and prints what it did.
async fn apply_schema(pg: &crate::config::PostgresConfig) -> Result<(), String> {
    let db = Postgres::connect(pg).await.map_err(|e| e.to_string())?;
    let applied = db.migrate().await.map_err(|e| e.to_string())?;
    let status = db.check_schema().await.map_err(|e| e.to_string())?;
    for m in &applied {
        println!("applied V{}__{}", m.version, m.name);
    }
    if applied.is_empty() {
        println!(
            "nothing to apply: the schema is at version {}",
            status.version
        );
    } else {
        println!("the schema is at version {}", status.version);
    }
    Ok(())
}

struct Remote {
    client: Client,
    base: String,
    requester: String,
}

/// The ES2+ client's TLS config (operator certificate, the CA of the
/// server) and the requester it names in headers (its CN unless given).
fn es2_tls(c: &ConnArgs) -> Result<(std::sync::Arc<rustls::ClientConfig>, String), String> {
    let dev = DevPki::paths(&c.data_dir);
    let cert = c.cert.clone().unwrap_or(dev.operator_client_cert);
    let key = c.key.clone().unwrap_or(dev.operator_client_key);
    let ca = c.ca.clone().unwrap_or(dev.ci_cert);
    let id = tls::Identity::load(&cert, &key).map_err(|e| e.to_string())?;
    let requester = match &c.requester {
        Some(r) => r.clone(),
        None => id
            .chain
            .first()
            .and_then(|c| crate::pki::common_name(c))
            .ok_or("the client certificate has no CN; pass --requester")?,
    };
    let cfg = tls::client(&[ca.as_path()], Some(&id), false).map_err(|e| e.to_string())?;
    Ok((cfg, requester))
}

fn remote(c: &ConnArgs) -> Result<Remote, String> {
    let (cfg, requester) = es2_tls(c)?;
    Ok(Remote {
        client: Client::new(cfg, Duration::from_secs(30)),
        base: c.server.trim_end_matches('/').to_owned(),
        requester,
    })
}

fn call_id(given: Option<String>) -> String {
    given.unwrap_or_else(|| {
        let r: [u8; 8] = rand::random();
        format!("cli-{}", hex::encode(r))
    })
}

async fn es2(conn: ConnArgs, call: Es2Call) -> Result<ExitCode, String> {
    let r = remote(&conn)?;
    let (f, id, body) = match call {
        Es2Call::DownloadOrder {
            eid,
            iccid,
            profile_type,
            call_id: c,
        } => (
            Function::DownloadOrder,
            c,
            serde_json::to_value(es2plus::DownloadOrder {
                eid,
                iccid,
                profile_type,
            }),
        ),
        Es2Call::ConfirmOrder {
            iccid,
            eid,
            matching_id,
            confirmation_code,
            smds_address,
            release,
            call_id: c,
        } => (
            Function::ConfirmOrder,
            c,
            serde_json::to_value(es2plus::ConfirmOrder {
                iccid,
                eid,
                matching_id,
                confirmation_code,
                smds_address,
                release_flag: release,
            }),
        ),
        Es2Call::Release { iccid, call_id: c } => (
            Function::ReleaseProfile,
            c,
            serde_json::to_value(es2plus::ReleaseProfile { iccid }),
        ),
        Es2Call::Cancel {
            iccid,
            eid,
            matching_id,
            final_status,
            call_id: c,
        } => (
            Function::CancelOrder,
            c,
            serde_json::to_value(es2plus::CancelOrder {
                iccid,
                eid,
                matching_id,
                final_profile_status_indicator: final_status,
            }),
        ),
    };
    let body = body.map_err(|e| e.to_string())?;
    let msg = es2plus::request_message(&r.requester, &call_id(id), &body);
    let resp = r
        .client
        .post_gsma(&format!("{}{}", r.base, f.path()), msg)
        .await?;
    let v: Value = serde_json::from_slice(&resp.body)
        .map_err(|e| format!("HTTP {}: not JSON: {e}", resp.status))?;
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    let ok = resp.status == 200
        && v["header"]["functionExecutionStatus"]["status"] == "Executed-Success";
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn admin(
    r: &Remote,
    method: hyper::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    use crate::http::api::Api;
    let url = format!("{}{}/{}", r.base, crate::admin::Admin::PREFIX, path);
    let bytes = body
        .map(|b| serde_json::to_vec(&b).unwrap_or_default())
        .unwrap_or_default();
    let resp = r
        .client
        .request(method, &url, &[("content-type", "application/json")], bytes)
        .await?;
    let v: Value = serde_json::from_slice(&resp.body)
        .map_err(|e| format!("HTTP {}: not JSON: {e}", resp.status))?;
    if !(200..300).contains(&resp.status) {
        return Err(format!(
            "HTTP {}: {}",
            resp.status,
            v["error"].as_str().unwrap_or("error")
        ));
    }
    Ok(v)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

async fn profiles(conn: ConnArgs, action: ProfilesCmd) -> Result<ExitCode, String> {
    if let ProfilesCmd::Generate {
        template,
        count,
        iccid_start,
        imsi_start,
        profile_type,
        operator,
        csv,
    } = action
    {
        let data_dir = conn.data_dir.clone();
        let config = conn.config.clone();
        return tokio::task::spawn_blocking(move || {
            generate_offline(
                &data_dir,
                config.as_deref(),
                template.as_deref(),
                count,
                &iccid_start,
                &imsi_start,
                &profile_type,
                &operator,
                csv,
            )
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    if let ProfilesCmd::Import {
        csv,
        dir,
        template,
        profile_type,
        operator,
        batch_lines,
    } = action
    {
        let data_dir = conn.data_dir.clone();
        let config = conn.config.clone();
        return tokio::task::spawn_blocking(move || {
            import_offline(
                &data_dir,
                config.as_deref(),
                csv,
                dir,
                template,
                profile_type,
                &operator,
                batch_lines,
            )
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    let r = remote(&conn)?;
    match action {
        ProfilesCmd::List {
            state,
            profile_type,
            limit,
            json,
        } => {
            let mut q = format!("profiles?limit={limit}");
            if let Some(st) = state {
                q.push_str(&format!("&state={st}"));
            }
            if let Some(t) = profile_type {
                q.push_str(&format!("&profileType={t}"));
            }
            let v = admin(&r, hyper::Method::GET, &q, None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!(
                    "{:<21} {:<11} {:<12} {:<33} MATCHING ID",
                    "ICCID", "STATE", "TYPE", "EID"
                );
                for p in v["profiles"].as_array().into_iter().flatten() {
                    println!(
                        "{:<21} {:<11} {:<12} {:<33} {}",
                        s(&p["iccid"]),
                        s(&p["state"]),
                        s(&p["profileType"]),
                        s(&p["eid"]),
                        s(&p["matchingId"])
                    );
                }
            }
        }
        ProfilesCmd::Show { iccid, json } => {
            let v = admin(&r, hyper::Method::GET, &format!("profiles/{iccid}"), None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                let p = &v["profile"];
                println!("ICCID        {}", s(&p["iccid"]));
                println!("state        {}", s(&p["state"]));
                println!("profileType  {}", s(&p["profileType"]));
                println!("EID          {}", s(&p["eid"]));
                println!("matchingId   {}", s(&p["matchingId"]));
                println!("expires      {}", s(&p["expiresAt"]));
                println!("history:");
                for h in v["history"].as_array().into_iter().flatten() {
                    println!(
                        "  {}  {:<16} {:>11} -> {:<11} by {}",
                        s(&h["at"]),
                        s(&h["event"]),
                        s(&h["from"]),
                        s(&h["to"]),
                        s(&h["caller"])
                    );
                }
            }
        }
        ProfilesCmd::Add {
            profile_type,
            package,
            iccids,
        } => {
            use base64::Engine;
            let pkg = match package {
                Some(p) => Some(
                    base64::engine::general_purpose::STANDARD
                        .encode(std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?),
                ),
                None => None,
            };
            let items: Vec<Value> = iccids
                .iter()
                .map(|i| json!({"iccid": i, "profileType": profile_type, "package": pkg}))
                .collect();
            let v = admin(
                &r,
                hyper::Method::POST,
                "profiles",
                Some(json!({ "profiles": items })),
            )
            .await?;
            println!("added {}", v["added"]);
        }
        ProfilesCmd::Generate { .. } | ProfilesCmd::Import { .. } => unreachable_generate()?,
        ProfilesCmd::Export {
            iccid,
            unprotected,
            output,
        } => {
            use base64::Engine;
            if !unprotected {
                return Err("refusing to export a profile package without --unprotected: the file holds its secrets in clear".into());
            }
            let v = admin(
                &r,
                hyper::Method::GET,
                &format!("profiles/{iccid}/package?unprotected=true"),
                None,
            )
            .await?;
            let der = base64::engine::general_purpose::STANDARD
                .decode(v["package"].as_str().unwrap_or_default())
                .map_err(|e| e.to_string())?;
            write_private(&output, &der).map_err(|e| format!("{}: {e}", output.display()))?;
            println!(
                "wrote {} bytes to {} (mode 0600; it holds the profile's keys in clear)",
                der.len(),
                output.display()
            );
        }
        ProfilesCmd::SetExpiry { iccid, expires_at } => {
            let v = admin(
                &r,
                hyper::Method::PUT,
                &format!("profiles/{iccid}/expiry"),
                Some(json!({ "expiresAt": expires_at })),
            )
            .await?;
            println!("{} expires at {}", iccid, s(&v["profile"]["expiresAt"]));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn outbox(conn: ConnArgs, json: bool) -> Result<ExitCode, String> {
    let r = remote(&conn)?;
    let v = admin(&r, hyper::Method::GET, "outbox", None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!(
            "{:<6} {:<21} {:<6} {:<17} {:<9} LAST ERROR",
            "ID", "ICCID", "POINT", "STATUS", "ATTEMPTS"
        );
        for o in v["items"].as_array().into_iter().flatten() {
            println!(
                "{:<6} {:<21} {:<6} {:<17} {:<9} {}",
                o["id"].as_u64().unwrap_or_default(),
                s(&o["iccid"]),
                o["notificationPointId"].as_u64().unwrap_or_default(),
                s(&o["status"]),
                o["attempts"].as_u64().unwrap_or_default(),
                s(&o["lastError"])
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn euicc(action: EuiccCmd) -> Result<ExitCode, String> {
    let EuiccCmd::Download {
        smdp,
        matching_id,
        confirmation_code,
        insecure,
        ca,
        brainpool,
    } = action;
    let roots = match ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in crate::pki::load_certs(&path).map_err(|e| e.to_string())? {
                roots.add(c).map_err(|e| e.to_string())?;
            }
            roots
        }
        None => crate::euicc::lpa::Lpa::sgp26_roots(),
    };
    let lpa = crate::euicc::lpa::Lpa::new(&smdp, roots, insecure).map_err(|e| e.to_string())?;
    let mut card = if brainpool {
        crate::euicc::SoftEuicc::sgp26_brainpool()
    } else {
        crate::euicc::SoftEuicc::sgp26_nist()
    }
    .map_err(|e| e.to_string())?;
    println!("eUICC {} -> SM-DP+ {smdp}", card.eid());
    let mut progress = |s: &str| println!("  {s}");
    match lpa
        .download(
            &mut card,
            matching_id.as_deref(),
            confirmation_code.as_deref(),
            &mut progress,
        )
        .await
    {
        Ok(report) => {
            println!(
                "installed ICCID {} ({} bytes of profile package)",
                report.installed.iccid,
                report.installed.upp.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("download failed: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Creates a file only its owner can read.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn server_running(data_dir: &std::path::Path) -> Option<String> {
    let pid = std::fs::read_to_string(crate::app::pid_file(data_dir)).ok()?;
    let pid = pid.trim().to_owned();
    let alive = std::process::Command::new("kill")
        .args(["-0", &pid])
        .output()
        .ok()?
        .status
        .success();
    alive.then_some(pid)
}

/// Asks the running server `pid` to re-wrap every stored secret under the
/// new master key `id` (SIGHUP), then waits until the key ring read by
/// `ring_ids` names `id` alone, which the server writes once it is done.
/// `on` says where the key lives, for the messages.
async fn rewrap_online(
    pid: &str,
    id: u32,
    on: &str,
    timeout_secs: u64,
    ring_ids: impl Fn() -> Option<Vec<u32>>,
) -> Result<ExitCode, String> {
    let hup = std::process::Command::new("kill")
        .args(["-HUP", pid])
        .status()
        .map_err(|e| e.to_string())?;
    if !hup.success() {
        return Err(format!("could not signal the server (pid {pid})"));
    }
    println!("the running server (pid {pid}) re-wraps every stored secret while it serves");
    let start = std::time::Instant::now();
    let mut last_report = 0;
    loop {
        if ring_ids().is_some_and(|ids| ids == [id]) {
            println!(
                "done in {:.1} s: every secret is wrapped under key {id}{on}, the old keys are retired",
                start.elapsed().as_secs_f64()
            );
            return Ok(ExitCode::SUCCESS);
        }
        let secs = start.elapsed().as_secs();
        if secs >= timeout_secs {
            return Err(format!("the server did not finish within {timeout_secs} s; see its log and smdpplus_master_key_rewrap_pending"));
        }
        if secs >= last_report + 5 {
            last_report = secs;
            println!(
                "  still re-wrapping after {secs} s (metric smdpplus_master_key_rewrap_pending)"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn keys(action: KeysCmd) -> Result<ExitCode, String> {
    use crate::profile::protect::Keyring;
    let (config, data_dir, master_key_file, timeout_secs) = match action {
        KeysCmd::RotateMaster {
            config,
            data_dir,
            master_key_file,
            timeout_secs,
        } => (config, data_dir, master_key_file, timeout_secs),
        KeysCmd::HsmImport { config, keys } => return hsm::import(&config, &keys),
        KeysCmd::HsmList { config } => return hsm::list(&config),
    };
    let file = match &config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let mut config = Config::resolve(
        file,
        Overrides {
            data_dir,
            ..Overrides::default()
        },
    );
    if let Some(f) = master_key_file {
        config.master_key_file = f;
    }
    if config
        .hsm
        .as_ref()
        .is_some_and(|h| h.master_key_label.is_some())
    {
        return hsm::rotate_master(&config, timeout_secs).await;
    }
    let data_dir = config.data_dir.clone();
    let key_file = config.master_key_file.clone();
    if let Some(pid) = server_running(&data_dir) {
        let (mut ring, _) = Keyring::load_or_create(&key_file).map_err(|e| e.to_string())?;
        let id = ring.rotate(&key_file).map_err(|e| e.to_string())?;
        println!("added master key {id}");
        return rewrap_online(&pid, id, "", timeout_secs, || {
            Keyring::load_or_create(&key_file)
                .ok()
                .map(|(r, _)| r.ids())
        })
        .await;
    }
    let store =
        crate::store::Store::open(&data_dir.join("db"), crate::store::StoreOptions::default())
            .map_err(|e| e.to_string())?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (id, n) = crate::profile::rotate::rotate_offline(&store, &key_file, |done, total| {
        if tty && (done % 1000 == 0 || done == total) {
            print!("\r  re-wrapped {done}/{total}");
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
    })
    .map_err(|e| e.to_string())?;
    if tty {
        println!();
    }
    println!("master key {id} is current; {n} stored secrets re-wrapped; the old keys are retired");
    Ok(ExitCode::SUCCESS)
}

fn unreachable_generate() -> Result<(), String> {
    Err("generate and import run offline".into())
}

/// The master key ring, the store and the data directory for a command
/// that writes the store directly: those the configuration file names,
/// else the sled store and key of `data_dir` (made if need be; `what` names the command when a
/// running server holds that store).
fn offline_store(
    data_dir: &std::path::Path,
    config: Option<&std::path::Path>,
    what: &str,
) -> Result<
    (
        crate::profile::protect::Keyring,
        crate::store::Store,
        PathBuf,
    ),
    String,
> {
    if let Some(path) = config {
        let config = Config::resolve(FileConfig::load(path)?, Overrides::default());
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
        // The master key on the token when `[hsm] master_key_label` says so.
        let token = match &config.hsm {
            Some(h) if h.master_key_label.is_some() => {
                Some(crate::hsm::Token::open(h).map_err(|e| e.to_string())?)
            }
            _ => None,
        };
        let (ring, _) = match &token {
            Some(t) => crate::hsm::master::configured_ring(&config, Some(t))?,
            None => crate::profile::protect::Keyring::load_or_create(&config.master_key_file)
                .map_err(|e| e.to_string())?,
        };
        let store = crate::store::Store::open_configured(&config, true).map_err(|e| {
            format!("{e} (with the sled store, stop the server first: {what} writes its store directly)")
        })?;
        return Ok((ring, store, config.data_dir));
    }
    std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let (ring, _) = crate::profile::protect::Keyring::load_or_create(&data_dir.join("master.key"))
        .map_err(|e| e.to_string())?;
    let store =
        crate::store::Store::open(&data_dir.join("db"), crate::store::StoreOptions::default())
            .map_err(|e| {
                format!("{e} (stop the server first: {what} writes its store directly)")
            })?;
    Ok((ring, store, data_dir.to_owned()))
}

/// The profile package template at `path`, or the built-in one.
fn template_or_default(
    path: Option<&std::path::Path>,
) -> Result<crate::profile::template::Template, String> {
    use crate::profile::template::Template;
    match path {
        Some(p) => Template::load(p).map_err(|e| format!("{}: {e}", p.display())),
        None => {
            Template::from_toml(crate::profile::stored::DEFAULT_TEMPLATE).map_err(|e| e.to_string())
        }
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "the command's flags, passed through once"
)]
fn import_offline(
    data_dir: &std::path::Path,
    config: Option<&std::path::Path>,
    csv: Option<PathBuf>,
    dir: Option<PathBuf>,
    template: Option<PathBuf>,
    profile_type: Option<String>,
    operator: &str,
    batch_lines: usize,
) -> Result<ExitCode, String> {
    use crate::profile::import;
    let started = std::time::Instant::now();
    let (ring, store, _) = offline_store(data_dir, config, "import")?;
    let checked = match (csv, dir) {
        (Some(path), None) => {
            let tpl = template_or_default(template.as_deref())?;
            let default_type = profile_type
                .clone()
                .unwrap_or_else(|| tpl.profile_type().unwrap_or("default").to_owned());
            let csv = import::CsvImport {
                template: &tpl,
                default_type: &default_type,
                operator,
                ring: &ring,
                store: &store,
                batch_lines,
            };
            return import_csv(&csv, &path, started);
        }
        (None, Some(path)) => {
            import::check_der_dir(&path, profile_type.as_deref(), operator, &ring, &store)
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
        _ => return Err("give exactly one of --csv and --dir".into()),
    };
    let items = match checked {
        Ok(items) => items,
        Err(bad) => {
            for b in &bad {
                eprintln!("  {b}");
            }
            eprintln!("{} bad rows: nothing was imported", bad.len());
            return Ok(ExitCode::FAILURE);
        }
    };
    println!(
        "checked {} profiles in {:.1} s",
        items.len(),
        started.elapsed().as_secs_f64()
    );
    let mut progress = Progress::new("importing", items.len() as u64);
    let mut done = 0u64;
    for chunk in items.chunks(import::CSV_BATCH_LINES) {
        store
            .add_profiles(chunk, "smdpplus-cli", crate::time::now())
            .map_err(|e| e.to_string())?;
        done += chunk.len() as u64;
        progress.set(done);
    }
    store.flush_blocking().map_err(|e| e.to_string())?;
    println!(
        "imported {} profiles for {operator} in {:.1} s",
        items.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// A count of 1 or more.
fn positive_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a count of 1 or more")),
    }
}

/// `profiles import --csv`: checks the whole file, then stores it batch by
/// batch, with bounded memory (see [`crate::profile::import::CsvImport`]).
fn import_csv(
    csv: &crate::profile::import::CsvImport<'_>,
    path: &std::path::Path,
    started: std::time::Instant,
) -> Result<ExitCode, String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(|e| at(&e))?;
    let checked = csv
        .check(&mut file, &mut |b| eprintln!("  {b}"))
        .map_err(|e| at(&e))?;
    if checked.bad > 0 {
        eprintln!("{} bad rows: nothing was imported", checked.bad);
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "checked {} profiles in {:.1} s",
        checked.rows,
        started.elapsed().as_secs_f64()
    );
    let mut progress = Progress::new("importing", checked.rows);
    let stored = csv
        .store(&mut file, &checked, &mut |done| progress.set(done))
        .map_err(|e| at(&e));
    // What was stored before a failure is in the store: flushed either way.
    csv.store.flush_blocking().map_err(|e| e.to_string())?;
    let stored = stored?;
    println!(
        "imported {stored} profiles for {} in {:.1} s",
        csv.operator,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Progress on a terminal: `\r` updates, at most every 1%.
struct Progress {
    tty: bool,
    what: &'static str,
    total: u64,
    shown: u64,
}

impl Progress {
    fn new(what: &'static str, total: u64) -> Progress {
        Progress {
            tty: std::io::IsTerminal::is_terminal(&std::io::stdout()),
            what,
            total,
            shown: 0,
        }
    }

    fn set(&mut self, done: u64) {
        if !self.tty || self.total == 0 {
            return;
        }
        let step = (self.total / 100).max(1);
        if done == self.total || done >= self.shown + step {
            self.shown = done;
            let width = 40u64;
            let filled = (done * width / self.total) as usize;
            print!(
                "\r  {} [{}{}] {done}/{}",
                self.what,
                "#".repeat(filled),
                " ".repeat(width as usize - filled),
                self.total
            );
            let _ = std::io::Write::flush(&mut std::io::stdout());
            if done == self.total {
                println!();
            }
        }
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "the command's flags, passed through once"
)]
fn generate_offline(
    data_dir: &std::path::Path,
    config: Option<&std::path::Path>,
    template: Option<&std::path::Path>,
    count: u64,
    iccid_start: &str,
    imsi_start: &str,
    profile_type: &str,
    operator: &str,
    csv: Option<PathBuf>,
) -> Result<ExitCode, String> {
    use crate::profile::{generate, stored::StoredPackage};
    let started = std::time::Instant::now();
    let tpl = template_or_default(template)?;
    let (ring, store, data_dir) = offline_store(data_dir, config, "generation")?;
    let data_dir = data_dir.as_path();
    let mut rng = crate::profile::params::secret_rng();
    // Checks both ranges before anything is written.
    let mut params = generate::params_iter(&tpl, count, iccid_start, imsi_start, &mut rng)
        .map_err(|e| e.to_string())?;
    // Nothing is written if any ICCID is taken. The ICCIDs are consecutive,
    // so one range scan over the profile records answers for all of them.
    if let Some((first, last)) = generate::iccid_range(iccid_start, count) {
        if let Some(taken) = store
            .first_taken_in(&first, &last)
            .map_err(|e| e.to_string())?
        {
            return Err(format!(
                "ICCID {taken} is already in the inventory; nothing was generated"
            ));
        }
    }
    let csv_path = csv.unwrap_or_else(|| {
        data_dir
            .join("out")
            .join(format!("{profile_type}-{}.csv", crate::time::now()))
    });
    if let Some(dir) = csv_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut out = generate::OperatorCsv::create(&csv_path)
        .map_err(|e| format!("{}: {e}", csv_path.display()))?;
    let mut progress = Progress::new("generating", count);
    const CHUNK: usize = 20_000;
    // Two stages on two cores: this thread wraps the values and writes the
    // CSV while a second one applies the previous chunk to sled.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<crate::store::NewProfile>>(2);
    let writer_store = store.clone();
    let writer = std::thread::spawn(move || -> Result<(), String> {
        for items in rx {
            writer_store
                .add_profiles(&items, "smdpplus-cli", crate::time::now())
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    let mut done = 0u64;
    loop {
        // The values are drawn chunk by chunk, so memory stays flat.
        let chunk: Vec<_> = params.by_ref().take(CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        let mut items = Vec::with_capacity(chunk.len());
        for p in &chunk {
            out.write(p)
                .map_err(|e| format!("{}: {e}", csv_path.display()))?;
            let stored = StoredPackage::template(&ring, &tpl, p).map_err(|e| e.to_string())?;
            items.push(crate::store::NewProfile {
                iccid: p.iccid.clone(),
                profile_type: profile_type.to_owned(),
                operator: operator.to_owned(),
                package: stored.to_bytes(),
            });
        }
        // The HSS/AuC file first: a profile in the store whose Ki is not in
        // the file could never attach, even after a crash right here.
        out.sync()
            .map_err(|e| format!("{}: {e}", csv_path.display()))?;
        if tx.send(items).is_err() {
            break;
        }
        done += chunk.len() as u64;
        progress.set(done);
    }
    drop(tx);
    writer
        .join()
        .map_err(|_| "the store writer failed".to_owned())??;
    store.flush_blocking().map_err(|e| e.to_string())?;
    let (path, rows) = out
        .finish()
        .map_err(|e| format!("{}: {e}", csv_path.display()))?;
    println!(
        "generated {rows} profiles of type {profile_type} for {operator} from template {} in {:.1} s",
        tpl.id(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "operator output (ICCID,IMSI,KI,OPC; mode 0600): {}",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_is_text_or_json_only() {
        let parse = |f: &str| Cli::try_parse_from(["smdpplus", "--log-format", f, "serve"]);
        assert_eq!(parse("json").expect("json").log_format, LogFormat::Json);
        assert_eq!(parse("text").expect("text").log_format, LogFormat::Text);
        assert!(parse("xml").is_err());
        assert!(parse("JSONL").is_err());
    }
}
