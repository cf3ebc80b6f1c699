//! `sound-creator`: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = sound_creator::Cli::parse();
    sound_creator::telemetry::init(cli.log_json);
    match sound_creator::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One readable line (with its causes) instead of a backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
