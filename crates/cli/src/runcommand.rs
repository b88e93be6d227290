//! `sandpool cluster command invoke|result`: Run Command from the command line, mirroring
//! `az aks command invoke` (files zipped into the context, a spinner while it polls, then
//! `exitcode=N` and the logs; the process succeeds when the command ran, whatever its code).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use sandpool_client::runcommand::CommandResult;
use sandpool_client::Client;
use serde_json::{json, Value};

use crate::args::Target;

#[derive(Debug, Subcommand)]
pub enum CommandCmd {
    /// Run a command in a fresh sandbox of the cluster and print its exit code and logs.
    Invoke {
        #[command(flatten)]
        target: Target,
        /// The command, run with `/bin/sh -c` in the directory holding the files.
        #[arg(short = 'c', long)]
        command: String,
        /// Files to send (repeatable): `.` sends the current directory recursively, any other
        /// path is added under its base name (directories recursively).
        #[arg(short = 'f', long = "file")]
        files: Vec<PathBuf>,
        /// Print the command id and return without waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show the result of a command (`invoke --no-wait` printed its id).
    Result {
        #[command(flatten)]
        target: Target,
        #[arg(short = 'i', long = "command-id")]
        command_id: String,
    },
}

pub async fn run(client: &Client, c: CommandCmd) -> anyhow::Result<Option<Value>> {
    match c {
        CommandCmd::Invoke {
            target,
            command,
            files,
            no_wait,
        } => {
            let context = if files.is_empty() {
                Vec::new()
            } else {
                tokio::task::spawn_blocking(move || zip_files(&files)).await??
            };
            let id = client
                .run_command(&target.resource_group, &target.name, &command, &context)
                .await?;
            if no_wait {
                return Ok(Some(json!({"id": id})));
            }
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.set_message(format!("running command {id}"));
            spinner.enable_steady_tick(Duration::from_millis(120));
            let result = client
                .wait_command(&target.resource_group, &target.name, &id, |_| {
                    spinner.tick()
                })
                .await;
            spinner.finish_and_clear();
            print_result(&result?)
        }
        CommandCmd::Result { target, command_id } => {
            let r = client
                .command_result(&target.resource_group, &target.name, &command_id)
                .await?;
            print_result(&r)
        }
    }
}

/// Prints a result the way `az aks command` does; a command that could not run is an error.
fn print_result(r: &CommandResult) -> anyhow::Result<Option<Value>> {
    match r.provisioning_state.as_str() {
        "Succeeded" => {
            let mut out = std::io::stdout().lock();
            let code = r
                .exit_code
                .map_or_else(|| "unknown".to_string(), |c| c.to_string());
            let _ = writeln!(
                out,
                "command started at {}, finished at {} with exitcode={code}",
                r.started_at.as_deref().unwrap_or("?"),
                r.finished_at.as_deref().unwrap_or("?"),
            );
            let _ = out.write_all(r.logs.as_bytes());
            if !r.logs.is_empty() && !r.logs.ends_with('\n') {
                let _ = writeln!(out);
            }
            let _ = out.flush();
            Ok(None)
        }
        "Failed" => {
            if !r.logs.is_empty() {
                let _ = std::io::stdout().write_all(r.logs.as_bytes());
            }
            bail!(
                "command {} failed: {}",
                r.id,
                r.reason.as_deref().unwrap_or("no reason given")
            )
        }
        state => {
            println!("command {} is in {state} state", r.id);
            Ok(None)
        }
    }
}

/// The context zip of `--file` arguments.
pub fn zip_files(files: &[PathBuf]) -> anyhow::Result<Vec<u8>> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for f in files {
        if f.as_os_str() == "." {
            let cwd = std::env::current_dir().context("reading the current directory")?;
            add_tree(&mut w, &cwd, "")?;
            continue;
        }
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("'{}' has no usable file name", f.display()))?;
        let meta = std::fs::metadata(f).with_context(|| format!("reading '{}'", f.display()))?;
        if meta.is_dir() {
            add_tree(&mut w, f, &format!("{name}/"))?;
        } else {
            add_file(&mut w, f, name, &meta)?;
        }
    }
    Ok(w.finish().context("writing the context zip")?.into_inner())
}

type ZipW = zip::ZipWriter<std::io::Cursor<Vec<u8>>>;

fn options(meta: &std::fs::Metadata) -> zip::write::SimpleFileOptions {
    use std::os::unix::fs::PermissionsExt;
    zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(meta.permissions().mode() & 0o777)
}

fn add_file(w: &mut ZipW, path: &Path, name: &str, meta: &std::fs::Metadata) -> anyhow::Result<()> {
    let data = std::fs::read(path).with_context(|| format!("reading '{}'", path.display()))?;
    w.start_file(name, options(meta))
        .with_context(|| format!("adding '{name}' to the context"))?;
    w.write_all(&data)?;
    Ok(())
}

/// Adds `dir`'s content under `prefix`. Symlinks to files are sent as their content; symlinks
/// to directories are skipped (they may loop, and the server refuses links anyway).
fn add_tree(w: &mut ZipW, dir: &Path, prefix: &str) -> anyhow::Result<()> {
    if !prefix.is_empty() {
        let meta = std::fs::metadata(dir)?;
        w.add_directory(prefix, options(&meta))?;
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading '{}'", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            bail!("'{}' is not a UTF-8 file name", e.path().display());
        };
        let path = e.path();
        let link = e.file_type()?.is_symlink();
        let meta =
            std::fs::metadata(&path).with_context(|| format!("reading '{}'", path.display()))?;
        if meta.is_dir() {
            if !link {
                add_tree(w, &path, &format!("{prefix}{name}/"))?;
            }
        } else if meta.is_file() {
            add_file(w, &path, &format!("{prefix}{name}"), &meta)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_zipped_with_relative_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("sub/deeper")).expect("mkdir");
        std::fs::write(dir.path().join("a.txt"), "a").expect("write");
        std::fs::write(dir.path().join("sub/deeper/b.txt"), "b").expect("write");
        std::os::unix::fs::symlink(dir.path(), dir.path().join("sub/loop")).expect("symlink");
        let zip = zip_files(&[dir.path().to_path_buf(), dir.path().join("a.txt")]).expect("zip");
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).expect("archive");
        let base = dir
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name");
        let mut names: Vec<String> = archive.file_names().map(str::to_string).collect();
        names.sort();
        let mut expected = vec![
            "a.txt".to_string(),
            format!("{base}/"),
            format!("{base}/a.txt"),
            format!("{base}/sub/"),
            format!("{base}/sub/deeper/"),
            format!("{base}/sub/deeper/b.txt"),
        ];
        expected.sort();
        assert_eq!(names, expected);
        let mut s = String::new();
        std::io::Read::read_to_string(
            &mut archive
                .by_name(&format!("{base}/sub/deeper/b.txt"))
                .expect("entry"),
            &mut s,
        )
        .expect("read");
        assert_eq!(s, "b");
        assert!(zip_files(&[dir.path().join("missing")]).is_err());
    }
}
