//! The outputs a step exposes as `steps.<id>.<name>`, typed: validation checks references
//! against them (with a "did you mean"), and the steps build their outputs with these names.

/// One output name of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutput {
    /// HTTP status of the (last) answer.
    Status,
    /// Its headers.
    Headers,
    /// Its parsed body.
    Body,
    /// Pages fetched.
    Pages,
    /// Records in the result.
    Items,
    /// Every record of every page.
    Records,
    /// More pages were announced than fetched, on purpose.
    Truncated,
    /// The vendor's request id.
    RequestId,
    /// The file name of a file answer.
    Filename,
    /// Polls made.
    Polls,
    /// Files written.
    Files,
    /// Bytes written.
    Bytes,
    /// SHA-256 per file.
    Sha256,
    /// MD5 per file.
    Md5,
    /// Size per file.
    Sizes,
    /// Source URL per file.
    Urls,
    /// Files extracted from archives.
    Extracted,
    /// SHA-256 per extracted file.
    ExtractedSha256,
    /// The export's evidence files.
    Evidence,
    /// A partial export was accepted.
    Partial,
    /// Problems found in an accepted partial export.
    Problems,
    /// The export's reported result count.
    ResultsCount,
    /// Messages per export.
    Messages,
    /// A loop's per-item outputs.
    Results,
    /// A loop's failed items.
    Failed,
    /// A loop's item count.
    Count,
    /// A `uses` callee's outputs.
    Outputs,
    /// A cursor's name.
    Name,
    /// A cursor's key.
    Key,
    /// A cursor's new value.
    Value,
    /// A cursor's value before.
    Previous,
    /// A `repeat`'s iterations.
    Iterations,
    /// Whether a `repeat`'s condition held.
    Done,
}

impl StepOutput {
    /// The name templates read (`steps.<id>.<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutput::Status => "status",
            StepOutput::Headers => "headers",
            StepOutput::Body => "body",
            StepOutput::Pages => "pages",
            StepOutput::Items => "items",
            StepOutput::Records => "records",
            StepOutput::Truncated => "truncated",
            StepOutput::RequestId => "request_id",
            StepOutput::Filename => "filename",
            StepOutput::Polls => "polls",
            StepOutput::Files => "files",
            StepOutput::Bytes => "bytes",
            StepOutput::Sha256 => "sha256",
            StepOutput::Md5 => "md5",
            StepOutput::Sizes => "sizes",
            StepOutput::Urls => "urls",
            StepOutput::Extracted => "extracted",
            StepOutput::ExtractedSha256 => "extracted_sha256",
            StepOutput::Evidence => "evidence",
            StepOutput::Partial => "partial",
            StepOutput::Problems => "problems",
            StepOutput::ResultsCount => "results_count",
            StepOutput::Messages => "messages",
            StepOutput::Results => "results",
            StepOutput::Failed => "failed",
            StepOutput::Count => "count",
            StepOutput::Outputs => "outputs",
            StepOutput::Name => "name",
            StepOutput::Key => "key",
            StepOutput::Value => "value",
            StepOutput::Previous => "previous",
            StepOutput::Iterations => "iterations",
            StepOutput::Done => "done",
        }
    }
}

/// What `response` holds in a template over one answer (`poll.until`, `expect.condition`...):
/// these fields of a call's outputs, built by `steps::response_value`; `save_to` also reads
/// [`StepOutput::Filename`]. The other call outputs (`records`, `pages`...) cover every page
/// and are read by later steps only.
pub const RESPONSE_FIELDS: [StepOutput; 4] = [
    StepOutput::Status,
    StepOutput::Headers,
    StepOutput::Body,
    StepOutput::RequestId,
];

/// A step's outputs as templates read them: an object of the named values, in this order.
pub fn outputs_object(
    values: impl IntoIterator<Item = (StepOutput, serde_json::Value)>,
) -> serde_json::Value {
    serde_json::Value::Object(
        values
            .into_iter()
            .map(|(name, v)| (name.as_str().to_string(), v))
            .collect(),
    )
}

impl std::fmt::Display for StepOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
