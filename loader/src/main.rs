//! `loader`: runs the eBPF dataplane of one host (a machine, or a network namespace standing
//! for one) and reads its state.
mod cli;
mod cmd;
mod daemon;
mod metrics;
mod state;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    use std::io::IsTerminal;
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("LOADER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if let cli::Command::Run { ebpf_log, .. } = &cli.command
        && let Some(directive) = ebpf_log.directive()
    {
        filter = filter.add_directive(directive.parse().expect("valid directive"));
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    match cmd::dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
