//! The `sandpool` command: `sandpool serve` (the server) and the client commands that mirror
//! the `az` commands of the tutorial. It owns argument parsing, logging setup, output
//! formatting and exit codes; the server, client and template logic live in their crates.
//!
//! The sandbox runtime re-executes this binary as `sandpool __sandbox-init`; that path must
//! run before any runtime, allocator-heavy parsing or logging is set up.

mod args;
mod auth;
mod commands;
mod output;
mod runcommand;
mod sessions;
mod units;

use std::process::ExitCode;

use clap::Parser;
use sandpool_client::{Client, ClientError};

use args::{Cli, Command, Global, LogFormat, ServeArgs};

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "__sandbox-init")
    {
        sandpool_sandbox::init_main();
    }
    let Cli { global, command } = Cli::parse();
    match command {
        Command::Serve(serve) => run_serve(&global, &serve),
        Command::Doctor => doctor(&global),
        Command::Sessions(sessions::SessionsCommand::Exec(a)) => run_exec(&global, a),
        other => run_client(&global, other),
    }
}

/// Exit codes: 0 ok, 1 error, 2 usage (clap), 3 the resource does not exist (as `az` does).
fn fail(err: &anyhow::Error) -> ExitCode {
    if let Some(ce) = err.downcast_ref::<ClientError>() {
        match ce.api() {
            Some(api) => {
                eprintln!("ERROR: ({}) {}", api.code, api.message);
                if let Some(target) = &api.target {
                    eprintln!("Target: {target}");
                }
                for d in &api.details {
                    eprintln!("  ({}) {}", d.code, d.message);
                }
            }
            None => eprintln!("ERROR: {ce}"),
        }
        return if ce.is_not_found() {
            ExitCode::from(3)
        } else {
            ExitCode::FAILURE
        };
    }
    eprintln!("ERROR: {err:#}");
    ExitCode::FAILURE
}

fn print(g: &Global, value: &serde_json::Value) -> anyhow::Result<()> {
    let value = match &g.query {
        Some(q) => output::query(value, q)?,
        None => value.clone(),
    };
    if let Some(text) = output::render(&value, g.output) {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`| head`) is not an error worth reporting.
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }
    Ok(())
}

/// Runs `f` with a client of the global options' endpoint and credentials.
fn with_client<T, F>(g: &Global, f: impl FnOnce(Client) -> F) -> anyhow::Result<T>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    rt.block_on(async {
        let mut client = Client::new(&g.endpoint)?.with_subscription(g.subscription.clone());
        if let Some(pem) = trusted_certificates(g)? {
            client = client.with_ca_certificates(&pem)?;
        }
        if let Some(source) = auth::token_source(
            g.access_token.as_deref(),
            &g.data_dir,
            &g.endpoint,
            client.http(),
        ) {
            client = client.with_token(source);
        }
        f(client).await
    })
}

/// The PEM of `--ca-cert`, else the local server's self-signed certificate when the endpoint is
/// https and the data dir holds one (readable only to whoever may read the data dir).
fn trusted_certificates(g: &Global) -> anyhow::Result<Option<Vec<u8>>> {
    use anyhow::Context as _;
    if let Some(path) = &g.ca_cert {
        let pem =
            std::fs::read(path).with_context(|| format!("reading --ca-cert {}", path.display()))?;
        if let Err(e) = sandpool_client::parse_pem_bundle(&pem) {
            anyhow::bail!("--ca-cert {}: {e}", path.display());
        }
        return Ok(Some(pem));
    }
    if !g.endpoint.trim().starts_with("https://") {
        return Ok(None);
    }
    let local = g.data_dir.join(sandpool_server::SELF_SIGNED_CERT);
    Ok(std::fs::read(local).ok())
}

/// `sandpool exec` exits with the command's status instead of printing a result.
fn run_exec(g: &Global, args: sessions::ExecArgs) -> ExitCode {
    match with_client(
        g,
        |client| async move { sessions::exec(&client, args).await },
    ) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail(&e),
    }
}

fn run_client(g: &Global, command: Command) -> ExitCode {
    let result = with_client(g, |client| async move {
        match command {
            Command::Token(t) => auth::token_command(g, &client, t).await.map(Some),
            other => commands::run(&client, other).await,
        }
    });
    match result.and_then(|v| match v {
        Some(v) => print(g, &v),
        None => Ok(()),
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// netlink-packet-route warns on every link dump of a kernel newer than itself (an
/// `IFLA_INET6_CONF` longer than it knows): harmless, and printed on every start. Kept at error
/// unless `RUST_LOG` names that crate itself.
const QUIET_CRATES: &str = "netlink_packet_route=error";

fn log_filter(rust_log: Option<&str>) -> String {
    match rust_log.map(str::trim).filter(|f| !f.is_empty()) {
        Some(f) if f.contains("netlink_packet_route") => f.to_owned(),
        Some(f) => format!("{f},{QUIET_CRATES}"),
        None => format!("info,{QUIET_CRATES}"),
    }
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let directives = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("WARNING: RUST_LOG is not a valid filter ({e}); logging at info");
        EnvFilter::new(format!("info,{QUIET_CRATES}"))
    });
    // Colours only for a person at a terminal: a file, journald or a collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

fn serve_config(g: &Global, a: &ServeArgs) -> sandpool_server::ServeConfig {
    use sandpool_server::{ServeConfig, TlsMode};
    let tls = match (&a.tls_cert, &a.tls_key, a.tls_self_signed) {
        (Some(cert), Some(key), _) => TlsMode::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        (_, _, true) => TlsMode::SelfSigned,
        _ => TlsMode::None,
    };
    ServeConfig {
        listen: a.listen,
        data_dir: g.data_dir.clone(),
        database_url: a.database_url.clone(),
        public_url: a.public_url.clone(),
        tls,
        create_defaults: !a.no_defaults,
        max_upload_size: a.max_upload_size,
        command_retention: a.command_retention,
        command_concurrency: usize::from(a.command_concurrency),
        signing_key_max_age: (!a.signing_key_max_age.is_zero()).then_some(a.signing_key_max_age),
        sandbox: sandpool_server::sandboxes::SandboxSettings {
            cgroup_parent: a.cgroup_parent.clone(),
            uid_base: a.uid_base,
            uid_slots: a.uid_slots,
            egress: (!a.no_egress).then(|| {
                sandpool_server::sandboxes::egress_config(&a.egress_bridge, a.egress_subnet)
            }),
            ..Default::default()
        },
        limits: limits_of(&a.limits),
        ..ServeConfig::default()
    }
}

fn limits_of(a: &crate::args::LimitArgs) -> sandpool_server::limits::Limits {
    let host = sandpool_server::limits::Limits::default();
    sandpool_server::limits::Limits {
        session_cpu_millicores: a.session_cpus,
        max_session_cpu_millicores: a
            .max_session_cpus
            .unwrap_or(host.max_session_cpu_millicores),
        host_cpu_ceiling_millicores: a.host_cpu_ceiling,
        max_session_memory_bytes: a
            .max_session_memory
            .unwrap_or(host.max_session_memory_bytes),
        max_session_pids: a.max_session_pids.unwrap_or(host.max_session_pids),
        max_pool_sessions: a.max_pool_sessions,
        max_ready_sessions: a.max_ready_sessions,
        max_session_executions: a.max_session_executions,
        execution_history: a.execution_history,
        execution_retention: a.execution_retention,
        max_run_command_body: usize::try_from(a.max_run_command_body).unwrap_or(usize::MAX),
        max_queued_commands: a.max_queued_commands as usize,
        http: sandpool_server::limits::HttpTimeouts {
            header_read: a.http_header_timeout,
            body_idle: a.http_body_timeout,
            request: a.http_request_timeout,
        },
    }
}

fn run_serve(g: &Global, a: &ServeArgs) -> ExitCode {
    init_logging(a.log_format);
    let config = serve_config(g, a);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match rt.block_on(sandpool_server::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "sandpool serve failed");
            fail(&e)
        }
    }
}

fn doctor(g: &Global) -> ExitCode {
    let report = sandpool_sandbox::host_report();
    let checks: Vec<serde_json::Value> = report
        .checks
        .iter()
        .map(|c| serde_json::json!({"name": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix}))
        .collect();
    let value = serde_json::json!({"ok": report.ok(), "checks": checks});
    if let Err(e) = print(g, &value) {
        return fail(&e);
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> sandpool_server::ServeConfig {
        let cli = Cli::try_parse_from([&["sandpool", "serve"], args].concat()).expect("parse");
        match cli.command {
            Command::Serve(a) => serve_config(&cli.global, &a),
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn limit_flags_reach_the_server_config() {
        let c = serve(&[
            "--session-cpus",
            "0.5",
            "--max-session-cpus",
            "1.5",
            "--host-cpu-ceiling",
            "1.75",
            "--max-session-memory",
            "2GiB",
            "--max-session-pids",
            "300",
            "--max-pool-sessions",
            "40",
            "--max-ready-sessions",
            "4",
            "--max-session-executions",
            "3",
            "--execution-history",
            "10",
            "--execution-retention",
            "1h",
            "--max-run-command-body",
            "1MiB",
            "--max-queued-commands",
            "5",
            "--http-header-timeout",
            "5s",
            "--http-body-timeout",
            "6s",
            "--http-request-timeout",
            "2h",
        ]);
        let l = &c.limits;
        assert_eq!(
            (
                l.session_cpu_millicores,
                l.max_session_cpu_millicores,
                l.host_cpu_ceiling_millicores
            ),
            (500, 1500, Some(1750))
        );
        assert_eq!(
            (l.max_session_memory_bytes, l.max_session_pids),
            (2 << 30, 300)
        );
        assert_eq!(
            (
                l.max_pool_sessions,
                l.max_ready_sessions,
                l.max_session_executions,
                l.execution_history
            ),
            (40, 4, 3, 10)
        );
        assert_eq!(l.execution_retention, std::time::Duration::from_secs(3600));
        assert_eq!(
            (l.max_run_command_body, l.max_queued_commands),
            (1 << 20, 5)
        );
        assert_eq!(
            l.http,
            sandpool_server::limits::HttpTimeouts {
                header_read: std::time::Duration::from_secs(5),
                body_idle: std::time::Duration::from_secs(6),
                request: std::time::Duration::from_secs(7200),
            }
        );
    }

    #[test]
    fn limit_defaults_are_the_servers() {
        let c = serve(&[]);
        let d = sandpool_server::limits::Limits::default();
        assert_eq!(c.limits, d);
        assert_eq!(
            c.limits.session_cpu_millicores,
            1000.min(d.max_session_cpu_millicores)
        );
    }
}
