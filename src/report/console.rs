//! Writing to stdout and stderr without ever panicking: `auditflow run ... | head -3` closes the
//! pipe early, and a run must go on (and be recorded) whatever happens to its readers.
//!
//! `println!` and `eprintln!` panic when the write fails (EPIPE, a full disk behind a
//! redirect); these macros drop the error instead. The run's record is the journal and the
//! report files, never the console, so nothing is lost that a reader of the console needed.

/// Like `println!`, but a failed write to stdout is ignored.
#[macro_export]
macro_rules! outln {
    () => { $crate::report::console::out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::report::console::out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Like `print!`, but a failed write to stdout is ignored.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::report::console::out(format_args!($($arg)*)) };
}

/// Like `eprintln!`, but a failed write to stderr is ignored.
#[macro_export]
macro_rules! errln {
    () => { $crate::report::console::err(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::report::console::err(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Writes to stdout, ignoring failures (a closed pipe, a full disk).
pub(crate) fn out(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut o = std::io::stdout().lock();
    let _ = o.write_fmt(args);
    let _ = o.flush();
}

/// Writes to stderr, ignoring failures.
pub(crate) fn err(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// The one colour rule for all output: ANSI styling only on a terminal, and never when
/// `NO_COLOR` (any value, <https://no-color.org>) or `CI` is set.
pub(crate) fn colour(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal()
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var_os("CI").is_none()
}
