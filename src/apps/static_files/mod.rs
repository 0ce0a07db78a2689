//! Static files: directories mounted at URL prefixes, served with validators,
//! conditional and range requests, caching headers and compression.
//!
//! Request flow: [`resolve`] turns the URL path into a safe relative path;
//! the shard's [`cache`] says what it names (loading it on the blocking pool
//! when absent or stale, through [`fs`], which keeps the kernel from leaving
//! the root); then preconditions ([`conditional`]), the representation
//! ([`encoding`]) and ranges ([`range`]) decide the response. Small files are
//! answered from memory; large ones go out with `sendfile`.

mod cache;
mod conditional;
mod encoding;
mod fs;
mod listing;
mod range;
mod resolve;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

use self::cache::{Cache, CacheLimits, FileEntry, Found, Probe, Repr};
use self::encoding::Coding;
use self::range::RangeRequest;
use crate::config::StaticConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::http::{Body, FileBody, FilePart, Request, Response, error_response, header_pool};

/// Index files tried, in order, for a directory.
const INDEX_FILES: [&str; 2] = ["index.html", "index.htm"];
/// Smallest file compressed on the fly.
const GZIP_MIN_SIZE: u64 = 2048;

const ALLOW_GET_HEAD: HeaderValue = HeaderValue::from_static("GET, HEAD");
const BYTES: HeaderValue = HeaderValue::from_static("bytes");
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const VARY_ACCEPT_ENCODING: HeaderValue = HeaderValue::from_static("Accept-Encoding");
const TEXT_HTML_UTF8: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");

/// A directory to mount, with its options:
/// `Engine::new().mount("/files", StaticDir::new("./files").listing(true))`.
///
/// Mounting a plain string that names a directory (`.mount("/", "./public")`)
/// is the same as `StaticDir::new("./public")` with every option off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticDir {
    pub(crate) path: PathBuf,
    pub(crate) listing: bool,
    pub(crate) follow_symlinks: bool,
    pub(crate) hidden: bool,
}

impl StaticDir {
    /// The directory at `path` (relative paths are taken from the working directory at start-up).
    pub fn new(path: impl Into<PathBuf>) -> StaticDir {
        StaticDir { path: path.into(), listing: false, follow_symlinks: false, hidden: false }
    }

    /// Lists directories that have no index file (off by default).
    pub fn listing(mut self, on: bool) -> StaticDir {
        self.listing = on;
        self
    }

    /// Follows symlinks that point outside the directory (off by default:
    /// such links answer 404; links that stay inside always work).
    pub fn follow_symlinks(mut self, on: bool) -> StaticDir {
        self.follow_symlinks = on;
        self
    }

    /// Serves dot-files such as `.well-known/` (off by default).
    pub fn hidden(mut self, on: bool) -> StaticDir {
        self.hidden = on;
        self
    }

    /// The directory path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `Cache-Control: max-age` rules by URL prefix, longest first.
#[derive(Debug, Default)]
pub(crate) struct MaxAge {
    rules: Vec<(String, u64)>,
}

impl MaxAge {
    pub(crate) fn new(rules: impl IntoIterator<Item = (String, u64)>) -> MaxAge {
        let mut rules: Vec<_> = rules.into_iter().collect();
        rules.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        MaxAge { rules }
    }

    /// The rule for `path`: the longest prefix that ends at a segment boundary
    /// (`/js` covers `/js` and `/js/app.js`, not `/json`).
    fn for_path(&self, path: &str) -> Option<u64> {
        self.rules
            .iter()
            .find(|(prefix, _)| {
                path.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'))
            })
            .map(|(_, secs)| *secs)
    }
}

/// A mounted directory as every shard shares it: the open root and the options.
#[derive(Debug)]
pub(crate) struct StaticMount {
    root: fs::Root,
    listing: bool,
    hidden: bool,
    gzip: bool,
    limits: CacheLimits,
    max_age: Arc<MaxAge>,
}

impl StaticMount {
    /// Opens the directory; fails when it does not exist or is not a directory.
    pub(crate) fn open(dir: &StaticDir, settings: &StaticConfig, max_age: Arc<MaxAge>) -> std::io::Result<StaticMount> {
        let root = fs::Root::open(&dir.path, dir.follow_symlinks)?;
        let limits = CacheLimits {
            revalidate: Duration::from_secs(settings.revalidate),
            entries: settings.cache_entries,
            bytes: settings.cache_size.bytes(),
            max_file: settings.cache_max_file.bytes(),
        };
        Ok(StaticMount { root, listing: dir.listing, hidden: dir.hidden, gzip: settings.gzip, limits, max_age })
    }

    /// The canonical path of the mounted directory.
    pub(crate) fn root_path(&self) -> &Path {
        self.root.path()
    }
}

/// Ends a reload handed out by the cache if the loading request stops early.
struct ReloadGuard<'a> {
    cache: &'a RefCell<Cache>,
    rel: &'a str,
    finished: bool,
}

impl Drop for ReloadGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.cache.borrow_mut().abandon(self.rel);
        }
    }
}

/// One shard's server for one static mount.
pub(crate) struct StaticFiles {
    mount: Arc<StaticMount>,
    cache: RefCell<Cache>,
}

impl StaticFiles {
    /// A server for `mount` with an empty cache.
    pub(crate) fn new(mount: Arc<StaticMount>) -> StaticFiles {
        let cache = RefCell::new(Cache::new(mount.limits));
        StaticFiles { mount, cache }
    }

    /// Answers `req`, whose path below the mount point starts at byte `strip`;
    /// `None` when nothing here may be served (the next mount, or a 404, answers).
    pub(crate) async fn serve(&self, req: &Request, strip: usize) -> Option<Response> {
        let path = req.uri().path();
        let rel = resolve::resolve(path.get(strip..)?, self.mount.hidden)?;
        let found = match self.lookup(&rel.path).await {
            Ok(found) => found,
            Err(e) => return Some(self.failure(req, &e)),
        };
        match found {
            Found::Missing => None,
            Found::File(_) if rel.trailing_slash => None,
            Found::File(entry) => Some(self.respond(req, &rel.path, &entry).await),
            // Only GET and HEAD read directories; other methods go on to a handler (or 404).
            Found::Dir if req.method() != Method::GET && req.method() != Method::HEAD => None,
            Found::Dir if !rel.trailing_slash => Some(redirect_to_slash(req)),
            Found::Dir => {
                for index in INDEX_FILES {
                    let index_path =
                        if rel.path.is_empty() { index.to_owned() } else { format!("{}/{index}", rel.path) };
                    match self.lookup(&index_path).await {
                        Ok(Found::File(entry)) => return Some(self.respond(req, &index_path, &entry).await),
                        Ok(_) => {}
                        Err(e) => return Some(self.failure(req, &e)),
                    }
                }
                if self.mount.listing { Some(self.listing(req, &rel.path).await) } else { None }
            }
        }
    }

    /// What `rel` names: from the cache, or loaded on the blocking pool.
    async fn lookup(&self, rel: &str) -> Result<Found> {
        let (old, reusable) = match self.cache.borrow_mut().probe(rel, Instant::now()) {
            Probe::Fresh(found) => return Ok(found),
            Probe::Load { old, reusable } => (old, reusable),
        };
        // If this request goes away mid-load, the next one may reload.
        let mut reload = ReloadGuard { cache: &self.cache, rel, finished: false };
        let mount = self.mount.clone();
        let key = rel.to_owned();
        let max_file = self.mount.limits.max_file;
        let (loaded, checked) = monoio::spawn_blocking(move || {
            let checked = Instant::now();
            cache::load(&mount.root, &key, max_file, &reusable).map(|loaded| (loaded, checked))
        })
        .await
        .map_err(|_| Error::new(ErrorKind::Internal, "static file task failed"))??;
        let found = cache::materialize(rel, loaded);
        reload.finished = true;
        Ok(self.cache.borrow_mut().insert(rel, found, old, checked))
    }

    /// The response for a regular file.
    async fn respond(&self, req: &Request, key: &str, entry: &Rc<FileEntry>) -> Response {
        let method = req.method();
        if method != Method::GET && method != Method::HEAD {
            return method_not_allowed();
        }
        let headers = req.headers();
        let on_the_fly = self.gzip_eligible(entry);
        let coding = if entry.variants.is_empty() && !on_the_fly {
            None
        } else {
            let quality = encoding::accepted(headers);
            encoding::choose(quality, |c| entry.variant(c).is_some() || (c == Coding::Gzip && on_the_fly))
        };
        let repr = match coding {
            None => entry.identity.clone(),
            Some(c) => match entry.variant(c) {
                Some(v) => v.clone(),
                None => self.gzipped(key, entry).await.unwrap_or_else(|| entry.identity.clone()),
            },
        };
        let vary = !entry.variants.is_empty() || on_the_fly;

        let mut h = header_pool::take();
        h.insert(header::ETAG, repr.etag.clone());
        h.insert(header::LAST_MODIFIED, repr.last_modified.clone());
        if vary {
            h.insert(header::VARY, VARY_ACCEPT_ENCODING);
        }
        self.cache_headers(req.uri().path(), &mut h);

        if let Some(status) = conditional::evaluate(method, headers, &repr.validators).status() {
            return with_headers(status, h, Body::empty());
        }

        h.insert(header::CONTENT_TYPE, entry.content_type.clone());
        h.insert(header::ACCEPT_RANGES, BYTES);
        h.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
        if let Some(c) = repr.coding {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(c.token()));
        }

        let ranges = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
            Some(value) if conditional::if_range_allows(headers, &repr.validators) => range::parse(value, repr.len),
            _ => RangeRequest::Whole,
        };
        match ranges {
            RangeRequest::Whole => with_headers(StatusCode::OK, h, body_of(&repr, 0, repr.len)),
            RangeRequest::Unsatisfiable => {
                h.insert(header::CONTENT_RANGE, header_value(format!("bytes */{}", repr.len)));
                h.remove(header::CONTENT_TYPE);
                with_headers(StatusCode::RANGE_NOT_SATISFIABLE, h, Body::empty())
            }
            RangeRequest::Ranges(ranges) if ranges.len() == 1 => {
                let r = &ranges[0];
                h.insert(header::CONTENT_RANGE, header_value(format!("bytes {}-{}/{}", r.start, r.end - 1, repr.len)));
                with_headers(StatusCode::PARTIAL_CONTENT, h, body_of(&repr, r.start, r.end - r.start))
            }
            RangeRequest::Ranges(ranges) => {
                let boundary = boundary();
                let part_type = entry.content_type.to_str().unwrap_or("application/octet-stream").to_owned();
                h.insert(header::CONTENT_TYPE, header_value(format!("multipart/byteranges; boundary={boundary}")));
                with_headers(StatusCode::PARTIAL_CONTENT, h, multipart(&repr, &ranges, &boundary, &part_type))
            }
        }
    }

    /// True when the file may be gzip-compressed here (text, bigger than
    /// 2 KiB, small enough to be in memory, and no `.gz` sibling).
    fn gzip_eligible(&self, entry: &FileEntry) -> bool {
        self.mount.gzip
            && entry.compressible
            && entry.identity.contents.is_some()
            && entry.identity.len > GZIP_MIN_SIZE
            && entry.variant(Coding::Gzip).is_none()
    }

    /// The entry's gzip copy, made once on the blocking pool and kept.
    async fn gzipped(&self, key: &str, entry: &Rc<FileEntry>) -> Option<Rc<Repr>> {
        if let Some(done) = entry.gzipped.borrow().as_ref() {
            return Some(done.clone());
        }
        let contents = entry.identity.contents.clone()?;
        let packed = match monoio::spawn_blocking(move || encoding::gzip(&contents)).await {
            Ok(Ok(packed)) => packed,
            _ => return None,
        };
        let repr = Rc::new(entry.identity.gzipped(packed));
        if entry.gzipped.borrow().is_none() {
            *entry.gzipped.borrow_mut() = Some(repr.clone());
            self.cache.borrow_mut().grew(key, entry, repr.len);
        }
        Some(repr)
    }

    /// `Cache-Control` and `Expires` when a `max_age` rule covers the path.
    fn cache_headers(&self, path: &str, h: &mut HeaderMap) {
        if let Some(secs) = self.mount.max_age.for_path(path) {
            h.insert(header::CACHE_CONTROL, header_value(format!("max-age={secs}")));
            let expires = SystemTime::now() + Duration::from_secs(secs);
            h.insert(header::EXPIRES, header_value(httpdate::fmt_http_date(expires)));
        }
    }

    /// A listing of the directory `rel`.
    async fn listing(&self, req: &Request, rel: &str) -> Response {
        let mount = self.mount.clone();
        let dir = mount.root.path().join(rel);
        let url_path = req.uri().path().to_owned();
        let listed = monoio::spawn_blocking(move || {
            let confine = (!mount.root.follows_symlinks()).then(|| mount.root.path());
            listing::render(&dir, &url_path, mount.hidden, confine)
        });
        match listed.await {
            Ok(Ok(page)) => {
                let mut h = header_pool::take();
                h.insert(header::CONTENT_TYPE, TEXT_HTML_UTF8);
                with_headers(StatusCode::OK, h, Body::full(page))
            }
            Ok(Err(e)) => self.failure(req, &Error::from(e)),
            Err(_) => self.failure(req, &Error::new(ErrorKind::Internal, "listing task failed")),
        }
    }

    fn failure(&self, req: &Request, e: &Error) -> Response {
        tracing::warn!(path = req.uri().path(), root = %self.mount.root.path().display(), error = %e, "static file error");
        error_response(StatusCode::INTERNAL_SERVER_ERROR, req.headers().get(header::ACCEPT), None)
    }
}

fn with_headers(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    header_pool::install(res.headers_mut(), headers);
    res
}

fn header_value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).expect("generated header values are visible ASCII")
}

fn method_not_allowed() -> Response {
    let mut res = error_response(StatusCode::METHOD_NOT_ALLOWED, None, None);
    res.headers_mut().insert(header::ALLOW, ALLOW_GET_HEAD);
    res
}

/// 301 to the directory's URL with a trailing slash (query kept), so relative links in its index resolve.
fn redirect_to_slash(req: &Request) -> Response {
    let uri = req.uri();
    let location = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    let mut res = error_response(StatusCode::MOVED_PERMANENTLY, req.headers().get(header::ACCEPT), None);
    if let Ok(value) = HeaderValue::try_from(location) {
        res.headers_mut().insert(header::LOCATION, value);
    }
    res
}

/// `len` bytes of a representation from `offset`: from memory when it is
/// there, else from the open file.
fn body_of(repr: &Repr, offset: u64, len: u64) -> Body {
    match (&repr.contents, &repr.file) {
        (Some(bytes), _) => Body::full(bytes.slice(offset as usize..(offset + len) as usize)),
        (None, Some(file)) => Body::file(FileBody::range(file.clone(), offset, len)),
        (None, None) => Body::empty(),
    }
}

/// A `multipart/byteranges` body (RFC 9110 §14.6).
fn multipart(repr: &Repr, ranges: &[std::ops::Range<u64>], boundary: &str, part_type: &str) -> Body {
    let mut parts: Vec<FilePart> = Vec::with_capacity(ranges.len() * 2 + 1);
    for (i, r) in ranges.iter().enumerate() {
        let lead = if i == 0 { "" } else { "\r\n" };
        let head = format!(
            "{lead}--{boundary}\r\nContent-Type: {part_type}\r\nContent-Range: bytes {}-{}/{}\r\n\r\n",
            r.start,
            r.end - 1,
            repr.len
        );
        parts.push(FilePart::Bytes(Bytes::from(head)));
        parts.push(FilePart::Range { offset: r.start, len: r.end - r.start });
    }
    parts.push(FilePart::Bytes(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
    match (&repr.contents, &repr.file) {
        (Some(contents), _) => {
            let mut all = BytesMut::new();
            for part in parts {
                match part {
                    FilePart::Bytes(b) => all.put_slice(&b),
                    FilePart::Range { offset, len } => {
                        all.put_slice(&contents[offset as usize..(offset + len) as usize]);
                    }
                }
            }
            Body::full(all.freeze())
        }
        (None, Some(file)) => Body::file(FileBody { file: file.clone(), parts }),
        (None, None) => Body::empty(),
    }
}

/// A multipart boundary that will not occur in the parts by chance.
fn boundary() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // splitmix64 of time and a counter: distinct per response, not guessable from the content.
    let mut z = nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    format!("skitai-{:016x}", z ^ (z >> 31))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_longest_prefix_wins() {
        let m = MaxAge::new([("/".to_owned(), 60), ("/js".to_owned(), 0), ("/js/vendor".to_owned(), 86400)]);
        assert_eq!(m.for_path("/a.txt"), Some(60));
        assert_eq!(m.for_path("/js/app.js"), Some(0));
        assert_eq!(m.for_path("/js/vendor/x.js"), Some(86400));
        assert_eq!(m.for_path("/json"), Some(60), "prefixes end at segment boundaries");
        assert_eq!(m.for_path("/js"), Some(0));
        assert_eq!(MaxAge::default().for_path("/a"), None);
    }

    #[test]
    fn boundaries_differ() {
        assert_ne!(boundary(), boundary());
    }
}
