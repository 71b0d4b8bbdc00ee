//! The workflow file's data model: what a user writes, as Rust types with a JSON Schema.
//!
//! Every type denies unknown fields, so a typo is an error that names the field. Templates
//! are kept as strings here; `validate` compiles and checks them.
use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::bytesize::ByteSize;
use super::duration::Dur;
use crate::retry::Jitter;

/// One workflow file: a job made of steps.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// Short name of the job, shown in reports.
    pub name: String,
    /// What the job does and for whom.
    #[serde(default)]
    pub description: Option<String>,
    /// Parameters the job takes (`--input key=value`, `--inputs-file`, or `with:` from a caller).
    #[serde(default)]
    pub inputs: BTreeMap<String, InputSpec>,
    /// Named vendor connections that steps refer to.
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionSpec>,
    /// Defaults for every step (retry policy, time limits).
    #[serde(default)]
    pub defaults: Option<Defaults>,
    /// The steps, run in order.
    pub steps: Vec<Step>,
    /// Values returned to a caller that runs this file with `uses:` (templates).
    #[serde(default)]
    pub outputs: BTreeMap<String, Value>,
    /// Named positions kept in the state directory between runs (a vendor's next-page or
    /// next-file token, the last day collected), read as `{{ cursors.NAME }}` and advanced by
    /// `set_cursor` steps once the data they cover is saved.
    #[serde(default)]
    pub cursors: BTreeMap<String, CursorSpec>,
    /// What a later run of this file with the same inputs does once a run succeeded:
    /// `recurring` (the default) starts a new run every time (collections that move with
    /// cursors, checks); `one-shot` (an export with fixed inputs) reports the earlier success
    /// and sends nothing, unless `--fresh`. Read from the file `auditflow run` is given.
    #[serde(default)]
    pub lifecycle: Lifecycle,
}

/// What a succeeded run means for the next run with the same identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Lifecycle {
    /// Every run is new once the last one succeeded (a schedule collects each time).
    #[default]
    Recurring,
    /// Done once: a later run reports the earlier success, exit 0, and sends nothing.
    OneShot,
}

/// A cursor: a value kept in the state directory per workflow name, cursor name and key.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CursorSpec {
    /// What the position means (shown by `auditflow validate`).
    #[serde(default)]
    pub description: Option<String>,
    /// The value before any run advanced it (default empty): any YAML value whose strings
    /// are templates over `inputs`, `env` and `run` (a whole-expression template keeps its
    /// type), e.g. `{{ format_date (ago "6d") "%Y-%m-%d" }}` or `{type: MTA}`.
    #[serde(default)]
    pub initial: Option<Value>,
    /// Keeps one position per rendered key (template over `inputs`, `env` and `run`), e.g.
    /// `{{ inputs.type }}`: runs for different event types do not share a position.
    #[serde(default)]
    pub key: Option<String>,
}

/// The type of an input value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// Any text (the default when `type` is left out).
    #[default]
    String,
    /// A whole number; given on the command line as decimal digits.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A YAML list; given on the command line as comma-separated values.
    List,
    /// A duration such as `200ms`, `30s`, `5m`, `7d`.
    Duration,
    /// An RFC 3339 date and time with its offset, e.g. `2025-01-01T00:00:00Z` (what Vault and
    /// most vendor APIs take); an empty text means not given.
    Timestamp,
}

impl InputType {
    /// The type's name as written in a workflow's `type:` field.
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Boolean => "boolean",
            InputType::List => "list",
            InputType::Duration => "duration",
            InputType::Timestamp => "timestamp",
        }
    }
}

/// One input parameter.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The value's type (`type:` in YAML; default `string`); values are checked against it.
    #[serde(rename = "type", default)]
    pub kind: InputType,
    /// The run fails before any request when a required input is missing.
    #[serde(default)]
    pub required: bool,
    /// Value used when the input is not given.
    #[serde(default)]
    pub default: Option<Value>,
    /// What the input is for, shown by `auditflow validate` and in errors about it.
    #[serde(default)]
    pub description: Option<String>,
    /// Mask this value (`***`) in every log, report, state file and error.
    #[serde(default)]
    pub secret: bool,
    /// Smallest value allowed (integer inputs), e.g. `1`; checked before any request.
    #[serde(default)]
    pub min: Option<i64>,
    /// Largest value allowed (integer inputs), e.g. `100` for a vendor's page size.
    #[serde(default)]
    pub max: Option<i64>,
    /// The only values allowed, of the input's type, e.g. `[receipt, process, delivery]`.
    #[serde(default)]
    pub choices: Option<Vec<Value>>,
    /// A regular expression the whole text must match (string inputs), e.g.
    /// `"[^~!$'(),;@:/?]*"` for a Vault export name.
    #[serde(default)]
    pub pattern: Option<String>,
}

/// The vendor a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionKind {
    /// Mimecast API 1.0 (HMAC-signed) or 2.0 (OAuth client credentials), chosen by credentials.
    Mimecast,
    /// MailStore Server Administration API (HTTP Basic, long-running processes).
    Mailstore,
    /// Google Workspace Email Audit API (OAuth 2.0 bearer, Atom XML).
    Google,
    /// Any HTTP API (optional Basic or bearer auth).
    Http,
}

/// A named connection. Credentials are templates over the environment and are always secret.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSpec {
    /// The vendor, which decides signing, encoding, pagination and error mapping.
    pub kind: ConnectionKind,
    /// Base URL (template), e.g. `{{ env.MIMECAST_BASE_URL }}`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Credentials, each a template; which ones apply depends on `kind` (see docs/guide/vendors.md).
    #[serde(default)]
    pub credentials: Option<Credentials>,
    /// PEM file of certificates to trust (template; relative to the working directory): a CA,
    /// or the server's own self-signed certificate (MailStore Server's default), which is then
    /// trusted as exactly that certificate for the host names it carries.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// SHA-256 fingerprint of the server's certificate (template; `AB:CD:...` as
    /// `openssl x509 -noout -fingerprint -sha256` prints it, colons optional; several
    /// separated by commas). When set, only a certificate with one of these fingerprints is
    /// accepted, whatever its issuer and host names; an empty rendering means no pin.
    #[serde(default)]
    pub tls_pin_sha256: Option<String>,
    /// Accept any TLS certificate. Dangerous; warned about on every run.
    #[serde(default)]
    pub insecure_tls: bool,
    /// Time limit of one HTTP attempt on this connection (default 60s).
    #[serde(default)]
    pub request_timeout: Option<Dur>,
    /// MailStore: how long each `get-status` long poll of a running process may wait for news
    /// (its `millisecondsTimeout`; a duration or a template rendering to one, default 5s).
    #[serde(default)]
    pub status_wait: Option<String>,
    /// Origins besides `base_url`'s (`https://host[:port]`, templates; an entry may render to
    /// several, separated by commas or spaces) that may receive the credentials, for URLs a
    /// vendor's answer names on another host. Any other origin gets no credentials.
    #[serde(default)]
    pub credential_origins: Vec<String>,
}

/// A `tls_pin_sha256` entry that is not a SHA-256 fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{entry}` is not a SHA-256 fingerprint: expected 64 hex digits, e.g. AB:CD:...:EF as \
     `openssl x509 -noout -fingerprint -sha256` prints it"
)]
pub struct PinError {
    /// The entry as written (trimmed).
    pub entry: String,
}

/// A `credential_origins` entry that is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{entry}` is not an origin ({why}); write https://host or https://host:port")]
pub struct OriginError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub why: String,
}

/// Parses a `tls_pin_sha256` value: SHA-256 digests in hex (colons and spaces ignored, an
/// optional `sha256:` prefix), separated by commas. Blank gives no pin.
pub fn parse_sha256_pins(text: &str) -> Result<Vec<[u8; 32]>, PinError> {
    let mut pins = Vec::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let t = part.trim();
        let t = ["sha256:", "sha-256:", "SHA256:", "SHA-256:"]
            .iter()
            .find_map(|p| t.strip_prefix(p))
            .unwrap_or(t);
        let hex: String = t
            .chars()
            .filter(|c| *c != ':' && !c.is_whitespace())
            .collect();
        let digest = <[u8; 32] as hex::FromHex>::from_hex(&hex)
            .ok()
            .ok_or_else(|| PinError {
                entry: part.trim().to_string(),
            })?;
        pins.push(digest);
    }
    Ok(pins)
}

/// Parses a `credential_origins` value: origins (`scheme://host[:port]`, http or https, no
/// path, query or user info) separated by commas or whitespace.
pub fn parse_origins(text: &str) -> Result<Vec<url::Origin>, OriginError> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(parse_origin)
        .collect()
}

fn parse_origin(text: &str) -> Result<url::Origin, OriginError> {
    let bad = |why: &str| OriginError {
        entry: text.to_string(),
        why: why.to_string(),
    };
    let u = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad("it holds user info"));
    }
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() {
        return Err(bad("it has a path, query or fragment"));
    }
    Ok(u.origin())
}

/// Credential fields (templates). Empty renders count as absent, so one file can offer
/// several credential kinds and the environment decides (Mimecast 2.0 vs 1.0).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Mimecast API 1.0: the access key (sent in the `Authorization: MC` header).
    #[serde(default)]
    pub access_key: Option<String>,
    /// Mimecast API 1.0: the base64 secret key that HMAC-SHA1-signs each request.
    #[serde(default)]
    pub secret_key: Option<String>,
    /// Mimecast API 1.0: the registered application's id (`x-mc-app-id`).
    #[serde(default)]
    pub app_id: Option<String>,
    /// Mimecast API 1.0: the registered application's key, part of the signed string.
    #[serde(default)]
    pub app_key: Option<String>,
    /// Mimecast API 2.0 OAuth client id (2.0 is preferred when both render non-empty).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Mimecast API 2.0 OAuth client secret, exchanged for a bearer token.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// HTTP Basic user name (MailStore, http).
    #[serde(default)]
    pub username: Option<String>,
    /// HTTP Basic password (MailStore, http).
    #[serde(default)]
    pub password: Option<String>,
    /// A ready OAuth 2.0 bearer token (Google, http).
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Google: service-account key file with domain-wide delegation.
    #[serde(default)]
    pub service_account_file: Option<String>,
    /// Google: the admin the service account acts as.
    #[serde(default)]
    pub subject: Option<String>,
    /// Google: token endpoint override (tests point it at the simulator).
    #[serde(default)]
    pub token_url: Option<String>,
    /// Google: OAuth scopes the service account asks for, separated by spaces or commas
    /// (default: the Email Audit API's; Vault needs `.../auth/ediscovery` and
    /// `.../auth/devstorage.read_only`). Not a secret.
    #[serde(default)]
    pub scopes: Option<String>,
}

/// Step defaults.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Retry policy of every step that does not set its own fields.
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    /// Time limit of a whole step (calls, downloads, decrypts; polls use their own `timeout`).
    #[serde(default)]
    pub timeout: Option<Dur>,
}

/// Retry policy fields; a step's fields override the defaults one by one.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first included (1 = no retry).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Wait before the first retry (default 500ms), before jitter.
    #[serde(default)]
    pub initial_interval: Option<Dur>,
    /// Each wait is the previous one times this (default 2.0).
    #[serde(default)]
    pub factor: Option<f64>,
    /// Cap on one wait (default 30s); a vendor's Retry-After may ask for longer.
    #[serde(default)]
    pub max_interval: Option<Dur>,
    /// Stop retrying after this long since the first attempt.
    #[serde(default)]
    pub max_elapsed: Option<Dur>,
    /// How waits are randomized: `full` (default), `equal` or `none`.
    #[serde(default)]
    pub jitter: Option<Jitter>,
}

/// One step. Exactly one of `call`, `poll`, `download`, `decrypt`, `for_each`, `uses`,
/// `set_cursor`, `repeat`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique id; later steps read this step's outputs as `steps.<id>`.
    pub id: String,
    /// Human-readable label shown by the reporters instead of the id.
    #[serde(default)]
    pub name: Option<String>,
    /// Condition (template); the step is skipped when it renders false.
    #[serde(rename = "if", default)]
    pub when: Option<String>,
    /// Retry policy fields overriding `defaults.retry` one by one.
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    /// Time limit of the whole step (for `poll`: the overall polling deadline, default 7d).
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// A failure of this step is reported but does not fail the run.
    #[serde(default)]
    pub continue_on_error: bool,
    /// Replace files this step writes (`save_to`, downloads, decrypted files) even when they
    /// exist and are neither the run's own nor recorded unchanged in the evidence manifest
    /// (like `--overwrite`, for this step only; steps inside a loop or `uses` set their own).
    #[serde(default)]
    pub overwrite: bool,
    /// Send one HTTP request.
    #[serde(default)]
    pub call: Option<CallSpec>,
    /// Repeat a request until a condition holds.
    #[serde(default)]
    pub poll: Option<PollSpec>,
    /// Fetch files to disk.
    #[serde(default)]
    pub download: Option<DownloadSpec>,
    /// Decrypt OpenPGP files.
    #[serde(default)]
    pub decrypt: Option<DecryptSpec>,
    /// Run nested steps once per item of a list.
    #[serde(default)]
    pub for_each: Option<ForEachSpec>,
    /// Another workflow file to run: a path relative to this file (then to each
    /// `AUDITFLOW_PATH` directory), or a file of a git repository at a tag, branch or commit
    /// (`git+https://host/org/repo.git//path/file.yaml@v1.2.0`, pinned by `auditflow.lock`).
    #[serde(default)]
    pub uses: Option<String>,
    /// Inputs for the `uses` workflow (templates).
    #[serde(default)]
    pub with: Option<BTreeMap<String, Value>>,
    /// Advance a cursor of this file (after the steps before it have completed).
    #[serde(default)]
    pub set_cursor: Option<SetCursorSpec>,
    /// Run nested steps again and again until a condition holds (a token chain).
    #[serde(default)]
    pub repeat: Option<RepeatSpec>,
}

/// Writes a new value of a cursor to the state directory (atomically, fsync'd); later
/// templates of the run read the new value.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCursorSpec {
    /// The cursor's name, declared under `cursors:`.
    pub name: String,
    /// The new value (template; a whole-expression template keeps its type).
    pub value: Value,
}

/// A loop that runs its steps until `until` holds: each iteration sees its own steps'
/// outputs; what carries over between iterations (and runs) is a cursor.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepeatSpec {
    /// Steps run in each iteration.
    pub steps: Vec<Step>,
    /// Condition checked after each iteration (template; may read the iteration's steps).
    pub until: String,
    /// Most iterations in one process. Reaching it with `until` still false ends the run
    /// with exit 75 ("more data remains"): the next run continues from the cursors.
    pub max_iterations: u32,
}

/// An HTTP request, signed and encoded by the connection's vendor adapter.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallSpec {
    /// Name of a connection in `connections`.
    #[serde(default)]
    pub connection: Option<String>,
    /// A full URL instead of a connection (plain http, no auth).
    #[serde(default)]
    pub url: Option<String>,
    /// HTTP method (default: POST for mimecast and mailstore, GET otherwise).
    #[serde(default)]
    pub method: Option<String>,
    /// Path joined onto the connection's base URL (template).
    #[serde(default)]
    pub path: Option<String>,
    /// Query parameters (templates).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Extra headers (templates).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON body; every string inside is a template (a whole-expression template keeps its type).
    #[serde(default)]
    pub json: Option<Value>,
    /// Form fields (application/x-www-form-urlencoded), templates.
    #[serde(default)]
    pub form: Option<BTreeMap<String, Value>>,
    /// Atom `apps:property` name/value pairs (Google), templates.
    #[serde(default)]
    pub atom: Option<BTreeMap<String, Value>>,
    /// Raw text body (template).
    #[serde(default)]
    pub text: Option<String>,
    /// Content type of `text` (default text/plain).
    #[serde(default)]
    pub content_type: Option<String>,
    /// What counts as success.
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Write the parsed body to this file (pretty JSON), template. It may read `response`
    /// (rendered once the answer is in): `response.filename` is the file name the vendor's
    /// `Content-Disposition` gives, reduced to one safe name, and a file answer is saved as
    /// its bytes. A rendering that is empty saves nothing.
    #[serde(default)]
    pub save_to: Option<String>,
    /// Follow the vendor's pagination and aggregate all pages. Without it, an answer that
    /// announces more pages fails the step; `paginate: false` says one page is wanted.
    #[serde(default)]
    pub paginate: Option<Paginate>,
    /// Whether sending this request twice is harmless. Default: yes, except the calls the
    /// vendor adapter knows are not (Google: creating an export, uploading the key). With
    /// `false`, the run records an intent before sending and never sends it twice for one
    /// step, even across crashes (a request whose answer was lost is looked up first).
    #[serde(default)]
    pub idempotent: Option<bool>,
    /// Largest answer held in memory (default 64MiB), e.g. `256MiB`. A bigger answer fails
    /// the step: large content belongs in a `download` step, which streams to disk. It also
    /// bounds the pages of a paginated call held together when a later template reads its
    /// `body` or `records` (pages nobody reads are saved to `save_to` as they arrive).
    #[serde(default)]
    pub max_response_size: Option<ByteSize>,
    /// A vendor quota this call spends from (e.g. Google's 100 export requests per domain per
    /// day), kept in the state directory across runs. When it is spent the step waits: the
    /// run ends pending (exit 75) and the next run continues, instead of failing.
    #[serde(default)]
    pub budget: Option<BudgetSpec>,
}

/// A quota a call spends from: `limit` requests per `per` window and/or at most `in_flight`
/// held at once, for each value of `key`. Calls that name the same budget share it, across
/// workflows and runs that use the same state directory.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// The budget's name, e.g. `google-export-requests`.
    pub name: String,
    /// Requests allowed in each window (with `per`): a number, or a template rendering to one
    /// (a vendor may raise a quota for some customers).
    #[serde(default)]
    pub limit: Option<Count>,
    /// The window's length, e.g. `1d`. Windows are fixed, not sliding: they start at
    /// `resets_at` (UTC) and follow each other, as vendors' daily quotas do.
    #[serde(default)]
    pub per: Option<Dur>,
    /// UTC time of day (`HH:MM`) a window starts at (default `00:00`).
    #[serde(default)]
    pub resets_at: Option<String>,
    /// Whose quota this is (template), e.g. `{{ inputs.domain }}`; default: one for all.
    #[serde(default)]
    pub key: Option<String>,
    /// At most this many calls held at once: a call holds its unit until the workflow file
    /// it is in has finished (succeeded or failed; a pending run keeps holding), e.g. Vault's
    /// 20 exports in progress per organization.
    #[serde(default)]
    pub in_flight: Option<Count>,
    /// HTTP statuses the vendor documents as its "quota spent" answer to this call, e.g.
    /// `[503]` for the Email Audit API ("Usage limits and quotas"). Such an answer that
    /// persists through the call's retries ends the item pending (exit 75), as Google's
    /// 403/429 `dailyLimitExceeded` do; the budget then stops asking until its window renews.
    #[serde(default)]
    pub spent_status: Vec<u16>,
}

/// Acceptable answers of a call.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Acceptable HTTP statuses (default: any 2xx).
    #[serde(default)]
    pub status: Vec<u16>,
    /// A condition over `response` that must hold (template).
    #[serde(default)]
    pub condition: Option<String>,
    /// What a failure means, in the user's words (template over `response`), shown before the
    /// values the condition compared.
    #[serde(default)]
    pub message: Option<String>,
    /// The MIME type the answer must have, e.g. `application/json` (parameters such as
    /// `charset` are ignored). Default: whatever the vendor adapter accepts.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// Pagination options. Absent `paginate` means one request, and an answer announcing more
/// pages fails the step.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Paginate {
    /// `paginate: true` follows every page with the vendor's default page size;
    /// `paginate: false` fetches one page on purpose (the result is recorded as truncated
    /// when the vendor announces more).
    Enabled(bool),
    /// Follow every page with the given page size and page limit.
    Options(PaginateOptions),
}

/// Pagination details.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaginateOptions {
    /// Items per page asked of the vendor (default: the vendor's own page size).
    #[serde(default)]
    pub page_size: Option<u32>,
    /// Most pages to fetch (default 10000). Reaching it while the vendor announces more
    /// pages fails the step, unless `truncate: true`.
    #[serde(default)]
    pub max_pages: Option<u32>,
    /// Stopping at `max_pages` with pages left is intended: the step succeeds with a
    /// warning, and its outputs and the evidence manifest say the result is truncated.
    #[serde(default)]
    pub truncate: bool,
}

/// Repeat a call until a condition holds.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PollSpec {
    /// The request to repeat.
    pub call: CallSpec,
    /// Stop successfully when this condition over `response` holds (template).
    pub until: String,
    /// Stop with a failure at once when this holds (terminal vendor states).
    #[serde(default)]
    pub fail_if: Option<String>,
    /// Message for `fail_if` (template over `response`); default names the condition.
    #[serde(default)]
    pub fail_message: Option<String>,
    /// Time between polls.
    #[serde(default)]
    pub interval: Option<PollInterval>,
    /// Save state and exit 75 when this much time has been spent waiting (scheduled CI).
    #[serde(default)]
    pub max_wait: Option<Dur>,
}

/// Poll interval policy: `interval: 30s` (constant) or the detailed form.
#[derive(Debug, Clone, Default, Serialize, JsonSchema, PartialEq)]
#[schemars(extend("anyOf" = [{"type": "string"}, {"type": "object"}]))]
pub struct PollInterval {
    /// First wait (default 30s); a template is allowed (`{{ inputs.poll_interval }}`).
    #[serde(default)]
    pub initial: Option<String>,
    /// Growth factor per poll (default 1.0: constant).
    #[serde(default)]
    pub factor: Option<f64>,
    /// Upper bound of the wait (default 10m); a template is allowed.
    #[serde(default)]
    pub max: Option<String>,
    /// Randomization (default none for polls).
    #[serde(default)]
    pub jitter: Option<Jitter>,
}

/// Stream files to disk.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadSpec {
    /// Connection whose auth is used (Google bearer token); omitted: no auth.
    #[serde(default)]
    pub connection: Option<String>,
    /// A URL or a list of URLs (template; a whole-expression template may yield a list).
    pub urls: Value,
    /// File names, one per URL (templates); default: derived safely from each URL.
    #[serde(default)]
    pub names: Option<Value>,
    /// Target directory (template).
    pub to: String,
    /// Files downloaded at once (default 4): a number, or a template rendering to one.
    #[serde(default)]
    pub concurrency: Option<Count>,
    /// Expected SHA-256 per file (templates), checked before the file is made final.
    #[serde(default)]
    pub sha256: Option<Value>,
    /// The vendor request these files belong to (template), recorded in the evidence manifest.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Expected MD5 per file, base64 as Cloud Storage's `md5Hash` gives it (templates),
    /// computed while the file streams in and checked before it is made final.
    #[serde(default)]
    pub md5: Option<Value>,
    /// Expected size in bytes per file (templates; numbers or digit strings, as Vault's
    /// `cloudStorageSink.files[].size`), checked before the file is made final.
    #[serde(default)]
    pub size: Option<Value>,
    /// Take files out of each downloaded ZIP archive (Vault exports) once it is verified.
    #[serde(default)]
    pub extract: Option<ExtractSpec>,
    /// An attempt that gets no answer, or less than 16 KiB of the file, for this long is
    /// stalled: it fails and is retried, resuming from the bytes already held (default 2m).
    #[serde(default)]
    pub stall_timeout: Option<Dur>,
}

/// Which files `download.extract` takes out of the archives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExtractFormat {
    /// The `.mbox` entries (a Vault mail export in MBOX format).
    #[default]
    Mbox,
}

impl ExtractFormat {
    /// The file name ending (lower case) of the entries kept.
    pub fn suffix(self) -> &'static str {
        match self {
            ExtractFormat::Mbox => ".mbox",
        }
    }
}

/// Extraction of downloaded ZIP archives: streamed entry by entry, names reduced to one safe
/// file name (an entry whose path would leave the directory fails the step).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtractSpec {
    /// Directory the extracted files go to (template).
    pub to: String,
    /// Which entries to keep (default `mbox`).
    #[serde(default)]
    pub format: ExtractFormat,
    /// Largest ratio of an entry's size to its compressed size (default 100); beyond it the
    /// entry is taken for an archive bomb (entries of at most 1 MiB are not held to it).
    #[serde(default)]
    pub max_ratio: Option<u32>,
    /// Largest total size of the files the step extracts (default `1TiB`).
    #[serde(default)]
    pub max_total: Option<ByteSize>,
    /// Check the export against the files it lists beside its archives: `vault` reads a
    /// Google Vault export's results-count file (messages per account), its checksums file
    /// and its error reports. Default: no check.
    #[serde(default)]
    pub verify: Option<ExportVerify>,
    /// With `verify`: accept an export the vendor reports as incomplete (error reports,
    /// an account whose messages differ from its count) as a partial result: the step
    /// succeeds with `partial: true` and the report and the manifest say what is missing.
    /// A template rendering to true or false; default false (the step fails).
    #[serde(default)]
    pub accept_partial: Option<String>,
}

/// What `download.extract.verify` checks the extracted files against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportVerify {
    /// A Google Vault export: `<export>-results-count.csv`, the checksums file, `error.csv`
    /// and `<export>-account-exceptions.csv`.
    Vault,
}

/// OpenPGP-decrypt files.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecryptSpec {
    /// A file or a list of files (template), e.g. `{{ steps.fetch.files }}`.
    pub files: Value,
    /// Path of the armored or binary secret key (template).
    pub key: String,
    /// Passphrase of the key (template; mark its input secret or read it from env).
    #[serde(default)]
    pub passphrase: Option<String>,
    /// Target directory (template).
    pub to: String,
    /// Files decrypted at once (default: number of CPUs): a number, or a template rendering to one.
    #[serde(default)]
    pub concurrency: Option<Count>,
    /// The custodian whose mail the files hold (template, e.g. the Email Audit user
    /// `{{ inputs.user }}@{{ inputs.domain }}`): the messages of the decrypted mbox files are
    /// counted for the evidence report's custodians table.
    #[serde(default)]
    pub custodian: Option<String>,
}

/// A positive whole number written literally, or as a template rendered when the step starts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Count {
    /// `concurrency: 4`.
    Number(u32),
    /// `concurrency: "{{ inputs.concurrency }}"`.
    Template(String),
}

/// Run nested steps once per item of a list.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForEachSpec {
    /// The list (template yielding a list, or a literal list).
    pub items: Value,
    /// Iterations run at once (default 1): a number, or a template rendering to one
    /// (e.g. `{{ inputs.concurrency }}`).
    #[serde(default)]
    pub concurrency: Option<Count>,
    /// Stop starting new iterations after the first failure (default true). With false, all
    /// iterations run and the step fails afterwards naming each failed item.
    #[serde(default)]
    pub fail_fast: Option<bool>,
    /// Steps run for each item, with `item` and `index` in scope.
    pub steps: Vec<Step>,
}

/// The detailed form of [`PollInterval`], with unknown fields denied.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PollIntervalFields {
    #[serde(default)]
    initial: Option<String>,
    #[serde(default)]
    factor: Option<f64>,
    #[serde(default)]
    max: Option<String>,
    #[serde(default)]
    jitter: Option<Jitter>,
}

impl<'de> Deserialize<'de> for PollInterval {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PollInterval;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as 30s, or {initial, factor, max, jitter}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PollInterval, E> {
                Ok(PollInterval {
                    initial: Some(v.to_string()),
                    ..PollInterval::default()
                })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PollInterval, E> {
                self.visit_str(&format!("{v}s"))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<PollInterval, A::Error> {
                let f = PollIntervalFields::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(PollInterval {
                    initial: f.initial,
                    factor: f.factor,
                    max: f.max,
                    jitter: f.jitter,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_in_the_forms_people_copy() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_sha256_pins(&hex).unwrap(), vec![[0xab; 32]]);
        assert_eq!(parse_sha256_pins(&colons).unwrap(), vec![[0xab; 32]]);
        assert_eq!(
            parse_sha256_pins(&format!("sha256:{hex}, {colons}"))
                .unwrap()
                .len(),
            2
        );
        assert!(parse_sha256_pins("  ").unwrap().is_empty());
        let e = parse_sha256_pins("AB:CD").unwrap_err();
        assert!(e.to_string().contains("64 hex digits"), "{e}");
        assert!(parse_sha256_pins(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        let o = parse_origins("https://storage.example.com, http://127.0.0.1:8080").unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(
            o[0],
            url::Url::parse("https://storage.example.com:443/x")
                .unwrap()
                .origin()
        );
        for bad in [
            "storage.example.com",
            "ftp://h",
            "https://h/path",
            "https://u:p@h",
            "https://h/?q=1",
        ] {
            assert!(parse_origins(bad).is_err(), "{bad}");
        }
    }
}
