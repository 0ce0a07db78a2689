//! The per-request context handed to handlers.

use std::net::SocketAddr;
use std::rc::Rc;

use http::{Uri, Version};

/// What a handler knows about the request beyond the request itself, and
/// (as later features land) the per-request services.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub(crate) peer: SocketAddr,
    pub(crate) shard: usize,
    pub(crate) mount_point: Rc<str>,
    pub(crate) original_uri: Uri,
    pub(crate) version: Version,
    pub(crate) devel: bool,
    /// Paths `push` recorded; `None` where push is not possible (HTTP/1.1).
    pub(crate) pushes: Option<Vec<String>>,
}

impl Ctx {
    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The shard answering this request.
    pub fn shard_id(&self) -> usize {
        self.shard
    }

    /// The mount point the request matched, e.g. `/api`.
    pub fn mount_point(&self) -> &str {
        &self.mount_point
    }

    /// The request target as the client sent it, before the mount point was stripped.
    pub fn original_uri(&self) -> &Uri {
        &self.original_uri
    }

    /// The full request path, mount point included.
    pub fn full_path(&self) -> &str {
        self.original_uri.path()
    }

    /// The protocol version of the request.
    pub fn version(&self) -> Version {
        self.version
    }

    /// True when the server runs with `--devel`.
    pub fn devel(&self) -> bool {
        self.devel
    }

    /// Asks to push the resource at `path` (an absolute path such as
    /// `/static/app.css`) with this response: on HTTP/2, when the client
    /// allows push, a PUSH_PROMISE goes out before the response and the
    /// resource is served through the mount table as a GET. Over HTTP/1.1,
    /// or when the client disabled push, nothing happens.
    pub fn push(&mut self, path: &str) {
        if let Some(pushes) = &mut self.pushes {
            if path.starts_with('/') {
                pushes.push(path.to_owned());
            }
        }
    }
}
