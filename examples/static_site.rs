//! A static site with a program beside it: files first, handlers for the rest.
//!
//! Mounts the directory given with `--mount /=DIR` (or `./public`, if it
//! exists and no `/` directory was given on the command line) and, at the
//! same prefix, a handler that answers whatever has no file: a static miss
//! falls through to it. `/api/time` is a handler of its own.
//!
//! Run: `cargo run --release --example static_site -- --mount /=./public`
//! then `curl localhost:5000/` (index.html), `curl localhost:5000/no-such-page`
//! (the fallback handler), `curl localhost:5000/api/time`.

use skitai::prelude::*;

#[global_allocator]
static GLOBAL: skitai::Mimalloc = skitai::Mimalloc;

fn main() {
    let mut engine = Engine::new()
        .name("static-site")
        .set_max_age("/assets", 3600)
        .mount(
            "/",
            handler_fn(|_req: Request, cx: &mut Ctx| {
                let path = cx.full_path().to_owned();
                async move { Response::text(format!("fallback handler: no file at {path}\n")) }
            }),
        )
        .mount(
            "/api/time",
            handler_fn(|_req: Request, _cx: &mut Ctx| async {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                Response::json_bytes(format!("{{\"unix\": {}}}", now.as_secs()))
            }),
        );
    let mounts_root_on_cli = std::env::args().any(|a| a.starts_with("/=") || a.starts_with("--mount=/="));
    if !mounts_root_on_cli && std::path::Path::new("public").is_dir() {
        engine = engine.mount("/", StaticDir::new("public"));
    }
    if let Err(e) = engine.run() {
        eprintln!("static_site: error: {e}");
        std::process::exit(if e.kind() == skitai::ErrorKind::Config { 2 } else { 1 });
    }
}
