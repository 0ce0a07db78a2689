//! The `skitai` binary: the engine driven by a TOML file and flags.

/// mimalloc: measurably cheaper than glibc malloc for the per-request
/// allocations of the `http` types (see bench/README.md).
#[global_allocator]
static GLOBAL: skitai::Mimalloc = skitai::Mimalloc;

fn main() {
    if let Err(e) = skitai::Engine::new().run() {
        eprintln!("skitai: error: {e}");
        std::process::exit(if e.kind() == skitai::ErrorKind::Config { 2 } else { 1 });
    }
}
