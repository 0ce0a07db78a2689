//! HTTP/1.1 behaviour of the `hello` example over loopback, with raw sockets and
//! curl, each case on both I/O drivers (RFC 9112).

#[macro_use]
mod support;

use std::time::Duration;

use support::*;

/// Config with small limits, for the cases that need them.
const SMALL_LIMITS: &str = r#"
[server]
max_upload_size = "1KiB"
max_header_size = "2KiB"
max_uri_size = "1KiB"
max_headers = 10
"#;

both_drivers! {
    /// `GET /` answers the example's greeting with the expected headers.
    fn hello_world(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        c.send(get("/"));
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.version, "HTTP/1.1");
        assert_eq!(r.body_str(), "Hello, World!");
        assert_eq!(r.header("content-length"), Some("13"));
        assert!(r.header("content-type").unwrap_or_default().starts_with("text/plain"), "{r:?}");
        r.assert_server_and_date();
    }
}

both_drivers! {
    /// curl sees the same thing as the raw client.
    fn hello_world_curl(io) {
        let server = hello(io).start();
        let out = curl(&["-i", &server.url("/")]);
        assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("\r\n\r\nHello, World!"), "{text}");
    }
}

both_drivers! {
    /// Several requests in sequence on one connection (1.1 is persistent by default).
    fn keep_alive_reuse(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        for i in 0..10 {
            if i % 2 == 0 {
                c.send(get("/"));
                let r = c.read_response();
                assert_eq!((r.status, r.body_str().as_str()), (200, "Hello, World!"), "request {i}");
            } else {
                let body = format!("request number {i}");
                c.send(post("/echo", body.as_bytes()));
                let r = c.read_response();
                assert_eq!((r.status, r.body_str()), (200, body), "request {i}");
            }
            assert!(!peer_closed(&c), "connection closed after request {i}");
        }
    }
}

/// True if the server has already closed `c` (checked without blocking long).
fn peer_closed(c: &Conn) -> bool {
    let mut byte = [0u8; 1];
    c.stream.set_nonblocking(true).unwrap();
    let closed = matches!(c.stream.peek(&mut byte), Ok(0));
    c.stream.set_nonblocking(false).unwrap();
    closed
}

both_drivers! {
    /// 20 requests in one write get 20 responses, in order.
    fn pipelining_order(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        let mut batch = Vec::new();
        for i in 0..20 {
            match i % 3 {
                0 => batch.extend_from_slice(get("/").as_bytes()),
                1 => batch.extend_from_slice(&post("/echo", format!("body-{i}").as_bytes())),
                _ => batch.extend_from_slice(format!("HEAD / HTTP/1.1\r\nHost: localhost\r\nX-N: {i}\r\n\r\n").as_bytes()),
            }
        }
        c.send(&batch);
        for i in 0..20 {
            match i % 3 {
                0 => {
                    let r = c.read_response();
                    assert_eq!((r.status, r.body_str().as_str()), (200, "Hello, World!"), "response {i}");
                }
                1 => {
                    let r = c.read_response();
                    assert_eq!((r.status, r.body_str()), (200, format!("body-{i}")), "response {i}");
                }
                _ => {
                    let r = c.read_head_response();
                    assert_eq!(r.status, 200, "response {i}");
                    assert_eq!(r.header("content-length"), Some("13"), "response {i}");
                }
            }
        }
        // Nothing beyond the 20 responses (a HEAD body would show up here).
        assert_eq!(c.closed_within(Duration::from_millis(300)), Ok(false), "unexpected bytes after the batch");
    }
}

both_drivers! {
    /// A slow request pipelined behind a quick one does not hold back the
    /// quick one's answer: it is written while the slow handler still runs
    /// (the slow one takes 30 s; the first answer must come well before).
    fn pipelined_answer_not_held_by_a_slow_request(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        let mut batch = get("/").into_bytes();
        batch.extend_from_slice(get("/delay?ms=30000").as_bytes());
        c.send(&batch);
        let r = c.read_response(); // bounded by IO_TIMEOUT (10 s), a third of the delay
        assert_eq!((r.status, r.body_str().as_str()), (200, "Hello, World!"));
    }
}

both_drivers! {
    /// A larger pipelined batch split across many TCP segments and write calls.
    fn pipelining_many_small_writes(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        let mut batch = Vec::new();
        for i in 0..200 {
            batch.extend_from_slice(&post("/echo", format!("{i:05}").as_bytes()));
        }
        let writer = c.send_in_background(batch);
        for i in 0..200 {
            let r = c.read_response();
            assert_eq!((r.status, r.body_str()), (200, format!("{i:05}")), "response {i}");
        }
        writer.join().unwrap().unwrap();
    }
}

both_drivers! {
    /// HTTP/1.0 without keep-alive: one response, then the server closes.
    fn http10_closes(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        c.send("GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.body_str(), "Hello, World!");
        assert!(!r.connection_has("keep-alive"), "{r:?}");
        c.expect_closed();
    }
}

both_drivers! {
    /// HTTP/1.0 with `Connection: keep-alive` keeps the connection open.
    fn http10_keep_alive_when_asked(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        for _ in 0..3 {
            c.send("GET / HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n");
            let r = c.read_response();
            assert_eq!(r.status, 200);
            assert_eq!(r.body_str(), "Hello, World!");
            assert!(r.connection_has("keep-alive"), "1.0 keep-alive response must say so: {r:?}");
        }
    }
}

both_drivers! {
    /// `Connection: close` gets the response with `Connection: close`, then the close,
    /// and a request pipelined after it is not answered.
    fn connection_close(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        c.send(format!("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n{}", get("/")));
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert!(r.connection_has("close"), "{r:?}");
        c.expect_closed();
    }
}

both_drivers! {
    /// `HEAD /` has the real Content-Length and no body.
    fn head(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        c.send("HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let r = c.read_head_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("13"));
        r.assert_server_and_date();
        // If a body had been sent it would be read as the start of this response.
        c.send(get("/"));
        let r = c.read_response();
        assert_eq!((r.status, r.body_str().as_str()), (200, "Hello, World!"));
        assert!(c.leftover().is_empty());

        let out = curl(&["-I", &server.url("/")]);
        let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(out.status.success(), "curl -I: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("content-length: 13"), "{text}");
    }
}

both_drivers! {
    /// HEAD gets no body whatever the response: a streamed one (`/echo`),
    /// an error page (404), a mount redirect (308) and a handler panic (500).
    /// Each keeps the head its GET would have; a body byte sent by mistake
    /// would be read as the start of the next response.
    fn head_of_streamed_error_and_redirect_responses(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        for (path, status) in [("/echo", 200), ("/no/such/page", 404), ("/v1", 308), ("/panic", 500)] {
            c.send(format!("HEAD {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"));
            let r = c.read_head_response();
            assert_eq!(r.status, status, "HEAD {path}: {r:?}");
            r.assert_server_and_date();
            c.send(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"));
            let g = c.read_response();
            assert_eq!(g.status, status, "GET {path} after HEAD: {g:?}");
            match status {
                // The same framing as the GET's: chunked, or the GET's real length.
                200 => assert_eq!(r.chunked, g.chunked, "HEAD {path}: {r:?} / GET: {g:?}"),
                _ => assert_eq!(
                    r.header("content-length"),
                    Some(g.body.len().to_string().as_str()),
                    "HEAD {path} gives the GET body's length"
                ),
            }
            if status == 308 {
                assert_eq!(r.header("location"), Some("/v1/"));
            }
        }
        c.send(get("/"));
        assert_eq!(c.read_response().body_str(), "Hello, World!");
        assert!(c.leftover().is_empty());
    }
}

both_drivers! {
    /// Python's `http.client` on one kept-alive connection: GET, HEAD, a
    /// chunked upload echoed, a Content-Length upload with `Expect:
    /// 100-continue` (the body sent at once, as that client does), a 404
    /// and a last GET, all over the same local port.
    fn python_http_client_session(io) {
        let server = hello(io).start();
        let mut args = vec!["session".to_owned()];
        args.extend(addr_args(server.addr()));
        let found = py_probe(&python_with("http.client"), "http1_probe.py", &args, Duration::from_secs(60));
        found.expect("get_status", "200");
        found.expect("get_body", "Hello, World!");
        found.expect("get_type", "text/plain; charset=utf-8");
        assert!(found.get("get_server").starts_with("skitai/"), "{}", found.text);
        found.expect("head_status", "200");
        // The GET's length announced, no body read (http.client reads none for HEAD).
        found.expect("head_clen", "13");
        found.expect("head_length", "0");
        found.expect("chunked_status", "200");
        found.expect("chunked_matches", "True");
        found.expect("expect_status", "200");
        found.expect("expect_matches", "True");
        found.expect("missing_status", "404");
        found.expect("after_body", "Hello, World!");
        found.expect("one_connection", "True");
    }
}

both_drivers! {
    /// A handler that answers without reading a body too long to skip
    /// (1 MB by Content-Length, or chunked of unknown length): its response
    /// says `Connection: close`, and the connection then closes. (It used to
    /// promise keep-alive and close anyway, under a client that may already
    /// have sent its next request on it.)
    fn unread_long_body_answer_says_close(io) {
        let server = hello(io).start();
        for head in [
            "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let mut c = server.connect();
            let first_piece = if head.contains("chunked") { "400\r\n" } else { "" };
            c.send(format!("{head}{first_piece}{}", "x".repeat(1024)));
            let r = c.read_response();
            assert_eq!(r.body_str(), "Hello, World!", "{head:?}");
            assert!(r.connection_has("close"), "{head:?}: {r:?}");
            match c.closed_within(Duration::from_secs(10)) {
                Ok(true) => {}
                other => panic!("{head:?}: not closed after the answer ({other:?})"),
            }
        }
        // A short unread body is skipped instead, and the connection kept.
        let mut c = server.connect();
        c.send("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello");
        let r = c.read_response();
        assert!(!r.connection_has("close"), "{r:?}");
        c.send(get("/"));
        assert_eq!(c.read_response().body_str(), "Hello, World!");
    }
}

both_drivers! {
    /// A response body whose stream panics: before its first chunk, the
    /// client gets the answer pipelined ahead of it, then a 500, then a
    /// close; after its first chunk, the head and that chunk, then a close
    /// (the chunked body never ends, so the client sees it cut off). The
    /// shard serves on.
    fn panicking_response_body(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        c.send(format!("{}{}", get("/"), get("/panic?when=body")));
        assert_eq!(c.read_response().body_str(), "Hello, World!");
        let r = c.read_response();
        assert_eq!(r.status, 500, "{r:?}");
        c.expect_closed();

        let mut raw = std::net::TcpStream::connect(server.addr()).expect("connect");
        raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        std::io::Write::write_all(&mut raw, get("/panic?when=midbody").as_bytes()).unwrap();
        let mut bytes = Vec::new();
        // Until the server closes (a reset counts too).
        let _ = std::io::Read::read_to_end(&mut raw, &mut bytes);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 200") && text.contains("a chunk"), "{text}");
        assert!(!text.ends_with("0\r\n\r\n"), "the body was ended as if complete: {text}");
        let mut c = server.connect();
        c.send(get("/"));
        assert_eq!(c.read_response().body_str(), "Hello, World!");
    }
}

both_drivers! {
    /// Content-Length upload echoed back with a Content-Length.
    fn content_length_echo(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        let body = test_bytes(300_000, 7);
        let mut req = format!("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        req.extend_from_slice(&body);
        let writer = c.send_in_background(req);
        let r = c.read_response();
        writer.join().unwrap().unwrap();
        assert_eq!(r.status, 200);
        assert!(!r.chunked, "a Content-Length request gets a Content-Length response");
        assert_eq!(r.header("content-length"), Some(body.len().to_string().as_str()));
        assert!(r.body == body, "echoed body differs ({} bytes back)", r.body.len());
        // The connection is still usable.
        c.send(get("/"));
        assert_eq!(c.read_response().status, 200);
    }
}

both_drivers! {
    /// Chunked upload (raw): extensions and trailers accepted, body echoed chunked.
    fn chunked_upload_echo_raw(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        let body = test_bytes(100_000, 11);
        let mut req = b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        // Varying chunk sizes, one with an extension, upper-case hex, then a trailer.
        let mut rest = &body[..];
        let mut k = 1usize;
        while !rest.is_empty() {
            let n = k.min(rest.len());
            let size = if k & 1 == 0 { format!("{n:X}") } else { format!("{n:x}") };
            let ext = if k == 3 { ";name=value" } else { "" };
            req.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
            req.extend_from_slice(&rest[..n]);
            req.extend_from_slice(b"\r\n");
            rest = &rest[n..];
            k = k * 3 + 1;
        }
        req.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
        let writer = c.send_in_background(req);
        let r = c.read_response();
        writer.join().unwrap().unwrap();
        assert_eq!(r.status, 200);
        assert!(r.chunked, "a chunked request gets a chunked echo: {:?}", r.headers);
        assert!(r.body == body, "echoed body differs ({} bytes back)", r.body.len());
        c.send(get("/"));
        assert_eq!(c.read_response().status, 200, "connection usable after a chunked body with trailers");
    }
}

/// Uploads `body` to `/echo` with curl (plus `extra` arguments); returns the
/// final status, its header fields (lower-case names) and the body curl got back.
fn curl_echo(server: &Server, body: &[u8], extra: &[&str]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    let output = dir.path().join("out.bin");
    let headers = dir.path().join("headers.txt");
    std::fs::write(&input, body).unwrap();
    let data = format!("@{}", input.display());
    let mut args: Vec<&str> = extra.to_vec();
    let url = server.url("/echo");
    args.extend(["--data-binary", &data, "-D", headers.to_str().unwrap(), "-o", output.to_str().unwrap(), &url]);
    let out = curl(&args);
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    let (status, hdrs) = last_header_block(&std::fs::read_to_string(&headers).unwrap());
    (status, hdrs, std::fs::read(&output).unwrap())
}

both_drivers! {
    /// Chunked upload with curl, from a file.
    fn chunked_upload_echo_curl(io) {
        let server = hello(io).start();
        let body = test_bytes(3 << 20, 3);
        let (status, hdrs, echoed) = curl_echo(&server, &body, &["-H", "Transfer-Encoding: chunked"]);
        assert_eq!(status, 200);
        assert!(
            hdrs.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")),
            "response to a chunked upload should be chunked: {hdrs:?}"
        );
        assert!(echoed == body, "curl got a different body back");
    }
}

both_drivers! {
    /// Content-Length upload with curl (curl adds `Expect: 100-continue` for large bodies).
    fn content_length_upload_echo_curl(io) {
        let server = hello(io).start();
        let body = test_bytes(2 << 20, 5);
        let (status, hdrs, echoed) = curl_echo(&server, &body, &[]);
        assert_eq!(status, 200);
        assert!(hdrs.iter().any(|(n, v)| n == "content-length" && v == &body.len().to_string()), "{hdrs:?}");
        assert!(echoed == body, "curl got a different body back");
    }
}

both_drivers! {
    /// `Expect: 100-continue` within the limit: 100 first, then the final response.
    fn expect_100_continue(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        c.send("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
        let interim = c.read_response();
        assert_eq!(interim.status, 100, "expected 100 Continue before the body was sent: {interim:?}");
        assert_eq!(interim.version, "HTTP/1.1");
        c.send("hello");
        let r = c.read_response();
        assert_eq!((r.status, r.body_str().as_str()), (200, "hello"));
        // And chunked with Expect.
        c.send("POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
        let interim = c.read_response();
        assert_eq!(interim.status, 100, "{interim:?}");
        c.send(chunked(b"chunky", 4));
        let r = c.read_response();
        assert_eq!((r.status, r.body_str().as_str()), (200, "chunky"));
    }
}

both_drivers! {
    /// The 100 is sent only when the body is asked for. A handler that
    /// reads the whole body first (`/upload`) gets it after a 100; a
    /// request answered without its body (a 404, or `/` which ignores it)
    /// gets its final response with no 100 before it, and `Connection:
    /// close` (the client, never invited, may not send the body at all).
    fn expect_100_continue_only_when_the_body_is_read(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        c.send("POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
        let interim = c.read_response();
        assert_eq!(interim.status, 100, "{interim:?}");
        c.send("hello");
        let r = c.read_response();
        assert_eq!((r.status, r.body_str().as_str()), (200, "received 5 bytes"), "{r:?}");
        assert!(!r.connection_has("close"), "{r:?}");
        for (path, status) in [("/no/such/page", 404), ("/", 200)] {
            let mut c = server.connect();
            c.send(format!(
                "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
            ));
            let r = c.read_response();
            assert_eq!(r.status, status, "POST {path}: a final response, no 100 first: {r:?}");
            assert!(r.connection_has("close"), "POST {path}: {r:?}");
            match c.closed_within(Duration::from_secs(10)) {
                Ok(true) => {}
                other => panic!("POST {path}: not closed after the answer ({other:?})"),
            }
        }
    }
}

both_drivers! {
    /// `Expect: 100-continue` with a too-large Content-Length: 413 without a 100, then close.
    fn expect_100_too_large(io) {
        let server = hello(io).config(SMALL_LIMITS).start();
        let mut c = server.connect();
        c.send("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n");
        let r = c.read_response();
        assert_eq!(r.status, 413, "{r:?}");
        r.assert_json_error(413, "payload too large");
        c.expect_closed();
    }
}

both_drivers! {
    /// Content-Length over `max_upload_size`: 413 is sent before any body byte, then close.
    fn payload_too_large_before_body(io) {
        let server = hello(io).config(SMALL_LIMITS).start();
        let mut c = server.connect();
        // Only the head: the 413 must come without the server waiting for the body.
        c.send("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n");
        let r = c.read_response();
        r.assert_json_error(413, "payload too large");
        r.assert_server_and_date();
        c.expect_closed();
    }
}

both_drivers! {
    /// A client that sends the too-large body right away (no Expect) still gets
    /// the 413: the server must not reset the connection before the client reads it.
    fn payload_too_large_with_body_already_sent(io) {
        let server = hello(io).config(SMALL_LIMITS).start();
        let mut c = server.connect();
        let body = vec![b'x'; 200_000];
        let mut req = format!("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        req.extend_from_slice(&body);
        // The server stops reading, so the write may fail part-way; that is fine.
        let writer = c.send_in_background(req);
        match c.try_read_response(false) {
            Ok(r) => r.assert_json_error(413, "payload too large"),
            Err(e) => panic!("no 413 for an eagerly sent oversized body: {}", describe(&e)),
        }
        let _ = writer.join();
    }
}

both_drivers! {
    /// A body exactly at the limit is accepted.
    fn body_at_limit_accepted(io) {
        let server = hello(io).config(SMALL_LIMITS).start();
        let mut c = server.connect();
        let body = vec![b'a'; 1024];
        c.send(post("/echo", &body));
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 1024);
    }
}

both_drivers! {
    /// The default limit is 256 MiB: a larger Content-Length is refused up front.
    fn payload_too_large_default_limit(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        c.send(format!("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n", (256u64 << 20) + 1));
        let r = c.read_response();
        r.assert_json_error(413, "payload too large");
        c.expect_closed();
    }
}

both_drivers! {
    /// Header block over the default 16 KiB → 431, then close.
    fn header_block_too_large(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        c.send(format!("GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n", "a".repeat(17 * 1024)));
        let r = c.read_response();
        r.assert_json_error(431, "request header fields too large");
        c.expect_closed();
    }
}

both_drivers! {
    /// A head just under the default limits is fine.
    fn header_block_under_limit(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        let mut req = String::from("GET / HTTP/1.1\r\nHost: localhost\r\n");
        for i in 0..90 {
            req.push_str(&format!("X-H{i}: {}\r\n", "v".repeat(100)));
        }
        req.push_str("\r\n");
        assert!(req.len() < 16 * 1024);
        c.send(req);
        assert_eq!(c.read_response().status, 200);
    }
}

both_drivers! {
    /// More than the default 100 header fields → 431, then close.
    fn too_many_headers(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        let mut req = String::from("GET / HTTP/1.1\r\nHost: localhost\r\n");
        for i in 0..120 {
            req.push_str(&format!("X-H{i}: v\r\n"));
        }
        req.push_str("\r\n");
        c.send(req);
        let r = c.read_response();
        r.assert_json_error(431, "request header fields too large");
        c.expect_closed();
    }
}

both_drivers! {
    /// Request target over the default 8 KiB → 414, then close.
    fn uri_too_long(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        c.send(get(&format!("/?q={}", "x".repeat(9 * 1024))));
        let r = c.read_response();
        r.assert_json_error(414, "uri too long");
        c.expect_closed();
    }
}

both_drivers! {
    /// The configured max_header_size, max_headers and max_uri_size are the ones enforced.
    fn configured_head_limits(io) {
        let server = hello(io).config(SMALL_LIMITS).start();

        let mut c = server.connect();
        c.send(format!("GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n", "a".repeat(3000)));
        assert_eq!(c.read_response().status, 431, "header block over max_header_size = 2KiB");
        c.expect_closed();

        let mut c = server.connect();
        let mut req = String::from("GET / HTTP/1.1\r\nHost: localhost\r\n");
        for i in 0..12 {
            req.push_str(&format!("X-H{i}: v\r\n"));
        }
        req.push_str("\r\n");
        c.send(req);
        assert_eq!(c.read_response().status, 431, "13 fields over max_headers = 10");
        c.expect_closed();

        let mut c = server.connect();
        c.send(get(&format!("/?q={}", "x".repeat(1100))));
        assert_eq!(c.read_response().status, 414, "target over max_uri_size = 1KiB");
        c.expect_closed();

        // Within all of them.
        let mut c = server.connect();
        c.send(format!("GET /?q={} HTTP/1.1\r\nHost: localhost\r\nX-A: {}\r\n\r\n", "x".repeat(500), "a".repeat(500)));
        assert_eq!(c.read_response().status, 200);
    }
}

/// Requests the server must refuse with exactly one 400 and a close. Each is
/// followed by a valid pipelined `GET /`, which must never be answered.
const MALFORMED: &[(&str, &[u8])] = &[
    (
        "Content-Length with Transfer-Encoding",
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "Transfer-Encoding with Content-Length",
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    ),
    ("two differing Content-Length", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("differing Content-Length list", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5, 6\r\n\r\nhello!"),
    ("non-numeric Content-Length", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n"),
    ("signed Content-Length", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: +5\r\n\r\nhello"),
    ("negative Content-Length", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n"),
    ("overflowing Content-Length", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
    ("Transfer-Encoding gzip only", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\n"),
    ("chunked not final", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
    ("Transfer-Encoding identity", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: identity\r\n\r\n"),
    ("chunked twice", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Folded: a\r\n  b\r\n\r\n"),
    ("obs-fold with tab", b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Folded: a\r\n\tb\r\n\r\n"),
    ("bare LF line endings", b"GET / HTTP/1.1\nHost: localhost\n\n"),
    ("bare LF in one header line", b"GET / HTTP/1.1\r\nHost: localhost\nX-A: b\r\n\r\n"),
    ("bare CR in a header value", b"GET / HTTP/1.1\r\nHost: localhost\r\nX-A: a\rb\r\n\r\n"),
    ("NUL in a header value", b"GET / HTTP/1.1\r\nHost: localhost\r\nX-A: a\0b\r\n\r\n"),
    ("space in a header name", b"GET / HTTP/1.1\r\nHost: localhost\r\nX Bad: b\r\n\r\n"),
    ("space before the colon", b"GET / HTTP/1.1\r\nHost: localhost\r\nX-A : b\r\n\r\n"),
    ("missing Host on 1.1", b"GET / HTTP/1.1\r\nUser-Agent: test\r\n\r\n"),
    ("duplicate Host", b"GET / HTTP/1.1\r\nHost: localhost\r\nHost: example.com\r\n\r\n"),
    ("garbage request line", b"HELLO\r\n\r\n"),
    ("bad chunk size", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    ("negative chunk size", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"),
    ("NUL in a trailer", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-A: a\0b\r\n\r\n"),
    ("obs-fold in a trailer", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-A: a\r\n b\r\n\r\n"),
    ("space in a trailer name", b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX A: b\r\n\r\n"),
    (
        "overflowing chunk size",
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    ),
];

both_drivers! {
    /// Each ambiguous or malformed request gets one 400 with a JSON body, then a close;
    /// the request pipelined behind it is never answered.
    fn malformed_requests_400_and_close(io) {
        let server = hello(io).start();
        let mut failures = Vec::new();
        for (name, request) in MALFORMED {
            let mut c = server.connect();
            let mut bytes = request.to_vec();
            bytes.extend_from_slice(get("/").as_bytes());
            if let Err(e) = c.try_send(&bytes) {
                failures.push(format!("{name}: write failed: {e}"));
                continue;
            }
            match c.try_read_response(false) {
                Ok(r) if r.status == 400 => {
                    if let Some(problem) = r.json_error_problem(400, "bad request") {
                        failures.push(format!("{name}: {problem}"));
                    }
                    if !c.leftover().is_empty() {
                        failures.push(format!("{name}: bytes after the 400: {:?}", String::from_utf8_lossy(c.leftover())));
                        continue;
                    }
                    match c.closed_within(Duration::from_secs(3)) {
                        Ok(true) => {}
                        Ok(false) => failures.push(format!("{name}: connection still open 3 s after the 400")),
                        Err(more) => {
                            failures.push(format!("{name}: bytes after the 400: {:?}", String::from_utf8_lossy(&more)))
                        }
                    }
                }
                Ok(r) => failures.push(format!("{name}: got {} {} instead of 400 (body {:?})", r.status, r.reason, r.body_str())),
                Err(e) => failures.push(format!("{name}: no response: {}", describe(&e))),
            }
        }
        assert!(failures.is_empty(), "malformed requests mishandled:\n  {}", failures.join("\n  "));
    }
}

both_drivers! {
    /// A bad chunk size after good chunks: whatever the server had started, it
    /// never sends a second response and closes the connection.
    fn bad_chunk_size_midway_single_response(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        c.send(format!(
            "POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n{}",
            get("/")
        ));
        match c.try_read_response(false) {
            // A response started before the error cannot complete properly; a
            // complete one must be the 400.
            Ok(r) => {
                assert_eq!(r.status, 400, "a complete response to a bad chunked body must be 400: {r:?}");
                c.expect_closed();
            }
            Err(ReadError::Closed { .. }) => {}
            Err(e) => panic!("server neither answered nor closed: {}", describe(&e)),
        }
    }
}

/// What is wrong with `r` as an HTML error page for `status`, if anything.
fn html_error_problem(r: &Response, status: u16) -> Option<String> {
    let ct = r.header("content-type").unwrap_or_default();
    if r.status != status {
        Some(format!("status {} instead of {status}", r.status))
    } else if !ct.starts_with("text/html") {
        Some(format!("Content-Type {ct:?} for a client preferring HTML (body {:?})", r.body_str()))
    } else if !r.body_str().contains(&status.to_string()) {
        Some(format!("the HTML page does not show the status: {:?}", r.body_str()))
    } else {
        None
    }
}

const ACCEPT_HTML: &str = "Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\n";

both_drivers! {
    /// Error bodies are a small HTML page when `Accept` prefers text/html, for
    /// errors made by the engine (handler panic, protocol error) and by a handler.
    fn error_body_html_when_accepted(io) {
        let server = hello(io).start();
        let mut failures = Vec::new();
        for (what, req) in [
            ("500 from a handler panic", format!("GET /panic HTTP/1.1\r\nHost: localhost\r\n{ACCEPT_HTML}\r\n")),
            ("404 from the handler", format!("GET /nope HTTP/1.1\r\nHost: localhost\r\n{ACCEPT_HTML}\r\n")),
            ("400 for a missing Host", format!("GET / HTTP/1.1\r\n{ACCEPT_HTML}\r\n")),
        ] {
            let status: u16 = what[..3].parse().unwrap();
            let mut c = server.connect();
            c.send(req);
            let r = c.read_response();
            if let Some(problem) = html_error_problem(&r, status) {
                failures.push(format!("{what}: {problem}"));
            }
        }
        // JSON when JSON is preferred.
        let mut c = server.connect();
        c.send("GET / HTTP/1.1\r\nAccept: application/json, text/html;q=0.5\r\n\r\n");
        c.read_response().assert_json_error(400, "bad request");
        assert!(failures.is_empty(), "HTML error pages missing:\n  {}", failures.join("\n  "));
    }
}

both_drivers! {
    /// Every kind of response carries `Server: skitai/<version>` and `Date`.
    fn server_and_date_on_every_response(io) {
        let server = hello(io).config(SMALL_LIMITS).start();
        let mut c = server.connect();
        c.send(get("/"));
        c.read_response().assert_server_and_date();
        c.send("HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        c.read_head_response().assert_server_and_date();
        c.send(post("/echo", b"abc"));
        c.read_response().assert_server_and_date();
        c.send("POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n");
        c.send(chunked(b"abc", 2));
        c.read_response().assert_server_and_date();
        c.send(get("/panic"));
        c.read_response().assert_server_and_date();

        for (what, req) in [
            ("400", "GET / HTTP/1.1\r\n\r\n".to_owned()),
            ("413", "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n".to_owned()),
            ("414", get(&format!("/{}", "u".repeat(1500)))),
        ] {
            let mut c = server.connect();
            c.send(req);
            let r = c.read_response();
            assert_eq!(r.status.to_string(), what);
            r.assert_server_and_date();
        }
    }
}

both_drivers! {
    /// A panicking handler gives 500; the shard (only one here) keeps serving,
    /// on the same connection if the server kept it open, and on a new one.
    fn handler_panic_500_then_200(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        c.send(get("/panic"));
        let r = c.read_response();
        r.assert_json_error(500, "internal server error");
        if !r.connection_has("close") {
            c.send(get("/"));
            let r = c.read_response();
            assert_eq!((r.status, r.body_str().as_str()), (200, "Hello, World!"), "same connection after the panic");
        }
        for _ in 0..3 {
            let mut c = server.connect();
            c.send(get("/panic"));
            assert_eq!(c.read_response().status, 500);
            let mut c = server.connect();
            c.send(get("/"));
            let r = c.read_response();
            assert_eq!((r.status, r.body_str().as_str()), (200, "Hello, World!"), "new connection after the panic");
        }
    }
}

both_drivers! {
    /// A handler that panics before it returns its future, or in a poll after
    /// it waited, gets the same 500; the connection and the shard go on.
    fn handler_panic_at_call_and_after_a_wait(io) {
        let server = hello(io).arg("--devel").start();
        for (path, message) in
            [("/panic?when=call", "before its future"), ("/panic?when=later", "panics on purpose")]
        {
            let mut c = server.connect();
            c.send(get(path));
            let r = c.read_response();
            assert_eq!(r.status, 500, "{path}");
            assert!(r.body_str().contains(message), "{path}: {:?}", r.body_str());
            if !r.connection_has("close") {
                c.send(get("/"));
                assert_eq!(c.read_response().body_str(), "Hello, World!", "{path}: same connection after");
            }
            let mut c = server.connect();
            c.send(get("/"));
            assert_eq!(c.read_response().status, 200, "{path}: new connection after");
        }
    }
}

both_drivers! {
    /// A panic in the middle of a pipelined batch answers 500 in its place; the
    /// responses before it are intact and in order.
    fn handler_panic_in_pipeline(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        c.send(format!("{}{}{}", get("/"), get("/panic"), get("/")));
        assert_eq!(c.read_response().status, 200);
        let r = c.read_response();
        assert_eq!(r.status, 500);
        if !r.connection_has("close") {
            let r = c.read_response();
            assert_eq!((r.status, r.body_str().as_str()), (200, "Hello, World!"));
        }
    }
}

both_drivers! {
    /// With `--devel`, error bodies carry details of the error (here the panic
    /// message); without it they do not.
    fn devel_error_details(io) {
        let server = hello(io).arg("--devel").start();
        let mut c = server.connect();
        c.send(get("/panic"));
        let r = c.read_response();
        assert_eq!(r.status, 500);
        assert!(r.body_str().contains("panics on purpose"), "devel 500 body should give the panic: {:?}", r.body_str());

        let server = hello(io).start();
        let mut c = server.connect();
        c.send(get("/panic"));
        let r = c.read_response();
        assert_eq!(r.status, 500);
        assert!(!r.body_str().contains("panics on purpose"), "production 500 body leaks details: {:?}", r.body_str());
    }
}

both_drivers! {
    /// Slowloris: a head that never completes gets 408, then the close, after header_timeout.
    fn slowloris_header_timeout(io) {
        let server = hello(io).config("[server]\nheader_timeout = 1\n").start();
        let mut c = server.connect();
        c.send("GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ");
        let r = c.read_response();
        r.assert_json_error(408, "request timeout");
        c.expect_closed();
    }
}

both_drivers! {
    /// Slowloris trickling one byte at a time: the header timeout covers the whole
    /// head, so activity does not extend it.
    fn slowloris_trickle(io) {
        let server = hello(io).config("[server]\nheader_timeout = 1\n").start();
        let mut c = server.connect();
        let mut writer = c.stream.try_clone().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        // 30 header lines one byte every 50 ms: far longer than the 1 s allowed.
        let trickle = std::thread::spawn(move || {
            use std::io::Write;
            let mut head = b"GET / HTTP/1.1\r\nHost: localhost\r\n".to_vec();
            for i in 0..30 {
                head.extend_from_slice(format!("X-{i}: slow\r\n").as_bytes());
            }
            for b in head {
                if stop2.load(std::sync::atomic::Ordering::Relaxed) || writer.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let r = c.try_read_response(false);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        trickle.join().unwrap();
        match r {
            Ok(r) => {
                assert_eq!(r.status, 408, "{r:?}");
                c.expect_closed();
            }
            Err(e) => panic!("expected 408 for a trickled head: {}", describe(&e)),
        }
    }
}

both_drivers! {
    /// A body that stalls mid-way is ended by `request_timeout`: the connection
    /// closes (with a 408 if no response had started).
    fn request_timeout_body_stall(io) {
        let server = hello(io).config("[server]\nrequest_timeout = 1\nkeep_alive = 30\nheader_timeout = 30\n").start();
        let mut c = server.connect();
        c.send("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789");
        match c.try_read_response(false) {
            Ok(r) => {
                assert_eq!(r.status, 408, "{r:?}");
                c.expect_closed();
            }
            Err(ReadError::Closed { .. }) => {}
            Err(e) => panic!("a stalled body was not timed out: {}", describe(&e)),
        }
    }
}

both_drivers! {
    /// A client that stops reading a response is cut off once the server's
    /// writes have stalled for `request_timeout`: here it uploads 64 MiB to
    /// `/echo` and reads nothing back, so the echo fills the socket buffers
    /// and stops. Without the write-stall timeout the upload (and the
    /// connection's memory) would hang on forever.
    fn write_stall_closes_the_connection(io) {
        let server = hello(io).config("[server]\nrequest_timeout = 1\nkeep_alive = 30\nheader_timeout = 30\n").start();
        let c = server.connect();
        const SIZE: usize = 64 << 20;
        let mut upload = format!("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {SIZE}\r\n\r\n").into_bytes();
        upload.resize(upload.len() + SIZE, b'x');
        let (done, finished) = std::sync::mpsc::channel();
        let writer = c.send_in_background(upload);
        std::thread::spawn(move || {
            let _ = done.send(writer.join().expect("writer thread"));
        });
        // The client's socket gives up on its own after a 10 s send timeout
        // (WouldBlock): only a reset or a broken pipe shows the server closed.
        match finished.recv_timeout(Duration::from_secs(30)) {
            Ok(Err(e)) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) => {}
            Ok(Err(e)) => panic!("the upload ended with {e} ({:?}), not a closed connection", e.kind()),
            Ok(Ok(())) => panic!("64 MiB went through although nothing was read back"),
            Err(_) => panic!("the stalled connection was still open after 30 s (request_timeout = 1)"),
        }
        // The shard is unharmed.
        let mut c = server.connect();
        c.send(get("/"));
        assert_eq!(c.read_response().status, 200);
    }
}

both_drivers! {
    /// An idle keep-alive connection is closed after `keep_alive` seconds, silently.
    fn keep_alive_idle_timeout(io) {
        // header_timeout well above the read bound, so only keep_alive can close it.
        let server = hello(io).config("[server]\nkeep_alive = 1\nheader_timeout = 30\nrequest_timeout = 30\n").start();
        let mut c = server.connect();
        c.send(get("/"));
        assert_eq!(c.read_response().status, 200);
        // No 408 on an idle connection: a client could take it for the answer
        // to a request it was sending at that moment.
        c.expect_closed();
    }
}

both_drivers! {
    /// An active keep-alive connection is not closed by the keep-alive timeout.
    fn keep_alive_activity_resets_idle_timer(io) {
        let server = hello(io).config("[server]\nkeep_alive = 2\n").start();
        let mut c = server.connect();
        for _ in 0..5 {
            c.send(get("/"));
            assert_eq!(c.read_response().status, 200);
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

both_drivers! {
    /// Several shards: many concurrent connections are all served.
    fn many_connections_several_shards(io) {
        let server = hello(io).shards(2).start();
        assert_eq!(server.driver_lines(2), 2, "one driver line per shard:\n{}", server.stderr());
        let addr = server.addr();
        let threads: Vec<_> = (0..16)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut c = Conn::connect(addr);
                    for i in 0..10 {
                        let body = format!("t{t}-r{i}");
                        c.send(post("/echo", body.as_bytes()));
                        let r = c.read_response();
                        assert_eq!((r.status, r.body_str()), (200, body));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("client thread failed");
        }
    }
}

both_drivers! {
    /// With only `/v1/` mounted, `/v1` is a 308 to `/v1/`; below it the handler
    /// sees its mount point and the full path; unknown paths get a JSON 404.
    fn mount_redirect_and_prefix(io) {
        let server = hello(io).start();
        let mut c = server.connect();
        c.send(get("/v1"));
        let r = c.read_response();
        assert_eq!(r.status, 308, "{r:?}");
        assert_eq!(r.header("location"), Some("/v1/"), "{r:?}");
        r.assert_server_and_date();

        // The connection survives the redirect.
        c.send(get("/v1/users/7"));
        let r = c.read_response();
        assert_eq!(r.status, 200, "{r:?}");
        let body = r.body_str();
        assert!(body.contains("\"full\": \"/v1/users/7\""), "{body}");
        assert!(body.contains("\"mount\": \"/v1"), "{body}");
        assert!(body.contains("users/7\"") && !body.contains("\"path\": \"/v1/"), "the handler sees the path below its mount: {body}");

        c.send(get("/nope"));
        c.read_response().assert_json_error(404, "not found");

        // curl follows the redirect.
        let out = curl(&["-L", &server.url("/v1")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"full\": \"/v1/\""), "{}", String::from_utf8_lossy(&out.stdout));
    }
}
