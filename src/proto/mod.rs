//! Protocol implementations. Codecs work on buffers; connection loops drive them.

pub(crate) mod h1;
