//! One error type for the engine, with a kind that decides the HTTP status.
//!
//! Following pingora, an error says *where* it came from (the client, an
//! upstream, or ourselves) and what went wrong; [`Error::status`] is the one
//! place that maps an error to a status code.

use std::fmt;

use http::StatusCode;

/// The crate-wide result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, precise enough to choose a response status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request could not be parsed or is ambiguous (400).
    BadRequest,
    /// The request head is larger than `max_header_size` or has too many fields (431).
    HeaderTooLarge,
    /// The request target is longer than `max_uri_size` (414).
    UriTooLong,
    /// The request body exceeds `max_upload_size` (413).
    PayloadTooLarge,
    /// The client was too slow sending the request (408).
    Timeout,
    /// An `Expect` value other than `100-continue` (417).
    ExpectationFailed,
    /// A transfer coding or feature we do not implement (501).
    NotImplemented,
    /// The peer closed the connection or the socket failed; nobody to answer.
    Io,
    /// An upstream server failed (502).
    Upstream,
    /// An upstream server did not answer in time (504).
    UpstreamTimeout,
    /// A configuration value is invalid.
    Config,
    /// A bug or an unexpected condition inside the server (500).
    Internal,
}

/// An engine error: a kind plus a human-readable detail and an optional source.
pub struct Error {
    kind: ErrorKind,
    detail: Box<str>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// Creates an error of `kind` with a message for logs and devel-mode bodies.
    pub fn new(kind: ErrorKind, detail: impl Into<Box<str>>) -> Self {
        Error { kind, detail: detail.into(), source: None }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// A configuration error naming the key and the problem.
    pub fn config(key: &str, problem: impl fmt::Display) -> Self {
        Error::new(ErrorKind::Config, format!("{key}: {problem}"))
    }

    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message given when the error was made.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The status code a client should see for this error, or `None` when the
    /// peer is gone and nothing can be sent.
    pub fn status(&self) -> Option<StatusCode> {
        Some(match self.kind {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Timeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::ExpectationFailed => StatusCode::EXPECTATION_FAILED,
            ErrorKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorKind::Upstream => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Config | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Io => return None,
        })
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("detail", &self.detail);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let kind = if e.kind() == std::io::ErrorKind::TimedOut { ErrorKind::Timeout } else { ErrorKind::Io };
        Error::new(kind, "i/o error").with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_statuses() {
        assert_eq!(Error::new(ErrorKind::BadRequest, "x").status(), Some(StatusCode::BAD_REQUEST));
        assert_eq!(Error::new(ErrorKind::HeaderTooLarge, "x").status().unwrap().as_u16(), 431);
        assert_eq!(Error::new(ErrorKind::UriTooLong, "x").status().unwrap().as_u16(), 414);
        assert_eq!(Error::new(ErrorKind::PayloadTooLarge, "x").status().unwrap().as_u16(), 413);
        assert_eq!(Error::new(ErrorKind::Io, "x").status(), None);
    }

    #[test]
    fn config_error_names_key() {
        let e = Error::config("server.port", "expected an integer");
        assert_eq!(e.to_string(), "server.port: expected an integer");
    }
}
