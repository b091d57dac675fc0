//! The `smdpplus` binary: parses the command line and runs it.
#![deny(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;

/// mimalloc instead of the system allocator: sled allocates and frees a
/// node copy on every write, and glibc malloc spent about a third of the
/// bulk-load CPU time on that (`perf record` of `profiles generate`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t`.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed pages mapped instead of purging them 10 ms after use: the
/// purge and the page faults that follow cost as much system time as the
/// allocation work saved (1.6 s of 5.6 s CPU for 100,000 generated
/// profiles). The process's memory is mostly sled's bounded page cache.
#[allow(unsafe_code, reason = "one call into the allocator's C API")]
fn tune_allocator() {
    // SAFETY: mi_option_set only stores an integer in mimalloc's option
    // table; it is thread-safe and has no preconditions.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = smdpplus::cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log line that cannot be written (stderr on a full disk) is
        // dropped; the default reports it with eprintln!, which panics the
        // task that logged, and with it the request it was serving.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    if cli.log_format == smdpplus::cli::LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("smdpplus: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(smdpplus::cli::run(cli))
}
