use std::process::ExitCode;

fn main() -> ExitCode {
    qwenmk::run()
}
