//! The mount table: longest prefix wins.

use std::rc::Rc;

use super::Handler;

/// One mounted handler.
pub(crate) struct Mount {
    /// The prefix as configured, e.g. `/`, `/api`, `/x/`.
    pub(crate) prefix: Rc<str>,
    /// The handler built for this shard.
    pub(crate) handler: Rc<dyn Handler>,
}

/// Result of a lookup.
pub(crate) enum Lookup<'a> {
    /// `mount` answers; the handler sees the path from byte `strip` on (keeping its `/`).
    Found { mount: &'a Mount, strip: usize },
    /// The path names a mount without its trailing slash; redirect (308) to it.
    AddSlash,
    /// Nothing is mounted there.
    NotFound,
}

/// The mounts of one shard, ordered longest prefix first.
pub(crate) struct MountTable {
    mounts: Vec<Mount>,
}

impl MountTable {
    /// Builds the table; later duplicates of a prefix are ignored by the caller's validation.
    pub(crate) fn new(mut mounts: Vec<Mount>) -> MountTable {
        mounts.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
        MountTable { mounts }
    }

    /// Finds the mount for `path`.
    pub(crate) fn lookup(&self, path: &str) -> Lookup<'_> {
        for mount in &self.mounts {
            let prefix: &str = &mount.prefix;
            if prefix == "/" {
                return Lookup::Found { mount, strip: 0 };
            }
            if let Some(dir) = prefix.strip_suffix('/') {
                if path.starts_with(prefix) {
                    return Lookup::Found { mount, strip: dir.len() };
                }
                if path == dir {
                    return Lookup::AddSlash;
                }
            } else if let Some(rest) = path.strip_prefix(prefix) {
                if rest.is_empty() || rest.starts_with('/') {
                    return Lookup::Found { mount, strip: prefix.len() };
                }
            }
        }
        Lookup::NotFound
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
        MountTable::new(prefixes.iter().map(|p| Mount { prefix: Rc::from(*p), handler: Rc::new(Nop) }).collect())
    }

    fn found(t: &MountTable, path: &str) -> Option<(String, usize)> {
        match t.lookup(path) {
            Lookup::Found { mount, strip } => Some((mount.prefix.to_string(), strip)),
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
    fn trailing_slash_mount_redirects_bare_name() {
        let t = table(&["/x/"]);
        assert!(matches!(t.lookup("/x"), Lookup::AddSlash));
        assert_eq!(found(&t, "/x/a"), Some(("/x/".into(), 2)));
        assert_eq!(found(&t, "/x/"), Some(("/x/".into(), 2)));
        assert!(matches!(t.lookup("/y"), Lookup::NotFound));
    }
}
