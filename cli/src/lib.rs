//! qwenmk: the command-line tool and its engines. `main.rs` only calls [`run`].

pub mod engine;
pub mod prompt;
pub mod ptx;
pub mod ptxas;
