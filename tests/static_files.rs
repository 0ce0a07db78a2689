//! Static file serving by the `skitai` binary (`--mount /=DIR`, `[[mount]]`), over
//! loopback with the raw client, curl and Python's `http.client`, each protocol
//! case on both I/O drivers: content types and validators, directories and
//! listings, every way out of the root, conditional requests (RFC 9110 §13),
//! ranges (§14), `[max_age]`, precompressed siblings and on-the-fly gzip, large
//! files, revalidation of changed files, and mount configuration errors.
//!
//! Fixtures are built per test in a temporary directory `BASE` holding the mount
//! root `BASE/root` and, outside it, `BASE/secret.txt` and `BASE/outside/`; no
//! response to a request that must be refused may contain the secret.
//!
//! Fall-through from a static mount to a handler at the same or a shorter
//! prefix needs a program that mounts a handler: `tests/static_fallthrough.rs`
//! covers it with `examples/static_site`.

#[macro_use]
mod support;

use std::fs::{self, File};
use std::os::unix::fs::symlink;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, UNIX_EPOCH};

use support::*;

/// Content outside the root: must never appear in a refused response.
const SECRET: &str = "OUTSIDE-ROOT-SECRET-9f1c77";
/// Content of dot-files inside the root: served only with `hidden = true`.
const DOT_SECRET: &str = "DOTFILE-SECRET-4b2e31";
/// The mtime of every fixture file: 2020-01-01T00:00:00Z.
const MTIME: u64 = 1_577_836_800;
const MTIME_HTTP: &str = "Wed, 01 Jan 2020 00:00:00 GMT";
/// Before and after [`MTIME`] (both in the past of the test run).
const BEFORE_MTIME: &str = "Tue, 01 Jan 2019 00:00:00 GMT";
const AFTER_MTIME: &str = "Fri, 01 Jan 2021 00:00:00 GMT";

const HELLO: &str = "Hello, static world!\n";

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// A temporary directory with a mount root inside it and secrets beside it.
struct Site {
    base: tempfile::TempDir,
}

impl Site {
    fn empty() -> Site {
        // The prefix keeps the absolute path free of dot-directories (tempdir names start with `.tmp` by default).
        let base = tempfile::Builder::new().prefix("skitai-static-").tempdir().expect("temp dir");
        fs::create_dir(base.path().join("root")).unwrap();
        fs::write(base.path().join("secret.txt"), SECRET).unwrap();
        fs::create_dir(base.path().join("outside")).unwrap();
        fs::write(base.path().join("outside/file.txt"), SECRET).unwrap();
        Site { base }
    }

    fn base(&self) -> &Path {
        self.base.path()
    }

    fn root(&self) -> PathBuf {
        self.base.path().join("root")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// Writes `rel` below the root (creating directories) with mtime [`MTIME`].
    fn file(&self, rel: &str, bytes: impl AsRef<[u8]>) -> &Self {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        set_mtime(&p);
        self
    }

    fn dir(&self, rel: &str) -> &Self {
        fs::create_dir_all(self.path(rel)).unwrap();
        self
    }

    /// A symlink at `rel` below the root pointing at `target` (as given).
    fn link(&self, rel: &str, target: impl AsRef<Path>) -> &Self {
        symlink(target, self.path(rel)).unwrap();
        self
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.path(rel)).unwrap()
    }

    /// `--mount /=ROOT` (absolute).
    fn mount_flag(&self, point: &str) -> String {
        format!("{point}={}", self.root().display())
    }

    /// The root as a TOML string.
    fn root_toml(&self) -> String {
        toml_str(&self.root())
    }
}

fn toml_str(p: &Path) -> String {
    format!("{:?}", p.to_str().expect("UTF-8 temp path"))
}

fn set_mtime(p: &Path) {
    let f = File::options().write(true).open(p).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(MTIME)).unwrap();
}

/// 100 bytes `000102...4849`: every offset is distinguishable within a few bytes.
fn digits() -> Vec<u8> {
    (0..50).flat_map(|i| format!("{i:02}").into_bytes()).collect()
}

/// The general fixture most tests use.
fn site() -> Site {
    let s = Site::empty();
    s.file("hello.txt", HELLO)
        .file("page.html", "<!doctype html><title>page</title>\n")
        .file("style.css", "body { color: red }\n")
        .file("data.json", "{\"a\": 1}\n")
        .file("module.mjs", "export const a = 1;\n")
        .file("script.js", "console.log(1);\n")
        .file("image.svg", "<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n")
        .file("site.config", "<configuration/>\n")
        .file("pic.png", test_bytes(300, 7))
        .file("blob.skitaiunknown", test_bytes(64, 8))
        .file("noext", "no extension\n")
        .file("digits.txt", digits())
        .file("a b.txt", "a file with a space\n")
        .file("café.txt", "a UTF-8 name\n")
        .file("日本語.txt", "another UTF-8 name\n")
        .file("dir/index.html", "<p>dir index.html</p>\n")
        .file("dir/index.htm", "<p>dir index.htm</p>\n")
        .file("dir2/index.htm", "<p>dir2 index.htm</p>\n")
        .file("noindex/file.txt", "no index here\n")
        .file("sub/inner.txt", "inner\n")
        .file("sub/.hidden", DOT_SECRET)
        .file("a/b", "a slash b\n")
        .file(".env", DOT_SECRET)
        .file(".git/config", DOT_SECRET)
        .link("link_in.txt", "hello.txt")
        .link("link_out.txt", s.base().join("secret.txt"))
        .link("link_out_rel.txt", "../secret.txt")
        .link("link_dir_out", s.base().join("outside"));
    s
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r
}

/// A keep-alive connection that sends one request at a time.
struct Client {
    c: Conn,
}

impl Client {
    fn new(server: &Server) -> Client {
        Client { c: server.connect() }
    }

    fn req(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        self.c.send(request(method, path, headers));
        if method == "HEAD" { self.c.read_head_response() } else { self.c.read_response() }
    }

    fn get(&mut self, path: &str) -> Response {
        self.req("GET", path, &[])
    }

    fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.req("GET", path, headers)
    }

    /// Asserts nothing more arrived (no stray body bytes) and the connection is still open.
    fn assert_quiet(&mut self) {
        assert!(self.c.leftover().is_empty(), "unexpected bytes: {:?}", String::from_utf8_lossy(self.c.leftover()));
        assert_eq!(self.c.closed_within(Duration::from_millis(200)), Ok(false), "stray bytes or a close");
    }
}

/// One request on a fresh connection.
fn fetch(server: &Server, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    Client::new(server).req(method, path, headers)
}

/// Compares bodies without dumping megabytes into the failure message.
fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    let show = |b: &[u8]| {
        let end = (first + 32).min(b.len());
        String::from_utf8_lossy(&b[first.min(end)..end]).into_owned()
    };
    panic!(
        "{what}: {} bytes instead of {}, first difference at offset {first}: got {:?}, want {:?}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    );
}

fn hdr<'a>(r: &'a Response, name: &str) -> &'a str {
    r.header(name).unwrap_or_else(|| panic!("no {name} header in {} response: {:?}", r.status, r.headers))
}

fn etag_of(r: &Response) -> String {
    let e = hdr(r, "etag").to_owned();
    assert!(!e.starts_with("W/"), "ETag must be strong: {e}");
    assert!(e.len() > 2 && e.starts_with('"') && e.ends_with('"'), "ETag must be quoted: {e}");
    assert!(!e[1..e.len() - 1].contains('"'), "ETag {e}");
    e
}

/// `bytes A-B/LEN` → (A, B, LEN).
fn content_range(v: &str) -> (u64, u64, u64) {
    let rest = v.strip_prefix("bytes ").unwrap_or_else(|| panic!("Content-Range {v:?}"));
    let (span, len) = rest.split_once('/').unwrap_or_else(|| panic!("Content-Range {v:?}"));
    let (a, b) = span.split_once('-').unwrap_or_else(|| panic!("Content-Range {v:?}"));
    (a.parse().unwrap(), b.parse().unwrap(), len.parse().unwrap())
}

/// One part of a multipart body: its headers (names lowercased) and its bytes.
type Part = (Vec<(String, String)>, Vec<u8>);

/// The parts of a `multipart/byteranges` body: (headers, bytes), each part read
/// exactly by its Content-Range, with the delimiters checked byte by byte.
fn multipart_parts(r: &Response) -> Vec<Part> {
    let ct = hdr(r, "content-type");
    assert!(ct.starts_with("multipart/byteranges"), "Content-Type {ct:?}");
    let boundary = ct
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))
        .unwrap_or_else(|| panic!("no boundary in {ct:?}"))
        .trim_matches('"')
        .to_owned();
    let body = &r.body;
    let delim = format!("--{boundary}").into_bytes();
    let find = |from: usize, pat: &[u8]| body[from..].windows(pat.len()).position(|w| w == pat).map(|p| p + from);
    let mut i = find(0, &delim).unwrap_or_else(|| panic!("no boundary in body {:?}", r.body_str()));
    assert!(
        body[..i].iter().all(|b| b.is_ascii_whitespace()),
        "unexpected preamble {:?}",
        String::from_utf8_lossy(&body[..i])
    );
    let mut parts = Vec::new();
    loop {
        i += delim.len();
        if body[i..].starts_with(b"--") {
            let epilogue = &body[i + 2..];
            assert!(
                epilogue.iter().all(|b| b.is_ascii_whitespace()),
                "bytes after the close delimiter: {:?}",
                String::from_utf8_lossy(epilogue)
            );
            break;
        }
        assert_eq!(&body[i..i + 2], b"\r\n", "delimiter not followed by CRLF at {i}");
        i += 2;
        let head_end = find(i, b"\r\n\r\n").expect("part headers end");
        let headers: Vec<(String, String)> = String::from_utf8_lossy(&body[i..head_end])
            .split("\r\n")
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap_or_else(|| panic!("part header line {l:?}"));
                (n.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        let cr = headers.iter().find(|(n, _)| n == "content-range").expect("part Content-Range").1.clone();
        let (a, b, _) = content_range(&cr);
        let start = head_end + 4;
        let end = start + (b - a + 1) as usize;
        assert!(end <= body.len(), "part {cr} runs past the body");
        parts.push((headers, body[start..end].to_vec()));
        i = end;
        assert_eq!(&body[i..i + 2], b"\r\n", "part data not followed by CRLF");
        i += 2;
        assert!(body[i..].starts_with(&delim), "part not followed by the boundary");
    }
    parts
}

fn part_header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    &headers.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("part lacks {name}: {headers:?}")).1
}

/// Decompresses gzip bytes with Python (binary-safe, through files).
fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("in.gz"), dir.path().join("out"));
    fs::write(&src, bytes).unwrap();
    let out = run_bounded(
        Command::new("python3")
            .args([
                "-c",
                "import gzip,sys; open(sys.argv[2],'wb').write(gzip.decompress(open(sys.argv[1],'rb').read()))",
            ])
            .arg(&src)
            .arg(&dst),
    );
    assert!(out.status.success(), "not gzip: {}", String::from_utf8_lossy(&out.stderr));
    fs::read(dst).unwrap()
}

/// Writes `dst` as the gzip compression of `src`, with the `gzip` tool (through a
/// shell redirect: `run_bounded` captures stdout as text).
fn gzip_file(src: &Path, dst: &Path) {
    let out =
        run_bounded(Command::new("sh").arg("-c").arg("gzip -c -n -9 \"$1\" > \"$2\"").arg("sh").arg(src).arg(dst));
    assert!(out.status.success(), "gzip: {}", String::from_utf8_lossy(&out.stderr));
    set_mtime(dst);
}

/// The HTTP date in a header, as seconds since the epoch.
fn http_date(r: &Response, name: &str) -> i64 {
    let v = hdr(r, name);
    let t = httpdate::parse_http_date(v).unwrap_or_else(|e| panic!("{name}: {v:?} is not an HTTP date: {e}"));
    t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Closes `c` with a reset (SO_LINGER 0) instead of a FIN.
fn abort(c: Conn) {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket we own, with a correctly sized linger struct.
    let rc = unsafe {
        libc::setsockopt(
            c.stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(c);
}

/// Asserts a normal file response: status, exact headers required by the contract, body.
fn assert_file(r: &Response, content_type: &str, body: &[u8], what: &str) {
    assert_eq!(r.status, 200, "{what}: {r:?}");
    assert_eq!(r.header("content-type"), Some(content_type), "{what}: Content-Type");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{what}");
    assert_eq!(r.header("accept-ranges"), Some("bytes"), "{what}");
    assert_eq!(r.header("content-length"), Some(body.len().to_string().as_str()), "{what}: Content-Length");
    assert_eq!(r.header("last-modified"), Some(MTIME_HTTP), "{what}: Last-Modified is the file's mtime");
    etag_of(r);
    assert_eq!(r.header("content-encoding"), None, "{what}");
    assert_bytes(&r.body, body, what);
}

// ---------------------------------------------------------------------------
// Serving files
// ---------------------------------------------------------------------------

both_drivers! {
    /// A plain file: every header the contract requires, exact bytes, a stable ETag,
    /// no caching headers by default; the error page for a missing file.
    fn serves_file_with_headers(io) {
        let s = site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let mut c = Client::new(&server);
        let r = c.get("/hello.txt");
        assert_file(&r, "text/plain; charset=utf-8", HELLO.as_bytes(), "/hello.txt");
        r.assert_server_and_date();
        assert_eq!(r.header("cache-control"), None, "no Cache-Control without [max_age]");
        assert_eq!(r.header("expires"), None, "no Expires without [max_age]");
        let etag = etag_of(&r);
        let again = c.get("/hello.txt");
        assert_eq!(etag_of(&again), etag, "ETag must be stable");
        assert_bytes(&again.body, HELLO.as_bytes(), "second GET");

        let missing = c.get("/nope.txt");
        missing.assert_json_error(404, "not found");
        // The connection survives a 404.
        assert_file(&c.get("/hello.txt"), "text/plain; charset=utf-8", HELLO.as_bytes(), "after 404");
        c.assert_quiet();
    }
}

both_drivers! {
    /// Content-Type from the extension; text types get `charset=utf-8`; unknown → octet-stream.
    fn content_types(io) {
        let s = site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let mut c = Client::new(&server);
        for (path, file, ct) in [
            ("/page.html", "page.html", "text/html; charset=utf-8"),
            ("/style.css", "style.css", "text/css; charset=utf-8"),
            ("/data.json", "data.json", "application/json; charset=utf-8"),
            ("/module.mjs", "module.mjs", "application/javascript; charset=utf-8"),
            ("/script.js", "script.js", "text/javascript; charset=utf-8"),
            ("/image.svg", "image.svg", "image/svg+xml; charset=utf-8"),
            ("/site.config", "site.config", "application/xml; charset=utf-8"),
            ("/pic.png", "pic.png", "image/png"),
            ("/blob.skitaiunknown", "blob.skitaiunknown", "application/octet-stream"),
            ("/noext", "noext", "application/octet-stream"),
            ("/digits.txt", "digits.txt", "text/plain; charset=utf-8"),
        ] {
            let r = c.get(path);
            assert_file(&r, ct, &s.read(file), path);
        }
        c.assert_quiet();
    }
}

both_drivers! {
    /// HEAD: the GET headers, no body (a pipelined GET after it parses cleanly).
    fn head_same_headers_no_body(io) {
        let s = site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let mut c = server.connect();
        c.send(format!("{}{}", request("HEAD", "/hello.txt", &[]), request("GET", "/hello.txt", &[])));
        let head = c.read_head_response();
        let get = c.read_response();
        assert_eq!(head.status, 200);
        for name in ["content-type", "content-length", "etag", "last-modified", "accept-ranges", "x-content-type-options"] {
            assert_eq!(head.header(name), get.header(name), "HEAD and GET differ in {name}");
        }
        assert_eq!(head.header("content-length"), Some(HELLO.len().to_string().as_str()));
        assert_file(&get, "text/plain; charset=utf-8", HELLO.as_bytes(), "GET after HEAD");
        assert_eq!(c.closed_within(Duration::from_millis(200)), Ok(false), "bytes after the GET (HEAD body?)");
    }
}

both_drivers! {
    /// Only GET and HEAD: other methods on an existing file → 405 with `Allow: GET, HEAD`.
    fn other_methods_405(io) {
        let s = site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let mut c = server.connect();
        c.send(post("/hello.txt", b"x=1"));
        let r = c.read_response();
        assert_eq!(r.status, 405, "{r:?}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
        assert!(!r.body_str().contains(HELLO), "405 must not carry the file");
        for method in ["PUT", "DELETE", "PATCH"] {
            let mut c = server.connect();
            c.send(format!("{method} /hello.txt HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"));
            let r = c.read_response();
            assert_eq!(r.status, 405, "{method}: {r:?}");
            assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method}");
        }
    }
}

both_drivers! {
    /// Legal percent-encoded names are served: a space, UTF-8 names, an encoded letter.
    fn percent_encoded_names(io) {
        let s = site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let mut c = Client::new(&server);
        for (path, file) in [
            ("/a%20b.txt", "a b.txt"),
            ("/caf%C3%A9.txt", "café.txt"),
            ("/caf%c3%a9.txt", "café.txt"),
            ("/%E6%97%A5%E6%9C%AC%E8%AA%9E.txt", "日本語.txt"),
            ("/%68ello.txt", "hello.txt"),
            ("/hello.txt?v=3&x=y", "hello.txt"),
        ] {
            let r = c.get(path);
            assert_file(&r, "text/plain; charset=utf-8", &s.read(file), path);
        }
    }
}

both_drivers! {
    /// A mount below `/`: paths are relative to the mount point.
    fn mount_at_prefix(io) {
        let s = site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/static")).start();
        let mut c = Client::new(&server);
        assert_file(&c.get("/static/hello.txt"), "text/plain; charset=utf-8", HELLO.as_bytes(), "/static/hello.txt");
        assert_file(&c.get("/static/sub/inner.txt"), "text/plain; charset=utf-8", b"inner\n", "nested");
        let r = c.get("/static/dir");
        assert_eq!(r.status, 301, "{r:?}");
        assert_eq!(r.header("location"), Some("/static/dir/"));
        let r = c.get("/static/dir/");
        assert_eq!((r.status, r.body_str().as_str()), (200, "<p>dir index.html</p>\n"));
        assert_eq!(c.get("/hello.txt").status, 404, "nothing is mounted at /");
        for path in ["/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/..%2fsecret.txt"] {
            let r = fetch(&server, "GET", path, &[]);
            assert_eq!(r.status, 404, "{path}: {r:?}");
            assert!(!r.body_str().contains(SECRET), "{path} leaked the secret");
        }
    }
}

both_drivers! {
    /// Relative targets are resolved against the working directory (flag and TOML).
    fn relative_target(io) {
        let s = site();
        let server = skitai(io).current_dir(s.base()).arg("--mount").arg("/=./root").start();
        assert_file(&fetch(&server, "GET", "/hello.txt", &[]), "text/plain; charset=utf-8", HELLO.as_bytes(), "flag");
        drop(server);
        let server = skitai(io).current_dir(s.base()).config("[[mount]]\npath = \"/files\"\ntarget = \"./root\"\n").start();
        assert_file(&fetch(&server, "GET", "/files/hello.txt", &[]), "text/plain; charset=utf-8", HELLO.as_bytes(), "toml");
    }
}

both_drivers! {
    /// Python's http.client sees the same files, a range and encoded names.
    fn python_http_client(io) {
        let s = site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let script = r#"
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=10)
def go(path, headers={}):
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    b = r.read()
    print(r.status, r.getheader("Content-Type"), r.getheader("Content-Range"), b.hex(), sep="|")
go("/hello.txt")
go("/digits.txt", {"Range": "bytes=10-19"})
go("/a%20b.txt")
go("/caf%C3%A9.txt")
"#;
        let addr = server.addr();
        let out = run_bounded(
            Command::new("python3").arg("-c").arg(script).arg(addr.ip().to_string()).arg(addr.port().to_string()),
        );
        assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let want = [
            format!("200|text/plain; charset=utf-8|None|{}", hex(HELLO.as_bytes())),
            format!("206|text/plain; charset=utf-8|bytes 10-19/100|{}", hex(&digits()[10..20])),
            format!("200|text/plain; charset=utf-8|None|{}", hex(&s.read("a b.txt"))),
            format!("200|text/plain; charset=utf-8|None|{}", hex(&s.read("café.txt"))),
        ];
        let stdout = String::from_utf8_lossy(&out.stdout);
        let got: Vec<&str> = stdout.lines().collect();
        assert_eq!(got, want);
    }
}

// ---------------------------------------------------------------------------
// Directories and listings
// ---------------------------------------------------------------------------

both_drivers! {
    /// 301 to the slash (query kept), index.html before index.htm, 404 without an index.
    fn directories(io) {
        let s = site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let mut c = Client::new(&server);
        let r = c.get("/dir");
        assert_eq!(r.status, 301, "{r:?}");
        assert_eq!(r.header("location"), Some("/dir/"));
        let r = c.get("/dir?x=1&y=a%20b");
        assert_eq!(r.status, 301, "{r:?}");
        assert_eq!(r.header("location"), Some("/dir/?x=1&y=a%20b"), "the query is kept");
        let r = c.get("/sub/../sub");
        assert_eq!(r.status, 404, "`..` is refused even where it would stay inside: {r:?}");
        let r = c.get("/noindex");
        assert_eq!(r.status, 301, "{r:?}");
        assert_eq!(r.header("location"), Some("/noindex/"));

        let r = c.get("/dir/");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(r.body_str(), "<p>dir index.html</p>\n", "index.html wins over index.htm");
        let r = c.get("/dir2/");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(r.body_str(), "<p>dir2 index.htm</p>\n");
        let r = c.req("HEAD", "/dir2/", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("22"));

        let r = c.get("/noindex/");
        assert_eq!(r.status, 404, "no index and no listing: {r:?}");
        assert!(!r.body_str().contains("file.txt"), "no listing without listing = true: {}", r.body_str());
        let r = c.get("/");
        assert_eq!(r.status, 404, "root without an index: {r:?}");
        c.assert_quiet();
    }
}

/// `(raw href, raw link text)` of every `<a href="...">...</a>` in `html`.
fn links(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("href=\"") {
        rest = &rest[i + 6..];
        let end = rest.find('"').expect("closing quote of href");
        let href = rest[..end].to_owned();
        rest = &rest[end..];
        let gt = rest.find('>').expect("end of <a>");
        rest = &rest[gt + 1..];
        let close = rest.find("</a>").expect("</a>");
        out.push((href, rest[..close].to_owned()));
        rest = &rest[close..];
    }
    out
}

fn html_unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(semi) = rest.find(';').filter(|&p| p <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") || e.starts_with("#X") => {
                u32::from_str_radix(&e[2..], 16).ok().and_then(char::from_u32)
            }
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let v = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or_else(|_| panic!("bad escape in {s:?}"));
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| panic!("{s:?} decodes to invalid UTF-8"))
}

fn listing_site() -> Site {
    let s = Site::empty();
    s.file("a<b>&\"c.txt", "weird name\n")
        .file("with space.txt", "spaced\n")
        .file("plain.txt", "plain\n")
        .file("café.txt", "utf8\n")
        .file(".dotfile", DOT_SECRET)
        .file("sub/inner.txt", "inner\n")
        .file("sub/.hidden2", DOT_SECRET)
        .dir("sub/deeper")
        .file("withindex/index.html", "<p>index wins</p>\n");
    s
}

/// Checks a listing page and returns the entries (decoded hrefs, `../` left out).
fn check_listing(r: &Response, what: &str) -> Vec<String> {
    assert_eq!(r.status, 200, "{what}: {r:?}");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"), "{what}");
    let html = r.body_str();
    let mut names = Vec::new();
    for (href, text) in links(&html) {
        for bad in [' ', '<', '>', '"'] {
            assert!(!href.contains(bad), "{what}: href {href:?} must be percent-encoded ({bad:?})");
        }
        for bad in ['<', '>', '"'] {
            assert!(!text.contains(bad), "{what}: link text {text:?} must be HTML-escaped ({bad:?})");
        }
        let name = percent_decode(&html_unescape(&href));
        if name == "../" || name == ".." {
            continue;
        }
        let shown = html_unescape(&text);
        assert!(
            shown == name || shown == name.trim_end_matches('/'),
            "{what}: link text {shown:?} does not name entry {name:?}"
        );
        names.push(name);
    }
    names.sort();
    names
}

both_drivers! {
    /// `listing = true`: one escaped link per entry, directories with a slash,
    /// dot-files left out, index.html still preferred, every link resolvable.
    fn listing(io) {
        let s = listing_site();
        let toml = format!("[[mount]]\npath = \"/\"\ntarget = {}\nlisting = true\n", s.root_toml());
        let server = skitai(io).config(&toml).start();
        let mut c = Client::new(&server);
        let r = c.get("/");
        let names = check_listing(&r, "/");
        let mut want = vec!["a<b>&\"c.txt", "café.txt", "plain.txt", "sub/", "with space.txt", "withindex/"];
        want.sort();
        assert_eq!(names, want, "root listing entries");
        let html = r.body_str();
        assert!(!html.contains("a<b>"), "the name must be HTML-escaped in the text: {html}");
        assert!(html.contains("a&lt;b&gt;&amp;"), "the escaped name must appear: {html}");
        assert!(html.contains("with%20space.txt"), "space percent-encoded in href: {html}");
        assert!(!html.contains(".dotfile") && !html.contains(DOT_SECRET), "dot-files are omitted: {html}");

        // Every link leads somewhere.
        for (href, _) in links(&html) {
            let target = format!("/{}", html_unescape(&href));
            if target == "/../" {
                continue;
            }
            let r = c.get(&target);
            assert_eq!(r.status, 200, "following {target}: {r:?}");
        }
        assert_eq!(c.get("/a%3Cb%3E%26%22c.txt").body_str(), "weird name\n");

        let r = c.get("/sub");
        assert_eq!(r.status, 301);
        assert_eq!(r.header("location"), Some("/sub/"));
        let sub = check_listing(&c.get("/sub/"), "/sub/");
        assert_eq!(sub, vec!["deeper/", "inner.txt"], "subdirectory listing");
        let empty = check_listing(&c.get("/sub/deeper/"), "/sub/deeper/");
        assert!(empty.is_empty(), "empty directory: {empty:?}");
        let r = c.get("/withindex/");
        assert_eq!((r.status, r.body_str().as_str()), (200, "<p>index wins</p>\n"));
        c.assert_quiet();
    }
}

both_drivers! {
    /// `listing = true, hidden = true`: dot-files are listed (and served).
    fn listing_hidden(io) {
        let s = listing_site();
        let toml = format!("[[mount]]\npath = \"/\"\ntarget = {}\nlisting = true\nhidden = true\n", s.root_toml());
        let server = skitai(io).config(&toml).start();
        let mut c = Client::new(&server);
        let names = check_listing(&c.get("/"), "/");
        assert!(names.contains(&".dotfile".to_owned()), "{names:?}");
        let sub = check_listing(&c.get("/sub/"), "/sub/");
        assert_eq!(sub, vec![".hidden2", "deeper/", "inner.txt"]);
        assert_eq!(c.get("/.dotfile").body_str(), DOT_SECRET);
    }
}

// ---------------------------------------------------------------------------
// Staying inside the root
// ---------------------------------------------------------------------------

/// Every way out named by the contract; each must be a 404.
fn escapes(site: &Site) -> Vec<String> {
    let abs = site.base().join("secret.txt");
    let abs = abs.to_str().unwrap();
    let mut v: Vec<String> = [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/a/../../secret.txt",
        "/../../../../../../../../../../etc/passwd",
        "/%2e%2e/secret.txt",
        "/%2E%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/%2e./secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/a%2fb",
        "/a%2Fb",
        "/..%2fsecret.txt",
        "/..%2Fsecret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
        "/..\\secret.txt",
        "/sub\\..\\..\\secret.txt",
        "/%5c..%5csecret.txt",
        "/..%5csecret.txt",
        "/hello.txt%00",
        "/hello.txt%00.png",
        "/a%00/../secret.txt",
        "/%c0%ae%c0%ae/secret.txt",
        "/%C0%AE%C0%AE/secret.txt",
        "/%c0%ae%c0%ae%c0%afsecret.txt",
        "/%e0%80%ae%e0%80%ae/secret.txt",
        "/%ff.txt",
        "/hello%ff.txt",
        "/%c3%28.txt",
        "/sub//inner.txt",
        "/sub/inner.txt//",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // An absolute path smuggled in with `//` or an encoded slash.
    v.push(format!("/sub/{abs}"));
    v.push(format!("/%2f{}", &abs[1..].replace('/', "%2f")));
    v
}

fn assert_refused(r: &Response, path: &str) {
    let body = r.body_str();
    assert!(!body.contains(SECRET), "{path}: leaked the secret outside the root: {r:?}");
    assert!(!body.contains(DOT_SECRET), "{path}: leaked a dot-file: {r:?}");
    assert!(!body.contains("root:x:0:0"), "{path}: leaked /etc/passwd");
    assert_eq!(r.status, 404, "{path}: {r:?}");
}

both_drivers! {
    /// Traversal, encoded dots and slashes, backslashes, NUL, overlong and invalid
    /// UTF-8, `//`, dot-files, symlinks out of the root: all 404, never the content.
    fn traversal_refused(io) {
        let s = site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let mut paths = escapes(&s);
        for p in [
            "/.env", "/%2eenv", "/.git/config", "/.git/", "/.git", "/sub/.hidden", "/sub/%2ehidden",
            "/link_out.txt", "/link_out_rel.txt", "/link_dir_out/file.txt", "/link_dir_out/",
        ] {
            paths.push(p.to_owned());
        }
        for path in &paths {
            for method in ["GET", "HEAD"] {
                let r = fetch(&server, method, path, &[]);
                assert_refused(&r, &format!("{method} {path}"));
            }
        }
        // A path starting with `//` is not path-absolute: a 400 is as good as a 404, a leak is not.
        let abs = s.base().join("secret.txt");
        let r = fetch(&server, "GET", &format!("/{}", abs.display()), &[]);
        assert!(matches!(r.status, 400 | 404), "//ABSOLUTE: {r:?}");
        assert!(!r.body_str().contains(SECRET), "//ABSOLUTE leaked the secret");

        // The server is fine afterwards, and in-root symlinks are served.
        assert_file(&fetch(&server, "GET", "/hello.txt", &[]), "text/plain; charset=utf-8", HELLO.as_bytes(), "after");
        let r = fetch(&server, "GET", "/link_in.txt", &[]);
        assert_eq!(r.status, 200, "a symlink inside the root is served: {r:?}");
        assert_bytes(&r.body, HELLO.as_bytes(), "/link_in.txt");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    }
}

both_drivers! {
    /// curl with `--path-as-is` (curl otherwise removes the dot segments itself).
    fn traversal_refused_curl(io) {
        let s = site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        for path in ["/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/.env"] {
            let out = curl(&["--path-as-is", "-i", &server.url(path)]);
            assert!(out.status.success(), "curl {path}: {}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.starts_with("HTTP/1.1 404"), "{path}: {text}");
            assert!(!text.contains(SECRET) && !text.contains(DOT_SECRET), "{path} leaked: {text}");
        }
    }
}

both_drivers! {
    /// `hidden = true` serves dot-files; `follow_symlinks = true` serves links that
    /// leave the root; neither opens any other way out.
    fn hidden_and_follow_symlinks(io) {
        let s = site();
        // Defaults first: both refused.
        let toml = format!("[[mount]]\npath = \"/\"\ntarget = {}\n", s.root_toml());
        let server = skitai(io).config(&toml).start();
        assert_refused(&fetch(&server, "GET", "/.env", &[]), "/.env (default)");
        assert_refused(&fetch(&server, "GET", "/link_out.txt", &[]), "/link_out.txt (default)");
        drop(server);

        let toml = format!("[[mount]]\npath = \"/\"\ntarget = {}\nhidden = true\n", s.root_toml());
        let server = skitai(io).config(&toml).start();
        let mut c = Client::new(&server);
        for path in ["/.env", "/.git/config", "/sub/.hidden"] {
            let r = c.get(path);
            assert_eq!((r.status, r.body_str().as_str()), (200, DOT_SECRET), "{path} with hidden = true");
        }
        assert_refused(&c.get("/link_out.txt"), "/link_out.txt (hidden only)");
        drop(server);

        let toml = format!("[[mount]]\npath = \"/\"\ntarget = {}\nfollow_symlinks = true\n", s.root_toml());
        let server = skitai(io).config(&toml).start();
        let mut c = Client::new(&server);
        for path in ["/link_out.txt", "/link_out_rel.txt", "/link_dir_out/file.txt"] {
            let r = c.get(path);
            assert_eq!((r.status, r.body_str().as_str()), (200, SECRET), "{path} with follow_symlinks = true");
        }
        assert_refused(&c.get("/.env"), "/.env (follow_symlinks only)");
        drop(server);

        // Both allowed: the path checks still refuse every escape.
        let toml =
            format!("[[mount]]\npath = \"/\"\ntarget = {}\nhidden = true\nfollow_symlinks = true\n", s.root_toml());
        let server = skitai(io).config(&toml).start();
        for path in escapes(&s) {
            assert_refused(&fetch(&server, "GET", &path, &[]), &format!("{path} (hidden + follow_symlinks)"));
        }
        assert_eq!(fetch(&server, "GET", "/link_in.txt", &[]).body_str(), HELLO);
    }
}

// ---------------------------------------------------------------------------
// Conditional requests
// ---------------------------------------------------------------------------

/// Asserts a 304 for `/hello.txt`: validators, no body, connection still usable.
fn assert_304(c: &mut Client, r: &Response, etag: &str, what: &str) {
    assert_eq!(r.status, 304, "{what}: {r:?}");
    assert_eq!(r.header("etag"), Some(etag), "{what}: 304 carries the ETag");
    assert_eq!(r.header("last-modified"), Some(MTIME_HTTP), "{what}: 304 carries Last-Modified");
    assert_ne!(r.header("content-length"), Some(HELLO.len().to_string().as_str()), "{what}: no file length");
    // Stray body bytes would break the next response on the connection.
    let next = c.get("/digits.txt");
    assert_eq!(next.status, 200, "{what}: request after the 304");
    assert_bytes(&next.body, &digits(), &format!("{what}: response after the 304"));
}

both_drivers! {
    /// RFC 9110 §13.2.2: If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since.
    fn conditional_requests(io) {
        let s = site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let mut c = Client::new(&server);
        let r = c.get("/hello.txt");
        let etag = etag_of(&r);
        let weak = format!("W/{etag}");
        let path = "/hello.txt";
        let status = |c: &mut Client, h: &[(&str, &str)]| {
            let r = c.get_with(path, h);
            if r.status == 200 {
                assert_bytes(&r.body, HELLO.as_bytes(), &format!("200 body for {h:?}"));
            }
            r.status
        };

        // 1. If-Match (strong comparison).
        let list_hit = format!("\"nope\", {etag}");
        let list_hit_tight = format!("\"nope\",{etag}");
        for (v, want) in [
            (etag.as_str(), 200),
            ("*", 200),
            (list_hit.as_str(), 200),
            (list_hit_tight.as_str(), 200),
            ("\"nope\"", 412),
            ("\"nope\", \"other\"", 412),
            (weak.as_str(), 412),
        ] {
            assert_eq!(status(&mut c, &[("If-Match", v)]), want, "If-Match: {v}");
        }
        // 2. If-Unmodified-Since.
        for (v, want) in [(BEFORE_MTIME, 412), (MTIME_HTTP, 200), (AFTER_MTIME, 200), ("not a date", 200)] {
            assert_eq!(status(&mut c, &[("If-Unmodified-Since", v)]), want, "If-Unmodified-Since: {v}");
        }
        // If-Match decides before If-Unmodified-Since and before If-None-Match.
        assert_eq!(status(&mut c, &[("If-Match", &etag), ("If-Unmodified-Since", BEFORE_MTIME)]), 200);
        assert_eq!(status(&mut c, &[("If-Match", "\"nope\""), ("If-None-Match", &etag)]), 412);
        assert_eq!(status(&mut c, &[("If-Unmodified-Since", BEFORE_MTIME), ("If-None-Match", &etag)]), 412);

        // 3. If-None-Match (weak comparison).
        let list = format!("\"aaa\", \"bbb\" , {etag}");
        let list_tight = format!("\"aaa\",{etag}");
        let weak_list = format!("\"aaa\", {weak}");
        for v in [etag.as_str(), weak.as_str(), "*", list.as_str(), list_tight.as_str(), weak_list.as_str()] {
            let r = c.get_with(path, &[("If-None-Match", v)]);
            assert_304(&mut c, &r, &etag, &format!("If-None-Match: {v}"));
            let r = c.req("HEAD", path, &[("If-None-Match", v)]);
            assert_eq!(r.status, 304, "HEAD If-None-Match: {v}");
        }
        for v in ["\"nope\"", "\"aaa\", \"bbb\"", "W/\"nope\""] {
            assert_eq!(status(&mut c, &[("If-None-Match", v)]), 200, "If-None-Match: {v}");
        }
        // If-Match passing, If-None-Match matching → 304.
        let r = c.get_with(path, &[("If-Match", &etag), ("If-None-Match", &etag)]);
        assert_304(&mut c, &r, &etag, "If-Match + If-None-Match");

        // 4. If-Modified-Since (only without If-None-Match).
        for v in [MTIME_HTTP, AFTER_MTIME] {
            let r = c.get_with(path, &[("If-Modified-Since", v)]);
            assert_304(&mut c, &r, &etag, &format!("If-Modified-Since: {v}"));
        }
        for v in [BEFORE_MTIME, "not a date", "Wed, 01 Jan 2020 00:00:00"] {
            assert_eq!(status(&mut c, &[("If-Modified-Since", v)]), 200, "If-Modified-Since: {v}");
        }
        // If-None-Match takes precedence over If-Modified-Since, both ways.
        assert_eq!(status(&mut c, &[("If-None-Match", "\"nope\""), ("If-Modified-Since", AFTER_MTIME)]), 200);
        let r = c.get_with(path, &[("If-None-Match", &etag), ("If-Modified-Since", BEFORE_MTIME)]);
        assert_304(&mut c, &r, &etag, "matching INM with an old IMS");
        c.assert_quiet();
    }
}

// ---------------------------------------------------------------------------
// Ranges
// ---------------------------------------------------------------------------

both_drivers! {
    /// Single, open, suffix and clamped ranges; HEAD with a range.
    fn single_ranges(io) {
        let s = site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let mut c = Client::new(&server);
        let d = digits();
        let full = c.get("/digits.txt");
        let etag = etag_of(&full);
        for (spec, a, b) in [
            ("bytes=0-9", 0, 9),
            ("bytes=10-", 10, 99),
            ("bytes=-5", 95, 99),
            ("bytes=0-999999", 0, 99),
            ("bytes=99-99", 99, 99),
            ("bytes=42-42", 42, 42),
            ("bytes=-500", 0, 99),
        ] {
            let r = c.get_with("/digits.txt", &[("Range", spec)]);
            assert_eq!(r.status, 206, "{spec}: {r:?}");
            assert_eq!(r.header("content-range"), Some(format!("bytes {a}-{b}/100").as_str()), "{spec}");
            assert_eq!(r.header("content-length"), Some((b - a + 1).to_string().as_str()), "{spec}");
            assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"), "{spec}");
            assert_eq!(r.header("etag"), Some(etag.as_str()), "{spec}");
            assert_bytes(&r.body, &d[a..=b], spec);
        }
        let r = c.req("HEAD", "/digits.txt", &[("Range", "bytes=0-9")]);
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-range"), Some("bytes 0-9/100"));
        assert_eq!(r.header("content-length"), Some("10"));
        c.assert_quiet();

        // curl -r agrees.
        let out = curl(&["-r", "20-29", &server.url("/digits.txt")]);
        assert!(out.status.success());
        assert_eq!(out.stdout, d[20..30].to_vec());
    }
}

both_drivers! {
    /// Several ranges → multipart/byteranges, each part with its type, range and exact bytes.
    fn multiple_ranges(io) {
        let s = site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let mut c = Client::new(&server);
        let d = digits();
        for spec in ["bytes=0-0,10-19,-3", "bytes=0-0, 10-19, -3"] {
            let r = c.get_with("/digits.txt", &[("Range", spec)]);
            assert_eq!(r.status, 206, "{spec}: {r:?}");
            assert!(!r.chunked, "{spec}: multipart body must have a Content-Length");
            assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()), "{spec}");
            assert_eq!(r.header("content-range"), None, "{spec}: no top-level Content-Range on multipart");
            let parts = multipart_parts(&r);
            let mut spans = Vec::new();
            for (headers, bytes) in &parts {
                assert_eq!(part_header(headers, "content-type"), "text/plain; charset=utf-8", "{spec}");
                let (a, b, len) = content_range(part_header(headers, "content-range"));
                assert_eq!(len, 100, "{spec}");
                assert_bytes(bytes, &d[a as usize..=b as usize], &format!("{spec}: part {a}-{b}"));
                spans.push((a, b));
            }
            assert_eq!(spans, vec![(0, 0), (10, 19), (97, 99)], "{spec}: parts in the order asked");
        }
        // Overlapping ranges may be merged; whatever comes must cover exactly the bytes asked.
        let r = c.get_with("/digits.txt", &[("Range", "bytes=0-10,5-20")]);
        assert_eq!(r.status, 206, "{r:?}");
        let mut covered = [false; 100];
        if hdr(&r, "content-type").starts_with("multipart/byteranges") {
            for (headers, bytes) in multipart_parts(&r) {
                let (a, b, _) = content_range(part_header(&headers, "content-range"));
                assert_bytes(&bytes, &d[a as usize..=b as usize], "overlapping part");
                covered[a as usize..=b as usize].iter_mut().for_each(|x| *x = true);
            }
        } else {
            let (a, b, _) = content_range(hdr(&r, "content-range"));
            assert_bytes(&r.body, &d[a as usize..=b as usize], "merged range");
            covered[a as usize..=b as usize].iter_mut().for_each(|x| *x = true);
        }
        assert_eq!(covered.iter().position(|x| !x), Some(21), "bytes 0-20 covered, nothing more");
        assert!(covered[21..].iter().all(|x| !x));
        c.assert_quiet();
    }
}

both_drivers! {
    /// 416 for unsatisfiable ranges; malformed ranges are ignored.
    fn unsatisfiable_and_malformed_ranges(io) {
        let s = site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let mut c = Client::new(&server);
        for spec in ["bytes=1000-", "bytes=-0", "bytes=100-200"] {
            let r = c.get_with("/digits.txt", &[("Range", spec)]);
            assert_eq!(r.status, 416, "{spec}: {r:?}");
            assert_eq!(r.header("content-range"), Some("bytes */100"), "{spec}");
            assert!(!r.body_str().contains("0001020304"), "{spec}: 416 must not carry the file");
        }
        for spec in ["bytes=abc", "items=0-1", "bytes=5-1", "bytes=", "bytes=1"] {
            let r = c.get_with("/digits.txt", &[("Range", spec)]);
            assert_eq!(r.status, 200, "{spec} is ignored: {r:?}");
            assert_eq!(r.header("content-range"), None, "{spec}");
            assert_file(&r, "text/plain; charset=utf-8", &digits(), spec);
        }
        c.assert_quiet();
    }
}

both_drivers! {
    /// If-Range with the current ETag or the exact Last-Modified → 206; otherwise 200.
    fn if_range(io) {
        let s = site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let mut c = Client::new(&server);
        let d = digits();
        let etag = etag_of(&c.get("/digits.txt"));
        let weak = format!("W/{etag}");
        for (v, partial) in [
            (etag.as_str(), true),
            ("\"stale\"", false),
            (MTIME_HTTP, true),
            (AFTER_MTIME, false),
            (BEFORE_MTIME, false),
            (weak.as_str(), false),
        ] {
            let r = c.get_with("/digits.txt", &[("Range", "bytes=0-9"), ("If-Range", v)]);
            if partial {
                assert_eq!(r.status, 206, "If-Range: {v}: {r:?}");
                assert_eq!(r.header("content-range"), Some("bytes 0-9/100"));
                assert_bytes(&r.body, &d[..10], v);
            } else {
                assert_eq!(r.status, 200, "If-Range: {v}: {r:?}");
                assert_eq!(r.header("content-range"), None);
                assert_bytes(&r.body, &d, v);
            }
        }
        c.assert_quiet();
    }
}

// ---------------------------------------------------------------------------
// Caching headers
// ---------------------------------------------------------------------------

both_drivers! {
    /// `[max_age]`: Cache-Control and Expires by the longest matching prefix, also on 304.
    fn max_age(io) {
        let s = site();
        s.file("js/app.js", "let x = 1;\n");
        let toml =
            format!("[[mount]]\npath = \"/\"\ntarget = {}\n\n[max_age]\n\"/\" = 60\n\"/js\" = 0\n", s.root_toml());
        let server = skitai(io).config(&toml).start();
        let mut c = Client::new(&server);
        let check = |r: &Response, secs: i64, what: &str| {
            assert_eq!(r.header("cache-control"), Some(format!("max-age={secs}").as_str()), "{what}");
            let ahead = http_date(r, "expires") - http_date(r, "date");
            assert!((secs - 2..=secs + 2).contains(&ahead), "{what}: Expires is {ahead} s after Date, want ~{secs}");
        };
        let r = c.get("/hello.txt");
        assert_eq!(r.status, 200);
        check(&r, 60, "/hello.txt");
        let etag = etag_of(&r);
        let r = c.get("/js/app.js");
        assert_eq!((r.status, r.body_str().as_str()), (200, "let x = 1;\n"));
        check(&r, 0, "/js/app.js");
        let r = c.req("HEAD", "/sub/inner.txt", &[]);
        check(&r, 60, "HEAD /sub/inner.txt");
        let r = c.get_with("/hello.txt", &[("If-None-Match", &etag)]);
        assert_eq!(r.status, 304);
        check(&r, 60, "304 /hello.txt");
        c.assert_quiet();
    }
}

// ---------------------------------------------------------------------------
// Compression
// ---------------------------------------------------------------------------

const APP_JS: &str = "function hello() { return 'precompressed siblings'; }\n";

fn compression_site() -> Site {
    let s = Site::empty();
    s.file("app.js", APP_JS)
        .file("app.js.br", b"BROTLI-BYTES-NOT-REAL\x00\x01")
        .file("app.js.zst", b"ZSTD-BYTES-NOT-REAL\x02");
    gzip_file(&s.path("app.js"), &s.path("app.js.gz"));
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 16 * 1024 {
        text.push_str(&format!("line {i}: the quick brown fox jumps over the lazy dog\n"));
        i += 1;
    }
    s.file("big.txt", &text);
    s.file("big.json", format!("[{}]", (0..800).map(|i| format!("{{\"n\":{i}}}")).collect::<Vec<_>>().join(",")));
    s.file("small.txt", "s".repeat(100));
    s.file("edge.txt", "e".repeat(2048));
    s.file("big.png", test_bytes(16 * 1024, 11));
    s
}

both_drivers! {
    /// Precompressed siblings chosen by Accept-Encoding (q=0 honoured), `Vary`, distinct ETags.
    fn precompressed_siblings(io) {
        let s = compression_site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let mut c = Client::new(&server);
        let (gz, br, zst) = (s.read("app.js.gz"), s.read("app.js.br"), s.read("app.js.zst"));
        assert_eq!(gunzip(&gz), APP_JS.as_bytes(), "fixture");
        let mut etags = Vec::new();
        for (ae, coding, body) in [
            ("gzip", Some("gzip"), &gz),
            ("br", Some("br"), &br),
            ("zstd", Some("zstd"), &zst),
            ("br;q=0, gzip", Some("gzip"), &gz),
            ("br;q=0, gzip, zstd;q=0", Some("gzip"), &gz),
            ("gzip;q=0, zstd", Some("zstd"), &zst),
            ("deflate", None, &APP_JS.as_bytes().to_vec()),
            ("gzip;q=0", None, &APP_JS.as_bytes().to_vec()),
            ("identity", None, &APP_JS.as_bytes().to_vec()),
        ] {
            let r = c.get_with("/app.js", &[("Accept-Encoding", ae)]);
            assert_eq!(r.status, 200, "{ae}: {r:?}");
            assert_eq!(r.header("content-encoding"), coding, "Accept-Encoding: {ae}");
            assert_eq!(r.header("content-type"), Some("text/javascript; charset=utf-8"), "{ae}");
            assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{ae}");
            assert_eq!(r.header("content-length"), Some(body.len().to_string().as_str()), "{ae}");
            assert_bytes(&r.body, body, ae);
            etags.push((coding, etag_of(&r)));
        }
        let r = c.get("/app.js");
        assert_eq!(r.header("content-encoding"), None);
        assert_eq!(r.header("vary"), Some("Accept-Encoding"), "Vary without Accept-Encoding too");
        assert_bytes(&r.body, APP_JS.as_bytes(), "no Accept-Encoding");
        let identity = etag_of(&r);
        let etag_for = |coding| etags.iter().find(|(c, _)| *c == Some(coding)).unwrap().1.clone();
        let (egz, ebr, ezst) = (etag_for("gzip"), etag_for("br"), etag_for("zstd"));
        for (a, b) in [(&identity, &egz), (&identity, &ebr), (&identity, &ezst), (&egz, &ebr), (&egz, &ezst), (&ebr, &ezst)] {
            assert_ne!(a, b, "each representation has its own ETag");
        }
        // Any acceptable sibling is fine when all are acceptable, but it must be consistent.
        let r = c.get_with("/app.js", &[("Accept-Encoding", "gzip, deflate, br, zstd")]);
        let want = match r.header("content-encoding") {
            Some("gzip") => &gz,
            Some("br") => &br,
            Some("zstd") => &zst,
            other => panic!("all three acceptable, got Content-Encoding {other:?}"),
        };
        assert_bytes(&r.body, want, "all acceptable");
        // Validators per representation.
        let r = c.get_with("/app.js", &[("Accept-Encoding", "gzip"), ("If-None-Match", &egz)]);
        assert_eq!(r.status, 304, "the gzip ETag validates the gzip representation: {r:?}");
        assert_eq!(r.header("etag"), Some(egz.as_str()));
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        let r = c.get_with("/app.js", &[("If-None-Match", &egz)]);
        assert_eq!(r.status, 200, "the gzip ETag does not validate the identity representation");
        assert_bytes(&r.body, APP_JS.as_bytes(), "identity after gzip ETag");
        // HEAD: same headers, no body.
        let r = c.req("HEAD", "/app.js", &[("Accept-Encoding", "br")]);
        assert_eq!(r.header("content-encoding"), Some("br"));
        assert_eq!(r.header("content-length"), Some(br.len().to_string().as_str()));
        // The sibling itself, asked for by name: no magic.
        let r = c.get_with("/app.js.gz", &[("Accept-Encoding", "gzip")]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/gzip"));
        assert_eq!(r.header("content-encoding"), None);
        assert_bytes(&r.body, &gz, "/app.js.gz");
        c.assert_quiet();
    }
}

both_drivers! {
    /// On-the-fly gzip for text over 2 KiB without a sibling; not for small or binary files.
    fn gzip_on_the_fly(io) {
        let s = compression_site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let mut c = Client::new(&server);
        for (path, file, ct) in [
            ("/big.txt", "big.txt", "text/plain; charset=utf-8"),
            ("/big.json", "big.json", "application/json; charset=utf-8"),
        ] {
            let want = s.read(file);
            let r = c.get_with(path, &[("Accept-Encoding", "gzip")]);
            assert_eq!(r.status, 200, "{path}: {r:?}");
            assert_eq!(r.header("content-encoding"), Some("gzip"), "{path}");
            assert_eq!(r.header("content-type"), Some(ct), "{path}");
            assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{path}");
            assert_ne!(r.header("content-length"), Some(want.len().to_string().as_str()), "{path}");
            assert!(r.body.len() < want.len(), "{path}: {} compressed bytes for {}", r.body.len(), want.len());
            assert_bytes(&gunzip(&r.body), &want, &format!("{path} decompressed"));
            // Without Accept-Encoding: identity, still Vary.
            let r = c.get(path);
            assert_eq!(r.header("content-encoding"), None, "{path}");
            assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{path}: Vary on a compressible type");
            assert_bytes(&r.body, &want, path);
        }
        for (path, file) in [("/small.txt", "small.txt"), ("/edge.txt", "edge.txt"), ("/big.png", "big.png")] {
            let want = s.read(file);
            let r = c.get_with(path, &[("Accept-Encoding", "gzip")]);
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(r.header("content-encoding"), None, "{path} is sent as it is");
            assert_eq!(r.header("content-length"), Some(want.len().to_string().as_str()), "{path}");
            assert_bytes(&r.body, &want, path);
        }
        c.assert_quiet();

        // curl --compressed decodes to the file.
        let dir = tempfile::tempdir().unwrap();
        let (out_file, hdr_file) = (dir.path().join("body"), dir.path().join("headers"));
        let out = curl(&[
            "--compressed",
            "-D",
            hdr_file.to_str().unwrap(),
            "-o",
            out_file.to_str().unwrap(),
            &server.url("/big.txt"),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (status, headers) = last_header_block(&fs::read_to_string(&hdr_file).unwrap());
        assert_eq!(status, 200);
        assert!(headers.iter().any(|(n, v)| n == "content-encoding" && v == "gzip"), "{headers:?}");
        assert_bytes(&fs::read(&out_file).unwrap(), &s.read("big.txt"), "curl --compressed");
    }
}

// ---------------------------------------------------------------------------
// Large files
// ---------------------------------------------------------------------------

const MIB: usize = 1 << 20;

fn large_site() -> Site {
    let s = Site::empty();
    s.file("one.bin", test_bytes(MIB, 101)).file("twenty.bin", test_bytes(20 * MIB, 202)).file("hello.txt", HELLO);
    s
}

both_drivers! {
    /// 1 MiB and 20 MiB byte-exact, several on one keep-alive connection (also
    /// pipelined), a range in the middle of a large file.
    fn large_files_raw(io) {
        let s = large_site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let (one, twenty) = (s.read("one.bin"), s.read("twenty.bin"));
        let mut c = Client::new(&server);
        for (i, (path, want)) in
            [("/one.bin", &one), ("/twenty.bin", &twenty), ("/one.bin", &one), ("/twenty.bin", &twenty)].iter().enumerate()
        {
            let r = c.get(path);
            assert_eq!(r.status, 200, "request {i}");
            assert_eq!(r.header("content-type"), Some("application/octet-stream"));
            assert_eq!(r.header("content-length"), Some(want.len().to_string().as_str()), "request {i}");
            assert_bytes(&r.body, want, &format!("request {i} {path}"));
        }
        let r = c.req("HEAD", "/twenty.bin", &[]);
        assert_eq!(r.header("content-length"), Some((20 * MIB).to_string().as_str()));
        let (a, b) = (10_000_000usize, 10_999_999usize);
        let r = c.get_with("/twenty.bin", &[("Range", &format!("bytes={a}-{b}"))]);
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-range"), Some(format!("bytes {a}-{b}/{}", 20 * MIB).as_str()));
        assert_bytes(&r.body, &twenty[a..=b], "middle range");
        let r = c.get_with("/twenty.bin", &[("Range", "bytes=5000000-5000009,15000000-15000009")]);
        assert_eq!(r.status, 206);
        let parts = multipart_parts(&r);
        let mut spans = Vec::new();
        for (headers, bytes) in &parts {
            let (a, b, _) = content_range(part_header(headers, "content-range"));
            assert_bytes(bytes, &twenty[a as usize..=b as usize], "multipart part of a large file");
            spans.push((a, b));
        }
        assert_eq!(spans, vec![(5_000_000, 5_000_009), (15_000_000, 15_000_009)]);
        c.assert_quiet();

        // Pipelined: both requests in one write.
        let mut p = server.connect();
        p.send(format!("{}{}", get("/twenty.bin"), get("/one.bin")));
        assert_bytes(&p.read_response().body, &twenty, "pipelined 20 MiB");
        assert_bytes(&p.read_response().body, &one, "pipelined 1 MiB");
    }
}

both_drivers! {
    /// curl downloads the large files byte-exact, and a range of one.
    fn large_files_curl(io) {
        let s = large_site();
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let dir = tempfile::tempdir().unwrap();
        for name in ["one.bin", "twenty.bin"] {
            let out_file = dir.path().join(name);
            let out = curl(&["-o", out_file.to_str().unwrap(), &server.url(&format!("/{name}"))]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_bytes(&fs::read(&out_file).unwrap(), &s.read(name), &format!("curl {name}"));
        }
        let out_file = dir.path().join("range");
        let out = curl(&["-r", "12345678-13345677", "-o", out_file.to_str().unwrap(), &server.url("/twenty.bin")]);
        assert!(out.status.success());
        assert_bytes(&fs::read(&out_file).unwrap(), &s.read("twenty.bin")[12_345_678..13_345_678], "curl range");
    }
}

both_drivers! {
    /// Clients that go away mid-download (FIN or RST) do not hurt the server.
    fn abandoned_downloads(io) {
        let s = large_site();
        let mut server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let twenty = s.read("twenty.bin");
        for i in 0..4 {
            let mut c = server.connect();
            c.send(get("/twenty.bin"));
            let mut buf = vec![0u8; 64 * 1024];
            let n = std::io::Read::read(&mut c.stream, &mut buf).expect("first bytes of the download");
            assert!(n > 0);
            if i % 2 == 0 { drop(c) } else { abort(c) }
        }
        // A range request abandoned too, and one abandoned before any read.
        let mut c = server.connect();
        c.send(request("GET", "/twenty.bin", &[("Range", "bytes=1000-")]));
        abort(c);
        thread::sleep(Duration::from_millis(100));
        assert!(server.is_running(), "the server died");
        let mut c = Client::new(&server);
        assert_eq!(c.get("/hello.txt").body_str(), HELLO);
        let r = c.get("/twenty.bin");
        assert_eq!(r.status, 200);
        assert_bytes(&r.body, &twenty, "download after abandoned ones");
    }
}

// ---------------------------------------------------------------------------
// Files that change
// ---------------------------------------------------------------------------

both_drivers! {
    /// A changed file is served fresh after the revalidation interval (default 1 s).
    fn changed_file_revalidated(io) {
        let s = site();
        s.file("changing.txt", "version one\n");
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let mut c = Client::new(&server);
        let r = c.get("/changing.txt");
        assert_eq!(r.body_str(), "version one\n");
        let old = etag_of(&r);
        fs::write(s.path("changing.txt"), "version two, which is longer\n").unwrap();
        thread::sleep(Duration::from_millis(1500));
        let r = c.get("/changing.txt");
        assert_eq!(r.status, 200);
        assert_eq!(r.body_str(), "version two, which is longer\n");
        assert_eq!(r.header("content-length"), Some("29"));
        assert_ne!(etag_of(&r), old, "a new ETag for new content");
        // The old ETag no longer validates.
        let r = c.get_with("/changing.txt", &[("If-None-Match", &old)]);
        assert_eq!(r.status, 200);
        assert_eq!(r.body_str(), "version two, which is longer\n");
    }
}

both_drivers! {
    /// `[static] revalidate = 0`: every request sees the file as it is now.
    fn revalidate_zero(io) {
        let s = site();
        s.file("changing.txt", "version one\n");
        let toml = format!("[[mount]]\npath = \"/\"\ntarget = {}\n\n[static]\nrevalidate = 0\n", s.root_toml());
        let server = skitai(io).config(&toml).start();
        let mut c = Client::new(&server);
        let r = c.get("/changing.txt");
        assert_eq!(r.body_str(), "version one\n");
        let old = etag_of(&r);
        fs::write(s.path("changing.txt"), "version two, which is longer\n").unwrap();
        let r = c.get("/changing.txt");
        assert_eq!(r.body_str(), "version two, which is longer\n");
        assert_ne!(etag_of(&r), old);
        fs::remove_file(s.path("changing.txt")).unwrap();
        assert_eq!(c.get("/changing.txt").status, 404, "a removed file is gone at once");
    }
}

// ---------------------------------------------------------------------------
// Configuration errors
// ---------------------------------------------------------------------------

/// Starts `builder`, expects exit code 2 (no panic) and stderr naming one of `keys`.
fn assert_config_error(builder: support::ServerBuilder, keys: &[&str]) {
    let mut server = builder.spawn();
    let status = server.wait_exit(EXIT_TIMEOUT).expect("the server should refuse to start");
    let stderr = server.stderr();
    assert_eq!(status.code(), Some(2), "exit status {status:?}\nstderr: {stderr}");
    assert!(!stderr.contains("panicked at"), "panicked:\n{stderr}");
    assert!(keys.iter().any(|k| stderr.contains(k)), "stderr should name one of {keys:?}:\n{stderr}");
}

#[test]
fn missing_directory_is_a_config_error() {
    let s = site();
    let missing = s.base().join("no-such-dir");
    assert_config_error(
        skitai(Io::Epoll).arg("--mount").arg(format!("/={}", missing.display())),
        &["--mount", "mount[0].target"],
    );
    let toml = format!(
        "[[mount]]\npath = \"/a\"\ntarget = {}\n\n[[mount]]\npath = \"/b\"\ntarget = {}\n",
        s.root_toml(),
        toml_str(&missing)
    );
    assert_config_error(skitai(Io::Epoll).config(&toml), &["mount[1].target"]);
    // Relative to the working directory: `./root` exists in BASE, not in BASE/root.
    assert_config_error(
        skitai(Io::Epoll).current_dir(&s.root()).arg("--mount").arg("/=./root"),
        &["--mount", "mount[0].target"],
    );
}

#[test]
fn unknown_mount_key_is_a_config_error() {
    let s = site();
    for key in ["listng", "follow_symlink", "hiden"] {
        let toml = format!("[[mount]]\npath = \"/\"\ntarget = {}\n{key} = true\n", s.root_toml());
        assert_config_error(skitai(Io::Epoll).config(&toml), &[key]);
    }
}

both_drivers! {
    /// A FIFO (or socket) in the tree is never opened for good and never
    /// served: many requests for it all get a prompt 404 (an `open` that
    /// waited for a writer would tie up the blocking pool and hang them).
    fn fifo_is_not_served_and_does_not_wedge(io) {
        let site = site();
        let fifo = std::ffi::CString::new(site.path("pipe").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path that lives through the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let server = skitai(io).arg("--mount").arg(site.mount_flag("/")).start();
        let mut c = Client::new(&server);
        for _ in 0..8 {
            assert_eq!(c.get("/pipe").status, 404);
        }
        let r = c.get("/hello.txt");
        assert_eq!(r.status, 200);
        assert_eq!(r.body_str(), HELLO);
    }
}

both_drivers! {
    /// A file named like a URL scheme cannot become a `javascript:` link in a listing.
    fn listing_names_cannot_become_schemes(io) {
        let site = Site::empty();
        site.file("javascript:alert(document.cookie)", "x");
        let toml = format!("[[mount]]\npath = \"/\"\ntarget = {}\nlisting = true\n", site.root_toml());
        let server = skitai(io).config(&toml).start();
        let r = fetch(&server, "GET", "/", &[]);
        assert_eq!(r.status, 200);
        let html = r.body_str();
        assert!(html.contains("href=\"javascript%3Aalert(document.cookie)\""), "{html}");
        assert!(!html.contains("href=\"javascript:"), "{html}");
    }
}

both_drivers! {
    /// With `[static] sendfile = false` large files go through memory (io_uring
    /// reads on that driver) and still arrive byte-exact, ranges and multipart included.
    fn large_files_through_memory(io) {
        let s = large_site();
        let toml = format!("[static]\nsendfile = false\n[[mount]]\npath = \"/\"\ntarget = {}\n", s.root_toml());
        let server = skitai(io).config(&toml).start();
        let twenty = s.read("twenty.bin");
        let mut c = Client::new(&server);
        for _ in 0..2 {
            let r = c.get("/twenty.bin");
            assert_eq!(r.status, 200);
            assert_bytes(&r.body, &twenty, "20 MiB through memory");
        }
        let r = c.get_with("/twenty.bin", &[("Range", "bytes=3-300000,19999990-")]);
        assert_eq!(r.status, 206);
        let parts = multipart_parts(&r);
        assert_eq!(parts.len(), 2);
        assert_bytes(&parts[0].1, &twenty[3..=300_000], "first part");
        assert_bytes(&parts[1].1, &twenty[19_999_990..], "second part");
        c.assert_quiet();
    }
}

both_drivers! {
    /// 200 pipelined requests for a cached 60 KiB file in one write, from a
    /// client that then reads nothing for a while: the answers go out in
    /// batches as the socket takes them, rather than all ~12 MB being
    /// encoded first (the server's resident memory grows by far less), and
    /// every response then arrives whole and in order.
    fn pipelined_flood_is_written_in_batches(io) {
        const COUNT: usize = 200;
        let s = Site::empty();
        let big = test_bytes(60 * 1024, 3);
        s.file("big.js", &big);
        let server = skitai(io).arg("--mount").arg(s.mount_flag("/")).start();
        let mut warm = server.connect();
        warm.send(get("/big.js"));
        assert!(warm.read_response().body == big);
        let pid = server.serving_pid();
        let before = rss_kib(pid);

        let mut c = server.connect();
        c.send("GET /big.js HTTP/1.1\r\nHost: x\r\n\r\n".repeat(COUNT));
        // Let the server do what it will with them for a while, reading nothing.
        let mut peak = before;
        for _ in 0..20 {
            thread::sleep(Duration::from_millis(50));
            peak = peak.max(rss_kib(pid));
        }
        assert!(peak < before + 3 * 1024, "resident memory grew from {before} KiB to {peak} KiB");
        for i in 0..COUNT {
            let r = c.read_response();
            assert_eq!(r.status, 200, "response {i}");
            assert!(r.body == big, "response {i}: {} bytes", r.body.len());
        }
    }
}

both_drivers! {
    /// `request_timeout` is the client's inactivity, not a deadline for a
    /// whole body: a 32 MiB file served from memory (`cache_max_file`
    /// raised) to a client that reads it steadily (64 KiB every 10 ms, about
    /// 5 s in all, many times what the socket buffers hold) arrives whole
    /// with a 2 s timeout. Each write is timed on its own; one timed write
    /// of the whole body was cut off after 2 s.
    fn slow_steady_reader_gets_a_large_body(io) {
        use std::io::{Read, Write};
        let s = Site::empty();
        let big = test_bytes(32 << 20, 5);
        s.file("big.bin", &big);
        let config = "[server]\nrequest_timeout = 2\n[static]\ncache_size = \"128MiB\"\ncache_max_file = \"64MiB\"\ngzip = false\n";
        let server = skitai(io).config(config).arg("--mount").arg(s.mount_flag("/")).start();
        let mut stream = std::net::TcpStream::connect(server.addr()).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut got = Vec::with_capacity(big.len() + 1024);
        let mut piece = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut piece) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&piece[..n]),
                Err(e) => panic!("read failed after {} bytes: {e}", got.len()),
            }
            thread::sleep(Duration::from_millis(10));
        }
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
        let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(got[head_end..] == big[..], "{} of {} body bytes", got.len() - head_end, big.len());
    }
}
