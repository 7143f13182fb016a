//! Ctrl-C (SIGINT), SIGTERM and SIGHUP: remove this run's partial files, say so, and exit with
//! 128 + the signal's number, as a shell reports a process killed by it.
//!
//! While tokens are being decoded ([`stop_softly`]), Ctrl-C instead asks the decoding loop to
//! stop between steps, so that `generate` prints the stats so far and `chat` returns to its
//! prompt; SIGTERM and SIGHUP still end the process.
//!
//! The partial files are those listed in `qwenmk_weights::partial`'s registry: a pack or a
//! synthetic model being written, a download's `.incomplete`, a plot. A file renamed into place
//! at the very moment of the signal is either complete or removed, never half there (the
//! registry's lock orders the two). SIGKILL cannot be caught: the next run sweeps what it left.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Ctrl-C stops the decoding loop instead of the process.
static SOFT: AtomicBool = AtomicBool::new(false);
/// Ctrl-C was pressed while [`SOFT`] was on.
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Makes Ctrl-C stop the decoding loop (between steps) instead of the process, until the guard
/// is dropped.
pub fn stop_softly() -> SoftGuard {
    SOFT.store(true, Ordering::SeqCst);
    SoftGuard
}

/// Ends [`stop_softly`] when dropped.
pub struct SoftGuard;

impl Drop for SoftGuard {
    fn drop(&mut self) {
        SOFT.store(false, Ordering::SeqCst);
    }
}

/// Whether Ctrl-C was pressed during decoding since the last [`clear`].
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}

/// Starts the thread that waits for the signals. Failing to install it is not worth failing
/// the command over: the run works as before, only without the cleanup.
pub fn install() {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("qwenmk-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if signal == SIGINT && SOFT.load(Ordering::SeqCst) {
                        REQUESTED.store(true, Ordering::SeqCst);
                        continue;
                    }
                    let removed = qwenmk_weights::partial::remove_all_for_exit();
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(err);
                    let _ = match removed.len() {
                        0 => writeln!(err, "interrupted"),
                        n => writeln!(
                            err,
                            "interrupted: removed {n} partial file{} ({})",
                            if n == 1 { "" } else { "s" },
                            removed
                                .iter()
                                .map(|p| p.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    std::process::exit(128 + signal);
                }
            });
        drop(spawned);
    }
}
