//! The `cordon` binary: parse the command line, dispatch. The only place `anyhow` lives.

mod cli;

use std::process::ExitCode;

use clap::Parser;

// The embedded store allocates and frees a great deal per write; mimalloc makes that markedly
// cheaper than the system allocator (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // Rust ignores SIGPIPE, so `cordon alerts list | head` would fail on its next print; a one-shot
    // command should end quietly as other Unix tools do. The server keeps ignoring it: its socket
    // writes must fail with an error, not end the process.
    #[cfg(unix)]
    if !args.is_serve() {
        // SAFETY: setting a signal disposition before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // The server's shutdown is bounded already (`server.shutdown_grace`); a task or thread still
    // stuck after it (a store that stopped answering) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}
