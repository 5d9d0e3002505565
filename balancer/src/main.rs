//! `balancer`: the program is [`balancer::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    balancer::cli::main(std::env::args_os())
}
