//! `broker`: the program is [`broker::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    broker::cli::main(std::env::args_os())
}
