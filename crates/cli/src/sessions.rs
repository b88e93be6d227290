//! The session commands: `sandpool exec` (a command in a session, its output streamed to the
//! terminal and its exit status passed on), `sandpool files upload|list|download|delete` and
//! `sandpool session list|show|delete`, all over a pool's management endpoint.
//!
//! Every command defaults to the `default` pool of the `default` group and to one identifier per
//! user, so that consecutive commands of one person land in the same session without any flag.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Subcommand};
use sandpool_client::{Client, Execution, OutputStream, SessionRef};
use serde_json::Value;

/// Exit status of a command stopped by its timeout (as `timeout(1)` does).
const TIMED_OUT: u8 = 124;

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Run a command in a session, its output streamed to the terminal as it is produced.
    ///
    /// `sandpool` exits with the command's status: 128+N when signal N killed it, 124 when it
    /// ran past its timeout (a note on stderr says so).
    Exec(ExecArgs),
    /// Files of a session (under /mnt/data), streamed both ways.
    #[command(subcommand)]
    Files(FilesCmd),
    /// Sessions of a pool.
    #[command(subcommand)]
    Session(SessionCmd),
}

/// `[-g RG] [--pool P]`.
#[derive(Debug, Args)]
pub struct PoolArgs {
    /// Resource group of the pool.
    #[arg(short = 'g', long = "resource-group", default_value = "default")]
    pub resource_group: String,
    /// Session pool name.
    #[arg(
        long = "pool",
        short = 'n',
        visible_alias = "name",
        default_value = "default"
    )]
    pub pool: String,
}

/// `[-g RG] [--pool P] [--identifier ID]`.
#[derive(Debug, Args)]
pub struct SessionArgs {
    #[command(flatten)]
    pub pool: PoolArgs,
    /// Session identifier (4–128 characters). Default: $SANDPOOL_SESSION, else
    /// `cli-<user name>`, so that your commands share one session.
    #[arg(short = 'i', long, env = "SANDPOOL_SESSION")]
    pub identifier: Option<String>,
}

impl SessionArgs {
    fn session(self) -> SessionRef {
        SessionRef {
            resource_group: self.pool.resource_group,
            pool: self.pool.pool,
            identifier: self.identifier.unwrap_or_else(default_identifier),
        }
    }
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// Seconds before the command and its children are killed (server default: 60).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: Option<u64>,
    /// `NAME=VALUE` set in the command's environment (repeatable).
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// The command. One argument is a shell command line (`'ls | wc -l'`); several are a
    /// program and its arguments, passed exactly as given.
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum FilesCmd {
    /// Upload a local file; prints the remote file's metadata.
    Upload {
        #[command(flatten)]
        session: SessionArgs,
        /// The local file.
        local: PathBuf,
        /// Remote path, relative to /mnt/data or absolute below it; ending in `/` names a
        /// directory. Default: the local file's name in /mnt/data.
        #[arg(long)]
        path: Option<String>,
    },
    /// List the files of /mnt/data or of a directory below it.
    List {
        #[command(flatten)]
        session: SessionArgs,
        /// Directory, relative to /mnt/data or absolute below it.
        #[arg(long)]
        path: Option<String>,
        /// Include subdirectories' files.
        #[arg(long)]
        recursive: bool,
    },
    /// Download a remote file.
    Download {
        #[command(flatten)]
        session: SessionArgs,
        /// Remote file, relative to /mnt/data or absolute below it.
        remote: String,
        /// Local file or directory, or `-` for stdout. Default: the remote file's name in the
        /// current directory.
        local: Option<PathBuf>,
    },
    /// Delete a remote file.
    Delete {
        #[command(flatten)]
        session: SessionArgs,
        /// Remote file, relative to /mnt/data or absolute below it.
        remote: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionCmd {
    /// The live sessions of a pool.
    List {
        #[command(flatten)]
        pool: PoolArgs,
    },
    /// One session (exit status 3 when there is none).
    Show {
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Stop a session: its sandbox and files are destroyed.
    Delete {
        #[command(flatten)]
        session: SessionArgs,
    },
}

/// `cli-<user>`: `$USER`/`$LOGNAME`, else the uid, reduced to characters identifiers allow.
fn default_identifier() -> String {
    use std::os::unix::fs::MetadataExt as _;
    let user = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| match std::fs::metadata("/proc/self") {
            Ok(m) => format!("uid{}", m.uid()),
            Err(_) => "user".to_owned(),
        });
    let clean: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.@".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(120)
        .collect();
    format!("cli-{clean}")
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not NAME=VALUE"))?;
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "'{name}' is not a variable name (letters, digits and '_', not starting with a digit)"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// `s` as one shell word.
fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:,+@%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The shell command line the server runs: the environment exported first (the API has no
/// environment field), then the command.
fn command_line(command: &[String], env: &[(String, String)]) -> String {
    let mut line: String = env
        .iter()
        .map(|(k, v)| format!("export {k}={}; ", quote(v)))
        .collect();
    match command {
        [one] => line.push_str(one),
        several => line.push_str(
            &several
                .iter()
                .map(|a| quote(a))
                .collect::<Vec<_>>()
                .join(" "),
        ),
    }
    line
}

/// Runs `sandpool exec`; answers the process's exit status.
pub async fn exec(client: &Client, a: ExecArgs) -> anyhow::Result<u8> {
    let session = a.session.session();
    let line = command_line(&a.command, &a.env);
    let done = client
        .execute_streaming(&session, &line, a.timeout, |which, text| {
            // A closed terminal or pipe must not stop the command; its output is dropped.
            let _ = match which {
                OutputStream::Stdout => write_now(&mut std::io::stdout().lock(), text),
                OutputStream::Stderr => write_now(&mut std::io::stderr().lock(), text),
            };
        })
        .await?;
    exit_status(&done, a.timeout)
}

fn write_now(w: &mut impl std::io::Write, text: &str) -> std::io::Result<()> {
    w.write_all(text.as_bytes())?;
    w.flush()
}

/// The exit status of `sandpool exec` for a finished execution; notes go to stderr.
fn exit_status(e: &Execution, timeout: Option<u64>) -> anyhow::Result<u8> {
    if let Some(r) = &e.result {
        for (cut, name) in [
            (r.stdout_truncated, "stdout"),
            (r.stderr_truncated, "stderr"),
        ] {
            if cut {
                eprintln!("sandpool: the server kept only the start of the command's {name}");
            }
        }
    }
    if let Ok(code) = e.status.parse::<i32>() {
        return Ok(u8::try_from(code.rem_euclid(256)).unwrap_or(1));
    }
    let (code, message) = e
        .error
        .as_ref()
        .map(|x| (x.code.as_str(), x.message.as_str()))
        .unwrap_or(("", ""));
    if e.status == "Failed" && code == "ExecutionTimedOut" {
        match timeout {
            Some(t) => eprintln!("sandpool: the command timed out after {t} s and was killed"),
            None => eprintln!("sandpool: the command timed out and was killed"),
        }
        return Ok(TIMED_OUT);
    }
    if e.status == "Failed" {
        if let Some(sig) = killed_by(message) {
            eprintln!("sandpool: {message}");
            return Ok(128u8.saturating_add(sig));
        }
        bail!("({code}) {message}");
    }
    bail!(
        "execution {} ended in an unexpected state '{}'",
        e.id,
        e.status
    )
}

/// N of "… killed by signal N" (how the server reports a command a signal ended).
fn killed_by(message: &str) -> Option<u8> {
    let (_, rest) = message.split_once("signal ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|n| (1..128).contains(n))
}

/// The files and session commands (they print a result like the other client commands).
pub async fn run(client: &Client, c: SessionsCommand) -> anyhow::Result<Option<Value>> {
    match c {
        SessionsCommand::Exec(_) => bail!("`exec` exits with the command's status; main runs it"),
        SessionsCommand::Files(f) => files(client, f).await,
        SessionsCommand::Session(s) => session(client, s).await,
    }
}

async fn files(client: &Client, c: FilesCmd) -> anyhow::Result<Option<Value>> {
    match c {
        FilesCmd::Upload {
            session,
            local,
            path,
        } => {
            let meta = std::fs::metadata(&local)
                .with_context(|| format!("cannot read '{}'", local.display()))?;
            if !meta.is_file() {
                bail!("'{}' is not a regular file", local.display());
            }
            let (dir, name) = upload_target(&local, path.as_deref())?;
            let entry = client
                .upload_file(&session.session(), &local, &name, dir.as_deref())
                .await?;
            Ok(Some(serde_json::to_value(entry)?))
        }
        FilesCmd::List {
            session,
            path,
            recursive,
        } => {
            let list = client
                .list_files(&session.session(), path.as_deref(), recursive)
                .await?;
            Ok(Some(serde_json::to_value(list)?))
        }
        FilesCmd::Download {
            session,
            remote,
            local,
        } => {
            download(client, &session.session(), &remote, local).await?;
            Ok(None)
        }
        FilesCmd::Delete { session, remote } => {
            client.delete_file(&session.session(), &remote).await?;
            Ok(None)
        }
    }
}

/// The remote directory (`None`: /mnt/data) and file name of an upload.
fn upload_target(local: &Path, remote: Option<&str>) -> anyhow::Result<(Option<String>, String)> {
    let base = || {
        local
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("'{}' has no usable file name", local.display()))
    };
    let Some(remote) = remote else {
        return Ok((None, base()?));
    };
    let trimmed = remote.trim_end_matches('/');
    if remote.ends_with('/') || trimmed == "." || trimmed == "/mnt/data" {
        let dir = if trimmed.is_empty() { remote } else { trimmed };
        return Ok((Some(dir.to_owned()), base()?));
    }
    Ok(match trimmed.rsplit_once('/') {
        Some(("", name)) => (Some("/".to_owned()), name.to_owned()),
        Some((dir, name)) => (Some(dir.to_owned()), name.to_owned()),
        None => (None, trimmed.to_owned()),
    })
}

/// Streams `remote` to stdout (`-`) or into a temporary file beside the destination that is
/// renamed when complete, so a failed download never leaves a truncated file behind.
async fn download(
    client: &Client,
    s: &SessionRef,
    remote: &str,
    local: Option<PathBuf>,
) -> anyhow::Result<()> {
    if local.as_deref() == Some(Path::new("-")) {
        client
            .download_file(s, remote, &mut tokio::io::stdout())
            .await?;
        return Ok(());
    }
    let name = remote
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| anyhow!("'{remote}' does not name a file"))?;
    let dest = match local {
        Some(p) if p.is_dir() => p.join(name),
        Some(p) => p,
        None => PathBuf::from(name),
    };
    let dest_name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("'{}' has no usable file name", dest.display()))?;
    let part = dest.with_file_name(format!(
        ".{dest_name}.{}.part",
        uuid::Uuid::new_v4().simple()
    ));
    let mut file = tokio::fs::File::create(&part)
        .await
        .with_context(|| format!("cannot create '{}'", part.display()))?;
    let result = client.download_file(s, remote, &mut file).await;
    drop(file);
    let finished = match result {
        Ok(_) => tokio::fs::rename(&part, &dest)
            .await
            .with_context(|| format!("cannot write '{}'", dest.display())),
        Err(e) => Err(e.into()),
    };
    if finished.is_err() {
        let _ = tokio::fs::remove_file(&part).await;
    }
    finished
}

async fn session(client: &Client, c: SessionCmd) -> anyhow::Result<Option<Value>> {
    match c {
        SessionCmd::List { pool } => {
            let list = client
                .list_sessions(&pool.resource_group, &pool.pool)
                .await?;
            Ok(Some(serde_json::to_value(list)?))
        }
        SessionCmd::Show { session } => {
            let one = client.get_session(&session.session()).await?;
            Ok(Some(serde_json::to_value(one)?))
        }
        SessionCmd::Delete { session } => {
            client.delete_session(&session.session()).await?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandpool_client::{ExecutionError, ExecutionResult};

    #[test]
    fn command_lines_quote_arguments_and_export_env() {
        assert_eq!(command_line(&["ls | wc -l".into()], &[]), "ls | wc -l");
        assert_eq!(
            command_line(&["echo", "it's", "a b", "", "-n"].map(String::from), &[]),
            r"echo 'it'\''s' 'a b' '' -n"
        );
        let env = vec![
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "x y$z".to_string()),
        ];
        assert_eq!(
            command_line(&["env".into()], &env),
            "export A=1; export B='x y$z'; env"
        );
    }

    #[test]
    fn env_arguments_are_checked() {
        assert_eq!(
            parse_env("K_1=a=b").unwrap(),
            ("K_1".to_string(), "a=b".to_string())
        );
        assert!(parse_env("novalue").is_err());
        assert!(parse_env("1X=y").is_err());
        assert!(parse_env("A-B=y").is_err());
        assert!(parse_env("=y").is_err());
    }

    #[test]
    fn upload_targets() {
        let local = Path::new("/tmp/some/data.bin");
        let t = |r| upload_target(local, r).unwrap();
        assert_eq!(t(None), (None, "data.bin".to_string()));
        assert_eq!(t(Some("x.bin")), (None, "x.bin".to_string()));
        assert_eq!(
            t(Some("sub/dir/")),
            (Some("sub/dir".to_string()), "data.bin".to_string())
        );
        assert_eq!(
            t(Some("/mnt/data/a/x")),
            (Some("/mnt/data/a".to_string()), "x".to_string())
        );
        assert_eq!(
            t(Some("/mnt/data")),
            (Some("/mnt/data".to_string()), "data.bin".to_string())
        );
        assert!(upload_target(Path::new("/"), None).is_err());
    }

    fn execution(status: &str, error: Option<(&str, &str)>) -> Execution {
        Execution {
            id: "e1".into(),
            status: status.into(),
            result: Some(ExecutionResult::default()),
            error: error.map(|(code, message)| ExecutionError {
                code: code.into(),
                message: message.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn exit_statuses_follow_the_command() {
        assert_eq!(exit_status(&execution("0", None), None).unwrap(), 0);
        assert_eq!(exit_status(&execution("3", None), None).unwrap(), 3);
        assert_eq!(exit_status(&execution("256", None), None).unwrap(), 0);
        let timed_out = execution("Failed", Some(("ExecutionTimedOut", "too slow")));
        assert_eq!(exit_status(&timed_out, Some(1)).unwrap(), TIMED_OUT);
        let killed = execution(
            "Failed",
            Some(("ExecutionFailed", "the command was killed by signal 9")),
        );
        assert_eq!(exit_status(&killed, None).unwrap(), 137);
        let failed = execution("Failed", Some(("ExecutionFailed", "no sandbox")));
        let err = exit_status(&failed, None).unwrap_err().to_string();
        assert!(
            err.contains("ExecutionFailed") && err.contains("no sandbox"),
            "{err}"
        );
        assert!(exit_status(&execution("Running", None), None).is_err());
    }

    #[test]
    fn default_identifier_is_valid() {
        let id = default_identifier();
        assert!(
            id.starts_with("cli-") && id.len() >= 5 && id.len() <= 128,
            "{id}"
        );
    }
}
