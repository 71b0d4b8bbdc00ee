//! A reader guard that keeps the encryption layer's first error, and integrity-error detection.
use super::*;

/// What the first error seen by a [`Guard`] was.
#[derive(Debug, Clone)]
pub(super) struct FirstError {
    pub(super) kind: io::ErrorKind,
    /// An MDC mismatch or an AEAD tag failure.
    pub(super) integrity: bool,
    pub(super) text: String,
}

/// Passes a reader through, remembering the first error and never touching the inner reader
/// after it: rPGP's readers may panic when used again after an error, and the layers above
/// replace the precise error (e.g. the MDC mismatch) with a vaguer one of their own.
pub(super) struct Guard<R> {
    pub(super) inner: R,
    pub(super) failure: Option<FirstError>,
}

impl<R> Guard<R> {
    pub(super) fn new(inner: R) -> Self {
        Guard {
            inner,
            failure: None,
        }
    }

    pub(super) fn failure(&self) -> Option<&FirstError> {
        self.failure.as_ref()
    }
}

pub(super) fn record(failure: &mut Option<FirstError>, err: &io::Error) {
    if failure.is_none() {
        *failure = Some(FirstError {
            kind: err.kind(),
            integrity: is_integrity_error(err),
            text: err.to_string(),
        });
    }
}

pub(super) fn replay(failure: &FirstError) -> io::Error {
    io::Error::new(failure.kind, failure.text.clone())
}

impl<R> fmt::Debug for Guard<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(f) = &self.failure {
            return Err(replay(f));
        }
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                record(&mut self.failure, e);
            }
        })
    }
}

impl<R: BufRead> BufRead for Guard<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let Guard { inner, failure } = self;
        if let Some(f) = failure {
            return Err(replay(f));
        }
        match inner.fill_buf() {
            Ok(buf) => Ok(buf),
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    record(failure, &e);
                }
                Err(e)
            }
        }
    }

    fn consume(&mut self, amt: usize) {
        if self.failure.is_none() {
            self.inner.consume(amt);
        }
    }
}

/// Whether an error from the encryption layer is an integrity failure: rPGP's MDC mismatch
/// (`Error::MdcError`) or an AEAD authentication failure, possibly wrapped.
pub(super) fn is_integrity_error(err: &io::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = match err.get_ref() {
        Some(inner) => Some(inner),
        None => return false,
    };
    let mut depth = 0;
    while let Some(e) = current {
        depth += 1;
        if depth > 16 {
            return false;
        }
        if let Some(pe) = e.downcast_ref::<pgp::errors::Error>() {
            match pe {
                pgp::errors::Error::MdcError | pgp::errors::Error::Aead { .. } => return true,
                pgp::errors::Error::IO { source, .. } => return is_integrity_error(source),
                _ => {}
            }
        }
        if e.downcast_ref::<pgp::crypto::aead::Error>().is_some() {
            return true;
        }
        if let Some(io_err) = e.downcast_ref::<io::Error>() {
            return is_integrity_error(io_err);
        }
        current = e.source();
    }
    false
}
