//! qwenmk: the command-line tool and its engines. `main.rs` only calls [`run`].

pub mod bench;
pub mod cli;
pub mod commands;
pub mod engine;
pub mod hub;
pub mod prompt;
pub mod ptx;
pub mod ptxas;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// Parses the command line, runs the command and turns an error into one sentence on stderr
/// and a non-zero exit status.
pub fn run() -> ExitCode {
    let cli = cli::Cli::parse();
    let outcome = match &cli.command {
        cli::Command::Info(args) => commands::info::run(args),
        cli::Command::Generate(args) => commands::generate::run(args),
        cli::Command::Chat(args) => commands::chat::run(args),
        cli::Command::Pack(args) => commands::pack::run(args),
        cli::Command::Bench(args) => commands::bench::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<commands::interrupt::QuietExit>() => {
            let code = error
                .downcast_ref::<commands::interrupt::QuietExit>()
                .map_or(1, |e| e.0);
            ExitCode::from(code)
        }
        // stdout's reader went away (`| head`): nothing is wrong, and nobody reads on.
        Err(error) if commands::interrupt::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the whole context chain on one line: "what failed: why".
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
