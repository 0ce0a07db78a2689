//! The `skitai` binary: the engine driven by a TOML file and flags.

fn main() {
    if let Err(e) = skitai::Engine::new().run() {
        eprintln!("skitai: error: {e}");
        std::process::exit(if e.kind() == skitai::ErrorKind::Config { 2 } else { 1 });
    }
}
