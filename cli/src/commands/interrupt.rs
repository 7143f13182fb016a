//! Ctrl-C during decoding (a flag the loop checks between steps; the signal handler lives in
//! `crate::interrupt`), and the exits that are not errors (130 after an interruption, 0 when
//! stdout's reader went away).

pub use crate::interrupt::{clear, requested, stop_softly};

/// An ending that is not an error: the process exits with `code` and prints nothing more.
#[derive(Debug)]
pub struct QuietExit(pub u8);

impl std::fmt::Display for QuietExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for QuietExit {}

/// Exit status after Ctrl-C, as shells report a SIGINT.
pub const INTERRUPTED: u8 = 130;

/// Whether `error` is stdout's reader having gone away (`| head`).
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
