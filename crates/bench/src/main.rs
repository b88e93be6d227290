//! `sandpool-bench`: sandpool's figures measured beside their peers in the same run, reported as
//! medians, p99 and ratios (these machines are shared and noisy; absolute times mean little).
//!
//! Two families: the sandbox runtime alone (`sandbox`, issue 3) and the full stack over HTTP
//! against a real server child (`all` and one subcommand per scenario, issue 7).

mod fullstack;
mod peers;
mod report;
mod sandbox;
mod stack;
mod stats;

use clap::{Parser, Subcommand};
use fullstack::{Scenario as Stack, Sizes};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Benchmarks sandpool beside fork+exec, bwrap and crun")]
struct Cli {
    /// Where to write the JSON results.
    #[arg(long, global = true, default_value = "bench-results.json")]
    json: PathBuf,
    /// Repetitions of each latency figure.
    #[arg(long, global = true, default_value_t = 200)]
    iterations: usize,
    /// Live sessions of the full-stack density figure.
    #[arg(long, global = true, default_value_t = 1000)]
    sessions: usize,
    /// Size in MiB of the file the full-stack files figure uploads and downloads.
    #[arg(long, global = true, default_value_t = 100)]
    file_mib: u64,
    #[command(subcommand)]
    command: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// The sandbox runtime alone: cold start, warm exec, memory per idle sandbox.
    Sandbox {
        /// How many idle sandboxes the density figure keeps alive at once.
        #[arg(long, default_value_t = 1000)]
        density: usize,
    },
    /// Every full-stack figure over HTTP against one server.
    All,
    /// Warm exec: `POST executions` of `echo hi` in an existing session.
    HttpExec,
    /// First command of a new session, with a warm pool and with an empty one.
    NewSession,
    /// Executions per second with 1, 8 and 64 concurrent clients over 64 sessions.
    Throughput,
    /// Host memory per session and exec latency with `--sessions` sessions alive.
    Density,
    /// Run Command: submit → result for `echo` with a 10 KiB context.
    Runcommand,
    /// Upload and download of a `--file-mib` file.
    Files,
    #[command(name = "__serve", hide = true)]
    Serve(stack::ServeArgs),
    #[command(name = "__sandbox-init", hide = true)]
    SandboxInit,
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("__sandbox-init") {
        sandpool_sandbox::init_main();
    }
    let cli = Cli::parse();
    let stack = match cli.command {
        Scenario::Serve(args) => return stack::serve_main(args),
        Scenario::SandboxInit => unreachable!("handled before argument parsing"),
        Scenario::Sandbox { .. } => None,
        Scenario::All => Some(Stack::ALL.to_vec()),
        Scenario::HttpExec => Some(vec![Stack::HttpExec]),
        Scenario::NewSession => Some(vec![Stack::NewSession]),
        Scenario::Throughput => Some(vec![Stack::Throughput]),
        Scenario::Density => Some(vec![Stack::Density]),
        Scenario::Runcommand => Some(vec![Stack::Runcommand]),
        Scenario::Files => Some(vec![Stack::Files]),
    };
    peers::ensure_installed()?;
    // Before any thread: the server child inherits this mount namespace, so sandpool and crun
    // are measured in the same place.
    peers::isolate_mounts_for_crun()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = match (stack, cli.command) {
        (Some(scenarios), _) => runtime.block_on(fullstack::run(
            &scenarios,
            Sizes {
                iterations: cli.iterations,
                sessions: cli.sessions,
                file_mib: cli.file_mib,
            },
        ))?,
        (None, Scenario::Sandbox { density }) => {
            runtime.block_on(sandbox::run(cli.iterations, density))?
        }
        (None, _) => unreachable!("every other command is a full-stack one"),
    };
    report.print();
    report.write_json(&cli.json)?;
    eprintln!("results written to {}", cli.json.display());
    Ok(())
}
