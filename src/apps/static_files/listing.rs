//! A plain HTML listing of a directory (only when the mount asks for it).

use std::fmt::Write;
use std::path::Path;

use super::resolve::encode_segment;
use crate::http::escape_html as escape;

/// One entry of a listing.
struct Item {
    name: String,
    is_dir: bool,
    len: u64,
}

/// Reads `dir` and renders the listing page for the URL path `url_path`
/// (ending with `/`). With `confine`, entries that are symlinks leading
/// outside that root are left out (they would not be served either).
/// Blocking: run it on the blocking pool.
pub(crate) fn render(dir: &Path, url_path: &str, show_hidden: bool, confine: Option<&Path>) -> std::io::Result<String> {
    let mut items = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        if name.starts_with('.') && !show_hidden {
            continue;
        }
        let path = entry.path();
        if let Some(root) = confine {
            let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
            if is_link && !std::fs::canonicalize(&path).is_ok_and(|real| real.starts_with(root)) {
                continue;
            }
        }
        // Follow symlinks for the kind and size; a broken link is skipped.
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        items.push(Item { name, is_dir: meta.is_dir(), len: meta.len() });
    }
    items.sort_by(|a, b| b.is_dir.cmp(&a.is_dir).then_with(|| a.name.cmp(&b.name)));

    let title = escape(url_path);
    let mut page = String::with_capacity(512 + items.len() * 96);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n\
         <body><h1>Index of {title}</h1>\n<ul>\n"
    );
    if url_path != "/" {
        page.push_str("<li><a href=\"../\">../</a></li>\n");
    }
    for item in &items {
        let mut href = String::new();
        encode_segment(&item.name, &mut href);
        let slash = if item.is_dir { "/" } else { "" };
        let size = if item.is_dir { String::new() } else { format!(" ({} bytes)", item.len) };
        let _ = writeln!(page, "<li><a href=\"{}{slash}\">{}{slash}</a>{size}</li>", escape(&href), escape(&item.name));
    }
    page.push_str("</ul>\n</body></html>\n");
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_escaped_names_dirs_first_without_dot_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a<b>&\"c.txt"), b"12345").unwrap();
        std::fs::write(dir.path().join("with space.txt"), b"").unwrap();
        std::fs::write(dir.path().join(".secret"), b"").unwrap();
        std::fs::create_dir(dir.path().join("zsub")).unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("with space.txt"), dir.path().join("inner-link")).unwrap();
        let root = dir.path().canonicalize().unwrap();
        let page = render(&root, "/files/<x>/", false, Some(&root)).unwrap();
        assert!(!page.contains("escape"), "links out of the root are not listed: {page}");
        assert!(page.contains("inner-link"), "links inside the root are: {page}");
        assert!(page.contains("Index of /files/&lt;x&gt;/"), "{page}");
        assert!(page.contains("<a href=\"a%3Cb%3E&amp;%22c.txt\">a&lt;b&gt;&amp;&quot;c.txt</a> (5 bytes)"), "{page}");
        assert!(page.contains("<a href=\"with%20space.txt\">with space.txt</a>"), "{page}");
        assert!(page.contains("<a href=\"zsub/\">zsub/</a>"), "{page}");
        assert!(!page.contains("secret"));
        assert!(page.find("zsub").unwrap() < page.find("with").unwrap(), "directories first");
        let loose = render(dir.path(), "/", true, None).unwrap();
        assert!(loose.contains(".secret"));
        assert!(loose.contains("escape"));
    }
}
