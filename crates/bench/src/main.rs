//! `sandpool-bench`: sandpool's figures measured beside their peers in the same run, reported as
//! medians, p99 and ratios (these machines are shared and noisy; absolute times mean little).

mod peers;
mod report;
mod sandbox;
mod stats;

use clap::{Parser, Subcommand};
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
    #[command(name = "__sandbox-init", hide = true)]
    SandboxInit,
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("__sandbox-init") {
        sandpool_sandbox::init_main();
    }
    let cli = Cli::parse();
    peers::ensure_installed()?;
    peers::isolate_mounts_for_crun()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = match cli.command {
        Scenario::Sandbox { density } => runtime.block_on(sandbox::run(cli.iterations, density))?,
        Scenario::SandboxInit => unreachable!("handled before argument parsing"),
    };
    report.print();
    report.write_json(&cli.json)?;
    eprintln!("results written to {}", cli.json.display());
    Ok(())
}
