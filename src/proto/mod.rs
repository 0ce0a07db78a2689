//! Protocol implementations. Codecs work on buffers; connection loops drive them.

mod deadline;
pub(crate) mod h1;

pub(crate) use deadline::Deadline;
