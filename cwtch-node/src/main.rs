//! `cwtch-node`: the command line. See `cwtch-node --help`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    cwtch_node::cli::run::main()
}
