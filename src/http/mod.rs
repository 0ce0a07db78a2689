//! HTTP types shared by every protocol: requests, responses, bodies, dates and error pages.

mod body;
pub mod date;
mod error_page;
mod file_body;
pub(crate) mod header_pool;

pub use body::Body;
pub(crate) use body::BodySource;
pub use error_page::error_response;
pub(crate) use error_page::escape_html;
pub use file_body::FileBody;
pub(crate) use file_body::FilePart;

use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderValue, LOCATION};

/// A request as handlers see it.
pub type Request = http::Request<Body>;
/// A response as handlers return it.
pub type Response = http::Response<Body>;

/// `Server` header value sent on every response.
pub const SERVER_NAME: &str = concat!("skitai/", env!("CARGO_PKG_VERSION"));

/// Short constructors for common responses: `Response::text("hi")`.
pub trait ResponseExt: Sized {
    /// 200 with `text/plain; charset=utf-8`.
    fn text(body: impl Into<Bytes>) -> Self;
    /// 200 with `text/html; charset=utf-8`.
    fn html(body: impl Into<Bytes>) -> Self;
    /// 200 with `application/json` (the body is sent as given).
    fn json_bytes(body: impl Into<Bytes>) -> Self;
    /// 200 with `application/json`: `value` serialized (a value that cannot
    /// be serialized gives a 500).
    fn json<T: serde::Serialize + ?Sized>(value: &T) -> Self;
    /// An empty response with `status`.
    fn empty(status: StatusCode) -> Self;
    /// A redirect with `status` (301, 302, 303, 307, 308) to `location`.
    fn redirect(status: StatusCode, location: &str) -> Self;
}

#[inline]
fn with_type(body: Bytes, content_type: header_pool::Typed) -> Response {
    let mut res = http::Response::new(Body::full(body));
    header_pool::install(res.headers_mut(), header_pool::take_typed(content_type));
    res
}

impl ResponseExt for Response {
    fn text(body: impl Into<Bytes>) -> Self {
        with_type(body.into(), header_pool::Typed::TextPlain)
    }

    fn html(body: impl Into<Bytes>) -> Self {
        with_type(body.into(), header_pool::Typed::TextHtml)
    }

    fn json_bytes(body: impl Into<Bytes>) -> Self {
        with_type(body.into(), header_pool::Typed::Json)
    }

    fn json<T: serde::Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => with_type(body.into(), header_pool::Typed::Json),
            Err(_) => Response::empty(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    fn empty(status: StatusCode) -> Self {
        let mut res = http::Response::new(Body::empty());
        *res.status_mut() = status;
        res
    }

    fn redirect(status: StatusCode, location: &str) -> Self {
        let mut res = Response::empty(status);
        match HeaderValue::from_str(location) {
            Ok(v) => {
                res.headers_mut().insert(LOCATION, v);
            }
            Err(_) => *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
        }
        res
    }
}
