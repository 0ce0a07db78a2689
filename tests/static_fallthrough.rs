//! A static directory and a handler at the same prefix (`examples/static_site`):
//! files win, a missing file falls through to the handler, and a handler at a
//! longer prefix still wins over the directory.

mod support;

use support::*;

both_drivers! {
    fn files_first_then_the_handler(io) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), b"<h1>site</h1>").unwrap();
        std::fs::write(dir.path().join("a.txt"), b"file a").unwrap();
        std::fs::create_dir(dir.path().join("api")).unwrap();
        std::fs::write(dir.path().join("api").join("time"), b"shadowed by the handler").unwrap();
        let mount = format!("/={}", dir.path().display());
        let server = ServerBuilder::new(example_bin("static_site")).io(io).shards(1).arg("--mount").arg(&mount).start();

        let mut conn = server.connect();
        conn.send(get("/a.txt"));
        let res = conn.read_response();
        assert_eq!(res.status, 200);
        assert_eq!(res.body, b"file a");

        conn.send(get("/"));
        let res = conn.read_response();
        assert_eq!(res.status, 200);
        assert_eq!(res.body, b"<h1>site</h1>");

        // No such file: the handler mounted at the same prefix answers.
        conn.send(get("/no/such/page?x=1"));
        let res = conn.read_response();
        assert_eq!(res.status, 200);
        assert_eq!(res.body_str(), "fallback handler: no file at /no/such/page\n");

        // A path the directory refuses (traversal) is not served from disk;
        // it reaches the handler, which never sees a file.
        conn.send(get("/../etc/passwd"));
        let res = conn.read_response();
        assert_eq!(res.body_str(), "fallback handler: no file at /../etc/passwd\n");

        // The longer prefix (/api/time) is a handler and wins over the file under /,
        // also when a letter of it is percent-encoded (`%61` is `a`).
        for path in ["/api/time", "/%61pi/time", "/api/%74ime"] {
            conn.send(get(path));
            let res = conn.read_response();
            assert_eq!(res.status, 200, "{path}");
            assert!(res.body_str().starts_with("{\"unix\": "), "{path}: {}", res.body_str());
        }

        // Only GET and HEAD read the directory; a POST to it reaches the handler.
        conn.send(post("/", b"data"));
        let res = conn.read_response();
        assert_eq!(res.status, 200);
        assert_eq!(res.body_str(), "fallback handler: no file at /\n");
    }
}
