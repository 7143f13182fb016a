//! Ctrl-C: a flag that generation loops check between steps, and the exits that are not
//! errors (130 after an interruption, 0 when stdout's reader went away).

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Routes Ctrl-C to the flag (once per process; later calls do nothing).
pub fn install() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Without the handler Ctrl-C still ends the process, just without the stats.
        let _ = ctrlc::set_handler(|| REQUESTED.store(true, Ordering::SeqCst));
    });
}

/// Whether Ctrl-C was pressed since the last [`clear`].
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}

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
