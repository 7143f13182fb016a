//! Ctrl-C (SIGINT), SIGTERM and SIGHUP: remove this run's partial files, say so, and exit with
//! 128 + the signal's number, as a shell reports a process killed by it.
//!
//! The partial files are those listed in `qwenmk_weights::partial`'s registry: a pack or a
//! synthetic model being written, a download's `.incomplete`, a plot. A file renamed into place
//! at the very moment of the signal is either complete or removed, never half there (the
//! registry's lock orders the two). SIGKILL cannot be caught: the next run sweeps what it left.

use std::io::Write;

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
                if let Some(signal) = signals.forever().next() {
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
