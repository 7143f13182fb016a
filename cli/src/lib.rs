//! qwenmk: the command-line tool and its engines. `main.rs` only calls [`run`].

pub mod bench;
pub mod cli;
pub mod commands;
pub mod engine;
pub mod hub;
pub mod interrupt;
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
    interrupt::install();
    let outcome = match &cli.command {
        cli::Command::Info(args) => commands::info::run(args),
        cli::Command::Generate(args) => commands::generate::run(args),
        cli::Command::Chat(args) => commands::chat::run(args),
        cli::Command::Pack(args) => commands::pack::run(args),
        cli::Command::Bench(args) => commands::bench::run(args),
        cli::Command::Ls(args) => commands::cache::run_ls(args),
        cli::Command::Rm(args) => commands::cache::run_rm(args),
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
            let _ = writeln!(std::io::stderr(), "error: {}", one_sentence(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, "what failed: why", each cause said once: many
/// errors already quote their cause in their own message, and anyhow's `{:#}` would repeat it.
pub fn one_sentence(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::other("expected value at line 1 column 1");
        let error = anyhow::Error::new(io)
            .context("config.json is not valid (expected value at line 1 column 1)")
            .context("cannot pack");
        assert_eq!(
            super::one_sentence(&error),
            "cannot pack: config.json is not valid (expected value at line 1 column 1)"
        );
        let error = anyhow::anyhow!("root").context("outer");
        assert_eq!(super::one_sentence(&error), "outer: root");
    }
}
