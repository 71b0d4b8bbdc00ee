//! The command line: `run`, `validate`, `schema`, `runs`, `sim`, `decrypt`, `keygen`, `verify`, `demo`.
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
mod run;

pub use args::{
    Cli, Command, DecryptArgs, DryRunMode, KeygenArgs, LogFormat, RunArgs, RunsCommand, SimArgs,
    StateDirArg,
};
pub use commands::schema_json;
pub use error::{conclude, exit, CliError};
pub use run::{run, run_workflow};

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
        Command::Validate { files } => commands::validate(&files),
        Command::Schema => {
            crate::outln!("{}", schema_json());
            Ok(())
        }
        Command::Sim(a) => commands::sim(a).await,
        Command::Runs { command } => commands::runs(command),
        Command::Verify { dir } => commands::verify(&dir),
        Command::Completions { shell } => {
            commands::completions(shell);
            Ok(())
        }
        Command::Man { dir } => commands::man(&dir),
        Command::Decrypt(a) => commands::decrypt(a).await,
        Command::Keygen(a) => commands::keygen(&a),
        Command::Demo { out } => match crate::demo::run(&out, ctrl_c_token()).await {
            exit::OK => Ok(()),
            // The demo printed what failed.
            _ => Err(CliError::StepFailed(None)),
        },
        Command::Run(mut args) => {
            args.env = std::env::vars().collect();
            if args.dry_run == Some(DryRunMode::Sim) {
                crate::rehearse::run(args, ctrl_c_token()).await
            } else {
                run_workflow(args, ctrl_c_token()).await
            }
        }
    }
}

/// A token cancelled on Ctrl-C. The notice is printed when it arrives; a second Ctrl-C
/// quits at once (the one exit that does not go through [`main`]).
fn ctrl_c_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            crate::errln!("\ninterrupted: cancelling running steps (Ctrl-C again to quit at once)");
            t.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(exit::INTERRUPTED as i32);
            }
        }
    });
    token
}
