//! `parquet`: each row of a parquet object as a compact JSON object (placeholder until the
//! parquet reader lands: every parquet object is refused with a typed error).

use std::io::BufRead;

use super::emit::Emitter;
use super::{ProcessError, ProcessorSpec};

/// The first (and last) four bytes of a parquet file.
pub(crate) const MAGIC: &[u8] = b"PAR1";

/// Refuses the object (parquet reading is not built yet).
pub(crate) fn process(
    _input: &mut dyn BufRead,
    _spec: &ProcessorSpec,
    _out: &mut Emitter<'_>,
) -> Result<(), ProcessError> {
    Err(ProcessError::Parquet {
        size: 0,
        message: "parquet support is not built yet".into(),
    })
}
