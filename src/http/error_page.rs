//! Error bodies in Skitai's shape: JSON `{"code": 40400, "message": "not found"}`,
//! or a small HTML page for clients that prefer `text/html`.

use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue};

use super::{Body, Response};

/// Builds the error response for `status`; `detail` is included only in devel mode.
/// `accept` is the request's `Accept` field, if it had one.
pub fn error_response(status: StatusCode, accept: Option<&HeaderValue>, detail: Option<&str>) -> Response {
    let reason = status.canonical_reason().unwrap_or("error").to_ascii_lowercase();
    let code = u32::from(status.as_u16()) * 100;
    let (content_type, body) = if prefers_html(accept) {
        let mut page = format!(
            "<!DOCTYPE html>\n<html><head><title>{status} {reason}</title></head>\
             <body><h1>{status} {reason}</h1>",
            status = status.as_u16()
        );
        if let Some(detail) = detail {
            page.push_str("<pre>");
            page.push_str(&escape_html(detail));
            page.push_str("</pre>");
        }
        page.push_str("</body></html>\n");
        ("text/html; charset=utf-8", page)
    } else {
        let mut json = format!("{{\"code\": {code}, \"message\": \"{reason}\"");
        if let Some(detail) = detail {
            json.push_str(", \"traceback\": \"");
            escape_json_into(detail, &mut json);
            json.push('"');
        }
        json.push('}');
        ("application/json", json)
    };
    let mut res = http::Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// True when the `Accept` header ranks `text/html` above JSON.
fn prefers_html(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let quality = |wanted: &str| -> f32 {
        accept
            .split(',')
            .filter_map(|item| {
                let mut parts = item.split(';');
                let media = parts.next()?.trim();
                if !media.eq_ignore_ascii_case(wanted) {
                    return None;
                }
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some(q)
            })
            .fold(0.0, f32::max)
    };
    let html = quality("text/html");
    html > 0.0 && html > quality("application/json")
}

/// Escapes text for HTML content and attribute values.
pub(crate) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn escape_json_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_text(res: Response) -> String {
        let bytes = res.into_body().try_into_full().unwrap().unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn json_by_default() {
        let res = error_response(StatusCode::NOT_FOUND, None, None);
        assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(body_text(res), r#"{"code": 40400, "message": "not found"}"#);
    }

    #[test]
    fn html_when_preferred() {
        let h = HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8");
        let res = error_response(StatusCode::BAD_REQUEST, Some(&h), Some("<x>"));
        assert!(res.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        let body = body_text(res);
        assert!(body.contains("400 bad request") && body.contains("&lt;x&gt;"), "{body}");
    }

    #[test]
    fn json_wins_when_ranked_higher() {
        let h = HeaderValue::from_static("text/html;q=0.5, application/json");
        let res = error_response(StatusCode::BAD_REQUEST, Some(&h), Some("a \"b\"\n"));
        assert_eq!(body_text(res), r#"{"code": 40000, "message": "bad request", "traceback": "a \"b\"\n"}"#);
    }
}
