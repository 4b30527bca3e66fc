//! The `remotask` binary: parses the command line and maps errors to exit codes. Nothing else
//! happens here; every command lives in `remotask::cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    match remotask::cli::main() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(remotask::cli::EXIT_FAILURE)
        }
    }
}
