//! The `latentlab` command line: parse, run, print the error chain, exit
//! 2 on bad input and 1 on failure.

use std::process::ExitCode;

use clap::Parser;
mod cli;

use cli::Cli;

fn main() -> ExitCode {
    // Die quietly when the reader of stdout goes away (`latentlab … | head`), as C tools
    // do, instead of panicking in `println!` (Rust ignores SIGPIPE by default).
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if cli::is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::from(cli::exit_code(&e))
        }
    }
}
