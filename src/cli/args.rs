//! The command line's shape: clap types for every subcommand and its flags.
use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// The exit codes, shown under `auditflow --help` (the same table is in docs/reference/exit-codes.md).
const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    a step failed (the message names the step, vendor, HTTP status and the vendor's words)
  2    invalid workflow, inputs, usage or state directory (nothing was sent)
  75   pending: a poll reached max_wait / --max-wait, items wait for a quota, or another
       runner holds this run; the state is saved, run the same command again later to continue
  130  interrupted by SIGINT (Ctrl-C)
  143  interrupted by SIGTERM (a cancelled CI job); partial downloads are kept for the next run";

/// The command line: one subcommand and its flags.
#[derive(Parser, Debug)]
#[command(
    name = "auditflow",
    version = env!("AUDITFLOW_VERSION"),
    about = "Run declarative YAML audit workflows against Mimecast, MailStore and Google Email Audit",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How `run` reports on stdout (`--log-format`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// A line per step and a summary, for people.
    Human,
    /// One JSON object per event, for machines.
    Json,
}

/// What `run --dry-run` does.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum DryRunMode {
    /// Render every request and send nothing (`--dry-run` alone).
    Plan,
    /// Rehearse: run against the built-in simulator, in a scratch directory, with a
    /// throwaway key; no request leaves the machine.
    Sim,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate, then run a workflow.
    Run(Box<RunArgs>),
    /// Check workflow files without sending anything.
    Validate {
        /// Workflow files to check (each with the files it `uses`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where pack files are cached.
        #[command(flatten)]
        packs: PackCacheArg,
    },
    /// Pin the workflow packs (remote `uses:`) of workflows: write auditflow.lock beside
    /// them with the commit and SHA-256 of every pack file used.
    Lock {
        /// Workflow files to lock (default: those the lock file already covers).
        files: Vec<PathBuf>,
        /// Resolve the tags and branches of this pack (its URL, as in the lock) again
        /// (repeatable); other packs stay at their locked commits.
        #[arg(long, value_name = "URL")]
        update: Vec<String>,
        /// Where pack files are cached.
        #[command(flatten)]
        packs: PackCacheArg,
    },
    /// Fill the pack cache with every pack of a lock file ahead of runs (then `run` and
    /// `validate` need no network; the cache directory can be copied to air-gapped runners).
    Fetch {
        /// Workflow files whose lock to fetch (default: the lock of the current directory).
        files: Vec<PathBuf>,
        /// Where pack files are cached.
        #[command(flatten)]
        packs: PackCacheArg,
    },
    /// Print the JSON Schema of workflow files.
    Schema,
    /// What a workflow takes and uses: its inputs (types, defaults, descriptions), the
    /// environment variables it reads, its quota budgets, cursors and lifecycle.
    Inputs {
        /// The workflow file.
        workflow: PathBuf,
        /// A JSON object instead of the text.
        #[arg(long)]
        json: bool,
    },
    /// Show the runs recorded in a state directory, give up unfinished ones.
    Runs {
        /// `list`, `show`, `abandon` or `prune`.
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Show and set the positions (cursors) workflows keep between runs.
    Cursors {
        /// `list`, `show` or `set`.
        #[command(subcommand)]
        command: CursorsCommand,
    },
    /// Move run state between a state directory and a shared PostgreSQL store.
    State {
        /// `copy`.
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Serve the vendor simulator (Mimecast, MailStore, Google) on loopback until Ctrl-C.
    Sim(SimArgs),
    /// OpenPGP-decrypt files (e.g. Google exports downloaded otherwise) into a directory.
    Decrypt(DecryptArgs),
    /// Make an RSA OpenPGP key for Google exports: NAME.pub.asc (upload it) and NAME.sec.asc (mode 0600, decrypts them).
    Keygen(KeygenArgs),
    /// Re-hash the artifacts of an output directory against its manifest.json (exit 1 on any
    /// difference); check the manifest's signature; list files the manifest does not know.
    Verify {
        /// The output directory of a run (holding manifest.json).
        dir: PathBuf,
        /// The signer's OpenPGP key (public, or a secret key file): manifest.json.asc must
        /// be a valid signature of manifest.json by it.
        #[arg(long, value_name = "KEY")]
        signer: Option<PathBuf>,
        /// Fail on files in the directory that the manifest does not list (by default they
        /// are reported only).
        #[arg(long)]
        strict: bool,
        /// A JSON object instead of the text (for scripts and CI).
        #[arg(long)]
        json: bool,
    },
    /// An evidence report for people (HTML or Markdown) of an output directory: what ran,
    /// a timeline, every file re-hashed now, the signature, one summary sentence on top.
    Report {
        /// The output directory of a run (holding manifest.json).
        dir: PathBuf,
        /// `html` (one self-contained page) or `md` (for tickets and CI summaries).
        #[arg(long, value_enum, default_value = "html")]
        format: ReportFormat,
        /// Write it here (default: stdout).
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Where the runs' journals are (steps, attempts, jobs).
        #[command(flatten)]
        state: StateDirArg,
        /// The signer's OpenPGP key: the report says whether manifest.json.asc verifies.
        #[arg(long, value_name = "KEY")]
        signer: Option<PathBuf>,
        /// The run to report on when DIR holds no manifest.json yet (a run that detached
        /// before writing any file): its journal in the state store says what it waits for.
        #[arg(long, value_name = "RUN_ID")]
        run: Option<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Write man pages (auditflow.1 and one per subcommand) into a directory.
    Man {
        /// Where the pages go (created when missing), e.g. /usr/local/share/man/man1.
        #[arg(long, default_value = "man")]
        dir: PathBuf,
    },
    /// Run the shipped workflows against the built-in simulator with a throwaway key.
    Demo {
        /// Where results go: an earlier demo's output there is replaced, any other non-empty
        /// directory is refused.
        #[arg(long, default_value = "demo-out")]
        out: PathBuf,
    },
}

impl Command {
    /// Whether diagnostics go out as JSON lines (`run --log-format json`).
    pub fn logs_json(&self) -> bool {
        matches!(self, Command::Run(a) if a.log_format == LogFormat::Json)
    }
}

/// `--pack-cache`: where workflow packs are cached.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PackCacheArg {
    /// Where fetched workflow packs are kept (default: $XDG_CACHE_HOME/auditflow/packs or
    /// ~/.cache/auditflow/packs).
    #[arg(long, value_name = "DIR", env = "AUDITFLOW_PACK_CACHE")]
    pub pack_cache: Option<PathBuf>,
}

impl PackCacheArg {
    /// The pack settings these flags give.
    pub fn settings(&self) -> crate::workflow::packs::PackSettings {
        crate::workflow::packs::PackSettings::new(self.pack_cache.clone())
    }
}

/// The evidence report's format.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// One self-contained HTML page.
    Html,
    /// Markdown.
    Md,
}

/// Arguments of `run` (also built by `demo`).
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The workflow file.
    pub workflow: PathBuf,
    /// An input value, KEY=VALUE (repeatable).
    #[arg(long = "input", short = 'i', value_name = "KEY=VALUE")]
    pub inputs: Vec<String>,
    /// A YAML file of inputs (a mapping); --input wins over it.
    #[arg(long, value_name = "FILE")]
    pub inputs_file: Option<PathBuf>,
    /// Where run state is kept: a journal per run (masked, mode 0600). A run that did not
    /// succeed (crash, failure, exit 75) is resumed by the next `run` of the same workflow
    /// and inputs.
    #[arg(
        long,
        value_name = "DIR",
        default_value = ".auditflow",
        env = "AUDITFLOW_STATE_DIR"
    )]
    pub state_dir: Option<PathBuf>,
    /// Where run state is kept: a directory, or a `postgres://` URL of a store that every
    /// runner shares (runs, locks, quota budgets, cursors; see docs/guide/shared-state.md).
    /// Wins over --state-dir. libpq's PGHOST, PGUSER, PGPASSWORD, PGSSLMODE, PGSSLROOTCERT
    /// and ~/.pgpass complete the URL.
    #[arg(long, value_name = "DIR|URL", env = "AUDITFLOW_STATE")]
    pub state: Option<String>,
    /// Replace existing files the run would write even when they are not its own or
    /// recorded unchanged in the output directory's manifest.json (by default such a file
    /// fails its step before anything is written).
    #[arg(long)]
    pub overwrite: bool,
    /// Abandon an unfinished run of this workflow and inputs and start over (requests
    /// that must not be repeated, such as export creations, are sent again).
    #[arg(long)]
    pub fresh: bool,
    /// Continue the unfinished run RUN (its id, or the first characters of it, as `runs
    /// list` shows) with the inputs it was started with; give secret inputs again. For jobs
    /// whose inputs move each night (date ranges), whose runs are not found by their inputs.
    #[arg(long, value_name = "RUN", conflicts_with = "fresh")]
    pub resume: Option<String>,
    /// Run shard I of N: the outermost for_each loops keep the items whose hash falls
    /// in this shard (for CI matrices and Kubernetes Indexed Jobs).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Write a JSON report of the run.
    #[arg(long, value_name = "FILE")]
    pub report_json: Option<PathBuf>,
    /// Write a JUnit XML report (one test case per step).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the evidence report for people (HTML) here when the run ends (see `auditflow
    /// report`).
    #[arg(long, value_name = "FILE")]
    pub report_html: Option<PathBuf>,
    /// Write the evidence report as Markdown here when the run ends (e.g.
    /// $GITHUB_STEP_SUMMARY).
    #[arg(long, value_name = "FILE")]
    pub report_md: Option<PathBuf>,
    /// Sign the evidence manifest with this OpenPGP secret key: a detached armored
    /// signature `manifest.json.asc` beside it (`gpg --verify` and `auditflow verify
    /// --signer` check it). The key is unlocked before anything is sent.
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// Name of the environment variable holding the signing key's passphrase (never the
    /// passphrase itself; unset or empty: the key has none).
    #[arg(long, value_name = "VAR", default_value = "AUDIT_SIGN_PASSPHRASE")]
    pub sign_passphrase_env: String,
    /// Render every request (secrets masked) and send nothing; `--dry-run=sim` rehearses
    /// the workflow against the built-in simulator instead (scratch directory, throwaway
    /// key, nothing leaves the machine).
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "plan"
    )]
    pub dry_run: Option<DryRunMode>,
    /// Detach when polling is still waiting this long after the run started: save state
    /// and exit 75 (run the same command again later to continue).
    #[arg(long, value_name = "DURATION")]
    pub max_wait: Option<String>,
    /// Output format: human lines, or JSON lines for machines.
    #[arg(long, value_enum, default_value = "human")]
    pub log_format: LogFormat,
    /// Show every log line (MailStore log output, step starts).
    #[arg(long, short)]
    pub verbose: bool,
    /// Where pack files are cached.
    #[command(flatten)]
    pub packs: PackCacheArg,
    /// The environment the workflow sees (not a flag: `main` passes the process's, the
    /// demo its simulator's).
    #[arg(skip)]
    pub env: BTreeMap<String, String>,
    /// A rehearsal against the built-in simulator (not a flag: `--dry-run=sim` and the demo
    /// set it): connections reach loopback addresses only, and poll waits are cut short.
    #[arg(skip)]
    pub rehearsal: bool,
}

impl RunArgs {
    /// `--dry-run` (plan): render and send nothing.
    pub fn renders_only(&self) -> bool {
        self.dry_run == Some(DryRunMode::Plan)
    }

    /// The store `--state` or `--state-dir` names (None: state is kept nowhere).
    pub(crate) fn store_spec(&self) -> Option<crate::state::StoreSpec> {
        match (&self.state, &self.state_dir) {
            (Some(s), _) => Some(crate::state::StoreSpec::parse(s)),
            (None, Some(d)) => Some(crate::state::StoreSpec::Dir(d.clone())),
            (None, None) => None,
        }
    }
}

/// Arguments of `decrypt`.
#[derive(clap::Args, Debug)]
pub struct DecryptArgs {
    /// Armored or binary secret key file (RSA).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Name of the environment variable holding the key's passphrase (never the passphrase itself).
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
    /// Output directory (created if needed; files are written 0600).
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    pub out: PathBuf,
    /// Replace existing output files even when they are not recorded unchanged in the
    /// output directory's manifest.json (by default nothing is decrypted then).
    #[arg(long)]
    pub overwrite: bool,
    /// Encrypted files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Arguments of `keygen`.
#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// The key's user id, e.g. "Audit exports <admin@example.com>".
    #[arg(long, value_name = "USER_ID")]
    pub user_id: String,
    /// Where the key goes: NAME.pub.asc and NAME.sec.asc (existing files are never replaced).
    #[arg(long, value_name = "NAME")]
    pub out: PathBuf,
    /// RSA key size (Google needs RSA).
    #[arg(long, default_value = "3072", value_parser = ["3072", "4096"])]
    pub bits: String,
    /// Name of the environment variable holding the passphrase that protects the secret key
    /// (never the passphrase itself). Default: AUDIT_PGP_PASSPHRASE, or AUDIT_SIGN_PASSPHRASE
    /// with --sign.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
    /// Make an Ed25519 key that signs evidence manifests (`run --sign-key`) instead of the
    /// RSA key Google encrypts exports to.
    #[arg(long, conflicts_with = "bits")]
    pub sign: bool,
    /// Leave the secret key without a passphrase (anyone who reads the file can decrypt the
    /// exports).
    #[arg(long)]
    pub no_passphrase: bool,
}

/// `--state-dir` (of `runs`).
#[derive(clap::Args, Debug)]
pub struct StateDirArg {
    /// Where run state is kept: a journal per run (masked, mode 0600). A run that did not
    /// succeed (crash, failure, exit 75) is resumed by the next `run` of the same workflow
    /// and inputs.
    #[arg(
        long,
        value_name = "DIR",
        default_value = ".auditflow",
        env = "AUDITFLOW_STATE_DIR"
    )]
    pub state_dir: PathBuf,
    /// A directory or a `postgres://` URL of the shared store (wins over --state-dir).
    #[arg(long, value_name = "DIR|URL", env = "AUDITFLOW_STATE")]
    pub state: Option<String>,
}

impl StateDirArg {
    /// The store these flags name.
    pub(crate) fn spec(&self) -> crate::state::StoreSpec {
        match &self.state {
            Some(s) => crate::state::StoreSpec::parse(s),
            None => crate::state::StoreSpec::Dir(self.state_dir.clone()),
        }
    }
}

/// `auditflow runs ...`
#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// One line per run, newest first.
    List {
        /// Where the runs are recorded.
        #[command(flatten)]
        state: StateDirArg,
        /// A JSON array instead of the table (for scripts and CI).
        #[arg(long)]
        json: bool,
    },
    /// What one run recorded: steps, requests that must not be repeated, files, waits.
    Show {
        /// The run id (or its first characters).
        run: String,
        /// Where the run is recorded.
        #[command(flatten)]
        state: StateDirArg,
        /// A JSON object instead of the text (for scripts and CI).
        #[arg(long)]
        json: bool,
    },
    /// Give up an unfinished run: no later `run` resumes it (its journal is kept, and
    /// what it created at a vendor stays there).
    Abandon {
        /// The run id (or its first characters).
        run: String,
        /// Where the run is recorded.
        #[command(flatten)]
        state: StateDirArg,
    },
    /// Give up the unfinished runs that recorded nothing for a while: lists them, and with
    /// --apply abandons them.
    Prune {
        /// How long a run must have been idle, e.g. 7d or 12h.
        #[arg(long, value_name = "DURATION")]
        older_than: String,
        /// Abandon them (without it, only lists what would be abandoned).
        #[arg(long)]
        apply: bool,
        /// Where the runs are recorded.
        #[command(flatten)]
        state: StateDirArg,
    },
}

/// `auditflow state ...`
#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// Copy every run (journals, unfinished runs), quota budget and cursor from one store
    /// into another (a directory or a `postgres://` URL, either way), so pending runs
    /// continue there without exporting anything again. What the target already has is
    /// kept: its runs, its unfinished run of a key, the larger spend of a quota window and
    /// the newer cursor. Refused while a runner holds a run of the source.
    Copy {
        /// The store to read: a state directory or a `postgres://` URL.
        #[arg(long, value_name = "DIR|URL")]
        from: String,
        /// The store to add to (created when missing): a directory or a `postgres://` URL.
        #[arg(long, value_name = "DIR|URL")]
        to: String,
    },
}

/// `auditflow cursors ...`
#[derive(Subcommand, Debug)]
pub enum CursorsCommand {
    /// Every stored cursor: workflow, cursor, key, value, when and by which run it was written.
    List {
        /// Where the cursors are kept.
        #[command(flatten)]
        state: StateDirArg,
        /// A JSON array instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// One cursor's stored value (exit 1 when none is stored).
    Show {
        /// The workflow's `name:`.
        workflow: String,
        /// The cursor's name.
        cursor: String,
        /// The cursor's rendered key (its `key:` template's value, e.g. MTA); empty when it has none.
        #[arg(long, default_value = "")]
        key: String,
        /// Where the cursors are kept.
        #[command(flatten)]
        state: StateDirArg,
    },
    /// Set a cursor's position (e.g. after a lost cache): the next run starts there.
    Set {
        /// The workflow file that declares the cursor.
        workflow: PathBuf,
        /// The cursor's name.
        cursor: String,
        /// The value: JSON (`{"type":"MTA","token":"..."}`, `"2026-01-01"`) or plain text.
        value: String,
        /// The cursor's rendered key (its `key:` template's value, e.g. MTA); empty when it has none.
        #[arg(long, default_value = "")]
        key: String,
        /// Where the cursors are kept.
        #[command(flatten)]
        state: StateDirArg,
    },
}

/// Options of `auditflow sim`.
#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// Port of the Mimecast side (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub mimecast_port: u16,
    /// Port of the MailStore side (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub mailstore_port: u16,
    /// Port of the Google side (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub google_port: u16,
    /// Latency added to every answer, e.g. 50ms.
    #[arg(long, value_name = "DURATION")]
    pub latency: Option<String>,
    /// Share of requests answered 429 (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub rate_429: f64,
    /// Share of requests answered 500/502/503 (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub rate_5xx: f64,
    /// Cut this many file downloads half way.
    #[arg(long, default_value_t = 0)]
    pub cut_downloads: u32,
    /// Exports of this Google user end in ERROR.
    #[arg(long, value_name = "USER")]
    pub google_error_user: Option<String>,
    /// Status polls a Google export stays PENDING.
    #[arg(long, default_value_t = 3)]
    pub google_pending_polls: u32,
    /// Seed of the fault generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Start the Google export list empty instead of with three weeks of past requests.
    #[arg(long)]
    pub no_google_history: bool,
    /// Final MailStore statuses keep their token (as the wrapper's tutorial output shows)
    /// instead of `"token": null` (as the API page shows).
    #[arg(long)]
    pub mailstore_keep_final_token: bool,
    /// Mimecast requests allowed per rate-limit window (reported in `X-RateLimit-*`).
    #[arg(long, default_value_t = 100_000)]
    pub mimecast_rate_limit: u32,
    /// Length of the Mimecast rate-limit window, e.g. 1h.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub mimecast_rate_window: String,
    /// Serve MailStore over plain HTTP instead of HTTPS with a certificate generated at start.
    #[arg(long)]
    pub plain_http: bool,
    /// Where the MailStore certificate and the Google service-account key file are written
    /// (default: a temp dir removed on exit).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Durations of the simulated processes: `fast` (exports done after a few polls, MailStore
    /// processes in under a second) or `realistic` (exports take 6 h, MailStore 40 min, in
    /// simulated time, however often polled, so --google-pending-polls does not apply; time
    /// scale 600 unless --time-scale is given).
    #[arg(long, value_enum, default_value = "fast")]
    pub timing: SimTiming,
    /// Simulated seconds per real second (3600: one simulated hour per real second). Google's
    /// export ages, 3-week expiry and 24 h MARKED_DELETE cleanup, and MailStore's process
    /// durations follow it.
    #[arg(long, value_name = "FACTOR")]
    pub time_scale: Option<f64>,
}

/// `auditflow sim --timing`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum SimTiming {
    /// Quick: for tests and the demo.
    Fast,
    /// Vendor-like durations in simulated time.
    Realistic,
}
