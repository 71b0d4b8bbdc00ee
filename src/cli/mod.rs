//! The command line: `run`, `validate`, `lock`, `fetch`, `schema`, `runs`, `sim`, `decrypt`, `keygen`, `verify`, `demo`.
//!
//! Every command returns `Result<(), CliError>`; [`main`] prints the outcome once
//! ([`conclude`]) and exits once with [`CliError::exit_code`].
use std::process::ExitCode;

use clap::Parser;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

pub mod args;
mod commands;
mod error;
mod packs;
mod run;
#[cfg(feature = "sim")]
mod simulator;

pub use args::{
    Cli, Command, CursorsCommand, DecryptArgs, DryRunMode, KeygenArgs, LogFormat, PackCacheArg,
    ReportFormat, RunArgs, RunsCommand, SimArgs, StateDirArg,
};
pub use commands::schema_json;
pub use error::{conclude, exit, CliError};
pub use run::run_workflow;

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    // The runtime outlives the printing of the outcome (as when commands printed their own
    // errors), then goes before the exit.
    let mut runtime = None;
    let code = conclude(parse_and_dispatch(&mut runtime));
    drop(runtime);
    ExitCode::from(code)
}

/// Parses the command line, starts the runtime (kept in `runtime`) and runs the command.
fn parse_and_dispatch(runtime: &mut Option<Runtime>) -> Result<(), CliError> {
    let cli = Cli::try_parse()?;
    init_tracing(cli.command.logs_json());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))?;
    runtime.insert(rt).block_on(dispatch(cli.command))
}

/// Diagnostics of the library (adapter warnings, debug traces) go to stderr through
/// `tracing`, filtered by `RUST_LOG` (default: warnings); JSON lines with `--log-format json`.
fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The platform verifier logs every refused certificate as an error; the step's own
        // message says more (fingerprint, how to pin), so that line is left out by default.
        // rPGP warns that a key it has just generated and passphrase-protected re-encodes
        // with a different packet length (it writes the right one): noise for `keygen`.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                "warn,rustls_platform_verifier=off,pgp::packet::packet_sum=error",
            )
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(crate::report::console::colour(&std::io::stderr()))
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}

async fn dispatch(cmd: Command) -> Result<(), CliError> {
    match cmd {
        Command::Validate {
            files,
            packs: cache,
        } => commands::validate(&files, &cache.settings()),
        Command::Lock {
            files,
            update,
            packs: cache,
        } => packs::lock(&files, &update, &cache.settings()),
        Command::Fetch {
            files,
            packs: cache,
        } => packs::fetch(&files, &cache.settings()),
        Command::Schema => {
            crate::outln!("{}", schema_json());
            Ok(())
        }
        #[cfg(feature = "sim")]
        Command::Sim(a) => simulator::sim(a).await,
        #[cfg(not(feature = "sim"))]
        Command::Sim(_) => Err(no_simulator("auditflow sim")),
        Command::Inputs { workflow, json } => commands::describe(&workflow, json),
        Command::Runs { command } => commands::runs(command).await,
        Command::Cursors { command } => commands::cursors(command).await,
        Command::State { command } => commands::state(command).await,
        Command::Verify {
            dir,
            signer,
            strict,
            json,
        } => commands::verify(&dir, signer.as_deref(), strict, json),
        Command::Report {
            dir,
            format,
            output,
            state,
            signer,
            run,
        } => commands::report(
            &dir,
            format,
            output.as_deref(),
            &state.spec(),
            signer.as_deref(),
            run.as_deref(),
        ),
        Command::Completions { shell } => {
            commands::completions(shell);
            Ok(())
        }
        Command::Man { dir } => commands::man(&dir),
        Command::Decrypt(a) => commands::decrypt(a).await,
        Command::Keygen(a) => commands::keygen(&a),
        #[cfg(feature = "sim")]
        Command::Demo { out } => {
            let cancel = interrupt_token();
            crate::demo::run(&out, |play| simulator::run_demo_play(play, cancel.clone()))
                .await
                .map_err(CliError::from)
        }
        #[cfg(not(feature = "sim"))]
        Command::Demo { .. } => Err(no_simulator("auditflow demo")),
        Command::Run(args) => {
            let mut args = *args;
            args.env = std::env::vars().collect();
            if args.dry_run == Some(DryRunMode::Sim) {
                rehearse(args).await
            } else {
                run_workflow(args, interrupt_token()).await
            }
        }
    }
}

/// `run --dry-run=sim`: the rehearsal, or without the simulator, the error that says so.
async fn rehearse(args: RunArgs) -> Result<(), CliError> {
    #[cfg(feature = "sim")]
    return simulator::rehearse_workflow(args, interrupt_token()).await;
    #[cfg(not(feature = "sim"))]
    {
        drop(args);
        Err(no_simulator("auditflow run --dry-run=sim"))
    }
}

/// What a command that needs the simulator answers in a binary built without it (exit 2).
#[cfg(not(feature = "sim"))]
fn no_simulator(command: &str) -> CliError {
    CliError::Usage(format!(
        "{command} needs the built-in vendor simulator, and this auditflow was built without \
         it (cargo's `--no-default-features`); build it with the default features \
         (`cargo build`, `cargo install --path .`) or add `--features sim`"
    ))
}

/// The signal that interrupted the run, 0 when none did (read by [`CliError::exit_code`]).
static INTERRUPTED_BY: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The exit code of an interrupted process: 128 + the signal (130 for SIGINT, Ctrl-C; 143
/// for SIGTERM, what CI runners send to cancel a job).
pub(crate) fn interrupted_exit_code() -> u8 {
    match INTERRUPTED_BY.load(std::sync::atomic::Ordering::SeqCst) {
        0 => exit::INTERRUPTED,
        sig => 128u8.saturating_add(sig),
    }
}

/// A token cancelled on SIGINT (Ctrl-C) or SIGTERM (a CI job cancelled or timed out): the
/// running steps stop, the journal is written, `.part` files are kept for a ranged resume.
/// The notice is printed when the signal arrives; a second signal quits at once (the one
/// exit that does not go through [`main`]: whatever the journal holds is consistent, as
/// every record is one appended line).
fn interrupt_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let Some(first) = next_signal().await else {
            return;
        };
        INTERRUPTED_BY.store(first.number, std::sync::atomic::Ordering::SeqCst);
        crate::errln!(
            "\ninterrupted by {}: cancelling running steps, keeping partial downloads for the next run ({} again to quit at once)",
            first.name,
            first.again
        );
        t.cancel();
        if next_signal().await.is_some() {
            std::process::exit(i32::from(interrupted_exit_code()));
        }
    });
    token
}

/// A stop signal as received.
struct StopSignal {
    name: &'static str,
    number: u8,
    again: &'static str,
}

/// Waits for SIGINT or SIGTERM (on other platforms, Ctrl-C); None when signals cannot be
/// listened to.
async fn next_signal() -> Option<StopSignal> {
    let int = StopSignal {
        name: "SIGINT",
        number: 2,
        again: "Ctrl-C",
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok()?;
        let mut intr = signal(SignalKind::interrupt()).ok()?;
        tokio::select! {
            r = intr.recv() => r.map(|_| int),
            r = term.recv() => r.map(|_| StopSignal { name: "SIGTERM", number: 15, again: "a second signal" }),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.ok().map(|_| int)
    }
}
