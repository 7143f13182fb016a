//! Developer tasks for qwenmk: `cargo xtask <command> [options]`.
//!
//! This file only dispatches; each command lives in its own module and exposes
//! `run(args) -> anyhow::Result<()>` plus a one-line summary for the help text.

mod calibrate;
mod fixtures;
mod gpu_check;
mod in_flight;
mod peers;
mod ptx;
mod vgpu;

use anyhow::bail;

/// A subcommand: its name, a one-line summary, and its entry point (given the arguments
/// after the command name).
struct Command {
    name: &'static str,
    summary: &'static str,
    run: fn(&[String]) -> anyhow::Result<()>,
}

const COMMANDS: &[Command] = &[
    Command {
        name: "calibrate",
        summary: calibrate::SUMMARY,
        run: calibrate::run,
    },
    Command {
        name: "fixtures",
        summary: fixtures::SUMMARY,
        run: fixtures::run,
    },
    Command {
        name: "gpu-check",
        summary: gpu_check::SUMMARY,
        run: gpu_check::run,
    },
    Command {
        name: "peers",
        summary: peers::SUMMARY,
        run: peers::run,
    },
    Command {
        name: "ptx",
        summary: ptx::SUMMARY,
        run: ptx::run,
    },
    Command {
        name: "vgpu",
        summary: vgpu::SUMMARY,
        run: vgpu::run,
    },
];

fn print_help() {
    println!(
        "usage: cargo xtask <command> [options]   (cargo xtask <command> --help for its options)\n"
    );
    println!("commands:");
    for c in COMMANDS {
        println!("  {:<10} {}", c.name, c.summary);
    }
}

fn main() -> std::process::ExitCode {
    // Plain `error: ...` (with its causes), not anyhow's backtrace dump.
    match dispatch() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        print_help();
        return Ok(());
    };
    if matches!(name.as_str(), "-h" | "--help" | "help") {
        print_help();
        return Ok(());
    }
    match COMMANDS.iter().find(|c| c.name == name) {
        Some(c) => (c.run)(&args[1..]),
        None => {
            print_help();
            bail!("unknown command `{name}`")
        }
    }
}
