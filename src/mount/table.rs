//! The mount table: longest prefix wins; at equal prefixes a static
//! directory is tried before a handler, and a static miss falls through to
//! the next mount that matches.

use std::rc::Rc;
use std::sync::Arc;

use super::{Handler, HandlerFactory};
use crate::apps::static_files::{StaticFiles, StaticMount};

/// A mount as resolved at start-up, shared by every shard.
#[derive(Clone)]
pub(crate) enum MountSpec {
    /// A handler, built once per shard.
    Handler(Arc<dyn HandlerFactory>),
    /// A directory of static files.
    Static(Arc<StaticMount>),
}

/// What answers at a mount point on one shard.
pub(crate) enum Target {
    /// The handler built for this shard.
    Handler(Rc<dyn Handler>),
    /// This shard's server (and cache) for a static directory.
    Static(Rc<StaticFiles>),
}

/// One mount point on one shard.
pub(crate) struct Mount {
    /// The prefix as configured, e.g. `/`, `/api`, `/x/`.
    pub(crate) prefix: Rc<str>,
    /// What answers there.
    pub(crate) target: Target,
}

/// Result of a lookup.
pub(crate) enum Lookup<'a> {
    /// `mount` answers; it sees the path from byte `strip` on (keeping its
    /// `/`). If it does not answer, the lookup goes on from `next`.
    Found { mount: &'a Mount, strip: usize, next: usize },
    /// The path names a mount without its trailing slash; redirect (308) to it.
    AddSlash,
    /// Nothing is mounted there.
    NotFound,
}

/// The mounts of one shard, ordered longest prefix first, static before handler.
pub(crate) struct MountTable {
    mounts: Vec<Mount>,
}

impl MountTable {
    /// Builds the table; the engine has already refused duplicate prefixes of the same kind.
    pub(crate) fn new(mut mounts: Vec<Mount>) -> MountTable {
        mounts.sort_by_key(|m| (std::cmp::Reverse(m.prefix.len()), matches!(m.target, Target::Handler(_))));
        MountTable { mounts }
    }

    /// The mount prefixes in lookup order (a mount's index is its metrics slot).
    pub(crate) fn prefixes(&self) -> impl Iterator<Item = &str> {
        self.mounts.iter().map(|m| &*m.prefix)
    }

    /// Finds the mount for `path`, looking at the mounts from index `from` on
    /// (0 for a new request; `next` of a static mount that did not answer).
    pub(crate) fn lookup_from(&self, path: &str, from: usize) -> Lookup<'_> {
        let path_bytes = path.as_bytes();
        for (i, mount) in self.mounts.iter().enumerate().skip(from) {
            let next = i + 1;
            let prefix: &str = &mount.prefix;
            // Quick rejections, so a request walks past the mounts that
            // cannot be its own for a few instructions each: a prefix longer
            // than the path plus the slash of an `AddSlash` redirect, or one
            // whose first segment starts with another byte.
            if prefix.len() > path.len() + 1
                || (prefix.len() > 1 && path_bytes.len() > 1 && prefix.as_bytes()[1] != path_bytes[1])
            {
                continue;
            }
            if prefix == "/" {
                return Lookup::Found { mount, strip: 0, next };
            }
            if let Some(dir) = prefix.strip_suffix('/') {
                if path.starts_with(prefix) {
                    return Lookup::Found { mount, strip: dir.len(), next };
                }
                if path == dir {
                    return Lookup::AddSlash;
                }
            } else if let Some(rest) = path.strip_prefix(prefix) {
                if rest.is_empty() || rest.starts_with('/') {
                    return Lookup::Found { mount, strip: prefix.len(), next };
                }
            }
        }
        Lookup::NotFound
    }

    /// Finds the mount for `path`.
    #[cfg(test)]
    pub(crate) fn lookup(&self, path: &str) -> Lookup<'_> {
        self.lookup_from(path, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Request, Response};
    use crate::mount::Ctx;
    use futures_util::future::LocalBoxFuture;

    struct Nop;
    impl Handler for Nop {
        fn call<'a>(&'a self, _req: Request, _cx: &'a mut Ctx) -> LocalBoxFuture<'a, Response> {
            unreachable!("lookup tests never call handlers")
        }
    }

    fn table(prefixes: &[&str]) -> MountTable {
        MountTable::new(
            prefixes.iter().map(|p| Mount { prefix: Rc::from(*p), target: Target::Handler(Rc::new(Nop)) }).collect(),
        )
    }

    fn found(t: &MountTable, path: &str) -> Option<(String, usize)> {
        match t.lookup(path) {
            Lookup::Found { mount, strip, .. } => Some((mount.prefix.to_string(), strip)),
            _ => None,
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table(&["/", "/v1", "/v2", "/v1/admin"]);
        assert_eq!(found(&t, "/v1/users"), Some(("/v1".into(), 3)));
        assert_eq!(found(&t, "/v1"), Some(("/v1".into(), 3)));
        assert_eq!(found(&t, "/v1/admin/x"), Some(("/v1/admin".into(), 9)));
        assert_eq!(found(&t, "/v10"), Some(("/".into(), 0)), "a prefix matches whole segments only");
        assert_eq!(found(&t, "/other"), Some(("/".into(), 0)));
    }

    #[test]
    fn short_paths_and_shared_first_letters_find_the_same_mounts() {
        // The quick rejections (length, first letter of the first segment)
        // must never skip the mount that matches.
        let t = table(&["/", "/echo", "/e/", "/panic", "/ab", "/abc/"]);
        assert_eq!(found(&t, "/"), Some(("/".into(), 0)));
        assert_eq!(found(&t, "/e/x"), Some(("/e/".into(), 2)));
        assert_eq!(found(&t, "/e/"), Some(("/e/".into(), 2)));
        assert!(matches!(t.lookup("/e"), Lookup::AddSlash));
        assert!(matches!(t.lookup("/abc"), Lookup::AddSlash));
        assert_eq!(found(&t, "/ec"), Some(("/".into(), 0)));
        assert_eq!(found(&t, "/echo"), Some(("/echo".into(), 5)));
        assert_eq!(found(&t, "/echo/deep/er"), Some(("/echo".into(), 5)));
        assert_eq!(found(&t, "/ab"), Some(("/ab".into(), 3)));
        assert_eq!(found(&t, "/abc/d"), Some(("/abc/".into(), 4)));
        assert_eq!(found(&t, "/p"), Some(("/".into(), 0)));
        let rootless = table(&["/echo", "/e/"]);
        assert!(matches!(rootless.lookup("/"), Lookup::NotFound));
        assert!(matches!(rootless.lookup("/x"), Lookup::NotFound));
    }

    #[test]
    fn trailing_slash_mount_redirects_bare_name() {
        let t = table(&["/x/"]);
        assert!(matches!(t.lookup("/x"), Lookup::AddSlash));
        assert_eq!(found(&t, "/x/a"), Some(("/x/".into(), 2)));
        assert_eq!(found(&t, "/x/"), Some(("/x/".into(), 2)));
        assert!(matches!(t.lookup("/y"), Lookup::NotFound));
    }
}
