//! The WebSocket opening handshake: checking an upgrade request (RFC 6455
//! §4.2.1 over HTTP/1.1, RFC 8441 extended CONNECT over HTTP/2), the
//! `Sec-WebSocket-Accept` value, subprotocol choice and the
//! permessage-deflate offer (RFC 7692 §7.1).

use base64ct::{Base64, Encoding};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Version};

use super::deflate::DeflateParams;

/// The GUID RFC 6455 §1.3 appends to the key.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade request is refused: the status and a short reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) reason: &'static str,
}

const fn refuse(status: StatusCode, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// What a valid upgrade request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Offer {
    /// `Sec-WebSocket-Accept` to send (HTTP/1.1 only; RFC 8441 has none).
    pub(crate) accept: Option<HeaderValue>,
    /// The subprotocols the client offered, in its order of preference.
    pub(crate) protocols: Vec<String>,
    /// The `Origin` field, if any.
    pub(crate) origin: Option<HeaderValue>,
}

/// True when `request` asks for a WebSocket at all (an `Upgrade: websocket`
/// field, or an HTTP/2 extended CONNECT with `:protocol websocket`), valid or not.
pub(crate) fn is_upgrade_request<B>(request: &http::Request<B>) -> bool {
    if request.version() == Version::HTTP_2 {
        return request.method() == Method::CONNECT
            && request.extensions().get::<h2::ext::Protocol>().is_some_and(|p| p.as_str() == "websocket");
    }
    has_token(request.headers(), header::UPGRADE, "websocket")
}

/// Checks an upgrade request; the refusal says which status to answer.
pub(crate) fn check<B>(request: &http::Request<B>) -> Result<Offer, Refusal> {
    let headers = request.headers();
    let accept = if request.version() == Version::HTTP_2 {
        // RFC 8441 §4: extended CONNECT, no key, no Upgrade/Connection fields.
        if request.method() != Method::CONNECT {
            return Err(refuse(StatusCode::METHOD_NOT_ALLOWED, "a WebSocket over HTTP/2 is opened with CONNECT"));
        }
        if request.extensions().get::<h2::ext::Protocol>().is_none_or(|p| p.as_str() != "websocket") {
            return Err(refuse(StatusCode::BAD_REQUEST, "the :protocol pseudo-header must be websocket"));
        }
        check_version(headers)?;
        None
    } else {
        if request.method() != Method::GET {
            return Err(refuse(StatusCode::METHOD_NOT_ALLOWED, "a WebSocket is opened with GET"));
        }
        if request.version() < Version::HTTP_11 {
            return Err(refuse(StatusCode::BAD_REQUEST, "a WebSocket needs HTTP/1.1"));
        }
        if !headers.contains_key(header::HOST) {
            return Err(refuse(StatusCode::BAD_REQUEST, "the Host field is missing"));
        }
        if !has_token(headers, header::UPGRADE, "websocket") {
            return Err(refuse(
                StatusCode::UPGRADE_REQUIRED,
                "this resource speaks WebSocket: send Upgrade: websocket",
            ));
        }
        if !has_token(headers, header::CONNECTION, "upgrade") {
            return Err(refuse(StatusCode::BAD_REQUEST, "the Connection field must contain upgrade"));
        }
        check_version(headers)?;
        let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
        let (Some(key), None) = (keys.next(), keys.next()) else {
            return Err(refuse(StatusCode::BAD_REQUEST, "exactly one Sec-WebSocket-Key is required"));
        };
        let mut nonce = [0u8; 16];
        match Base64::decode(key.as_bytes(), &mut nonce) {
            Ok(decoded) if decoded.len() == 16 => {}
            _ => return Err(refuse(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key must be 16 bytes in base64")),
        }
        Some(accept_value(key.as_bytes()))
    };
    let protocols = tokens(headers, header::SEC_WEBSOCKET_PROTOCOL).map(str::to_owned).collect();
    Ok(Offer { accept, protocols, origin: headers.get(header::ORIGIN).cloned() })
}

/// `Sec-WebSocket-Version` must be 13; anything else gets a 426 naming 13 (§4.4).
fn check_version(headers: &HeaderMap) -> Result<(), Refusal> {
    match headers.get(header::SEC_WEBSOCKET_VERSION) {
        Some(v) if v.as_bytes().trim_ascii() == b"13" => Ok(()),
        Some(_) => Err(refuse(StatusCode::UPGRADE_REQUIRED, "only WebSocket version 13 is supported")),
        None => Err(refuse(StatusCode::BAD_REQUEST, "Sec-WebSocket-Version is missing")),
    }
}

/// `base64(SHA-1(key + GUID))` (§4.2.2).
pub(crate) fn accept_value(key: &[u8]) -> HeaderValue {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.trim_ascii());
    ctx.update(GUID);
    let digest = ctx.finish();
    let mut out = [0u8; 28];
    let encoded = Base64::encode(digest.as_ref(), &mut out).expect("20 bytes encode to 28");
    HeaderValue::from_str(encoded).expect("base64 is a valid field value")
}

/// The comma-separated tokens of every `name` field, trimmed, empty ones skipped.
fn tokens(headers: &HeaderMap, name: header::HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether a `name` field lists `token` (case-insensitively).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token))
}

/// The first permessage-deflate offer in the request we can accept, as the
/// parameters to run with (None: no offer, or none we can honour).
pub(crate) fn deflate_offer(headers: &HeaderMap) -> Option<DeflateParams> {
    // Offers are comma-separated; parameters follow `;`.
    tokens(headers, header::SEC_WEBSOCKET_EXTENSIONS).find_map(|offer| {
        let mut parts = offer.split(';').map(str::trim);
        if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
            return None;
        }
        DeflateParams::from_offer(parts)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(headers: &[(&str, &str)]) -> http::Request<()> {
        let mut req = http::Request::get("/chat").body(()).unwrap();
        for (k, v) in headers {
            req.headers_mut().append(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        req
    }

    const GOOD: [(&str, &str); 5] = [
        ("host", "example.com"),
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];

    #[test]
    fn rfc_6455_example_accept_value() {
        assert_eq!(accept_value(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let offer = check(&upgrade(&GOOD)).unwrap();
        assert_eq!(offer.accept.unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn refusals_name_the_status() {
        let without = |skip: &str| {
            let kept: Vec<_> = GOOD.iter().copied().filter(|(k, _)| *k != skip).collect();
            check(&upgrade(&kept)).unwrap_err().status
        };
        assert_eq!(without("host"), StatusCode::BAD_REQUEST);
        assert_eq!(without("upgrade"), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(without("connection"), StatusCode::BAD_REQUEST);
        assert_eq!(without("sec-websocket-key"), StatusCode::BAD_REQUEST);
        assert_eq!(without("sec-websocket-version"), StatusCode::BAD_REQUEST);
        let with = |k: &str, v: &str| {
            let mut h: Vec<_> = GOOD.iter().copied().filter(|(n, _)| *n != k).collect();
            h.push((k, v));
            check(&upgrade(&h)).unwrap_err().status
        };
        assert_eq!(with("sec-websocket-version", "8"), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(with("sec-websocket-key", "c2hvcnQ="), StatusCode::BAD_REQUEST, "decodes to 5 bytes");
        assert_eq!(with("sec-websocket-key", "not base64!!"), StatusCode::BAD_REQUEST);
        let mut post = upgrade(&GOOD);
        *post.method_mut() = Method::POST;
        assert_eq!(check(&post).unwrap_err().status, StatusCode::METHOD_NOT_ALLOWED);
        let mut old = upgrade(&GOOD);
        *old.version_mut() = Version::HTTP_10;
        assert_eq!(check(&old).unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn subprotocols_and_extensions_are_read_in_order() {
        let mut h = GOOD.to_vec();
        h.push(("sec-websocket-protocol", "v2.chat, v1.chat"));
        h.push(("sec-websocket-protocol", "superchat"));
        let offer = check(&upgrade(&h)).unwrap();
        assert_eq!(offer.protocols, ["v2.chat", "v1.chat", "superchat"]);

        let ext = |v: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, v.parse().unwrap());
            deflate_offer(&headers)
        };
        assert!(ext("x-webkit-deflate-frame").is_none());
        let p = ext("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(p.response(), "permessage-deflate");
        let p = ext("permessage-deflate; server_max_window_bits=8, permessage-deflate; server_no_context_takeover")
            .unwrap();
        assert_eq!(p.response(), "permessage-deflate; server_no_context_takeover", "the first offer is declined");
    }

    #[test]
    fn http2_extended_connect() {
        let mut req = http::Request::builder()
            .method(Method::CONNECT)
            .version(Version::HTTP_2)
            .uri("/chat")
            .header("sec-websocket-version", "13")
            .body(())
            .unwrap();
        assert!(!is_upgrade_request(&req));
        assert_eq!(check(&req).unwrap_err().status, StatusCode::BAD_REQUEST);
        req.extensions_mut().insert(h2::ext::Protocol::from_static("websocket"));
        assert!(is_upgrade_request(&req));
        assert_eq!(check(&req).unwrap().accept, None);
    }
}
