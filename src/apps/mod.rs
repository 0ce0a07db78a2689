//! Built-in applications mounted beside handlers: static files (proxying comes later).

pub(crate) mod static_files;

pub use static_files::StaticDir;
