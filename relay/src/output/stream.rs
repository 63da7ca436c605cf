//! The `stdout` and `file` outputs: the exact bytes that would go on the wire, written through
//! a buffer and flushed at the end of every batch.
//!
//! The file is opened in append mode on first use and reopened after an error (so a rotated or
//! removed file is recreated). Neither output fsyncs: "delivered" means flushed to the OS.

use std::path::PathBuf;

use tokio::io::{AsyncWriteExt, BufWriter};

use super::OutputError;

const BUFFER: usize = 256 * 1024;

/// A local byte stream.
pub(crate) enum StreamSink {
    Stdout(BufWriter<tokio::io::Stdout>),
    File {
        path: PathBuf,
        file: Option<BufWriter<tokio::fs::File>>,
    },
}

impl StreamSink {
    pub(crate) fn stdout() -> Self {
        StreamSink::Stdout(BufWriter::with_capacity(BUFFER, tokio::io::stdout()))
    }

    pub(crate) fn file(path: PathBuf) -> Self {
        StreamSink::File { path, file: None }
    }

    fn name(&self) -> String {
        match self {
            StreamSink::Stdout(_) => "stdout".into(),
            StreamSink::File { path, .. } => path.display().to_string(),
        }
    }

    async fn writer(
        &mut self,
    ) -> Result<&mut (dyn tokio::io::AsyncWrite + Unpin + Send), OutputError> {
        match self {
            StreamSink::Stdout(w) => Ok(w),
            StreamSink::File { path, file } => {
                if file.is_none() {
                    let f = tokio::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&*path)
                        .await
                        .map_err(|source| OutputError::Open {
                            path: path.clone(),
                            source,
                        })?;
                    *file = Some(BufWriter::with_capacity(BUFFER, f));
                }
                match file {
                    Some(f) => Ok(f),
                    None => unreachable!("opened above"),
                }
            }
        }
    }

    pub(crate) async fn write_all(&mut self, data: &[u8]) -> Result<(), OutputError> {
        let dest = self.name();
        self.writer()
            .await?
            .write_all(data)
            .await
            .map_err(|source| OutputError::Write { dest, source })
    }

    pub(crate) async fn flush(&mut self) -> Result<(), OutputError> {
        let dest = self.name();
        self.writer()
            .await?
            .flush()
            .await
            .map_err(|source| OutputError::Write { dest, source })
    }
}
