//! Small file helpers for cgroupfs. Every error carries the path and the kernel's errno, because
//! a bare `EINVAL` from a cgroup write is undebuggable without knowing which knob refused what.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::CgroupError;

pub(crate) fn io_err(action: impl Into<String>, path: &Path, source: io::Error) -> CgroupError {
    CgroupError::Io {
        action: action.into(),
        path: path.to_path_buf(),
        source,
    }
}

/// One `write(2)` of the whole value: cgroupfs parses each write on its own, so a value must never
/// be split across writes (which `fs::write`'s loop could do on a short write).
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_err("opening for write", path, e))?;
    f.write_all(value.as_bytes())
        .map_err(|e| io_err(format!("writing {value:?} to"), path, e))
}

pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|e| io_err("reading", path, e))
}

/// `None` when the file does not exist: the controller providing it is not there.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", path, e)),
    }
}

pub(crate) fn parse_u64(path: &Path, text: &str) -> Result<u64, CgroupError> {
    let t = text.trim();
    if t == "max" {
        return Ok(u64::MAX);
    }
    t.parse::<u64>().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        content: t.to_string(),
    })
}

/// A single-number file such as `pids.current`; `None` when absent.
pub(crate) fn read_u64_optional(path: &Path) -> Result<Option<u64>, CgroupError> {
    read_optional(path)?
        .map(|t| parse_u64(path, &t))
        .transpose()
}

/// The value of `key` in a flat-keyed file (`memory.events`, `cpu.stat`, `memory.oom_control`).
pub(crate) fn keyed_value(path: &Path, text: &str, key: &str) -> Result<Option<u64>, CgroupError> {
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if it.next() == Some(key) {
            let v = it.next().unwrap_or("");
            return parse_u64(path, v).map(Some);
        }
    }
    Ok(None)
}

/// Pids listed in a `cgroup.procs`; a vanished file (cgroup removed meanwhile) lists nothing.
pub(crate) fn read_procs(path: &Path) -> Result<Vec<i32>, CgroupError> {
    let Some(text) = read_optional(path)? else {
        return Ok(Vec::new());
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse::<i32>().map_err(|_| CgroupError::Parse {
                path: path.to_path_buf(),
                content: l.to_string(),
            })
        })
        .collect()
}

/// `dir` and every cgroup below it, deepest first, so the list is also a valid `rmdir` order.
/// A missing `dir` yields nothing.
pub(crate) fn subtree_post_order(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut out = Vec::new();
    collect(dir, &mut out)?;
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
    for child in child_dir_paths(dir)? {
        collect(&child, out)?;
    }
    out.push(dir.to_path_buf());
    Ok(())
}

/// Names of the child directories of `dir` (the cgroups directly below it).
pub(crate) fn child_dirs(dir: &Path) -> Result<Vec<String>, CgroupError> {
    Ok(child_dir_paths(dir)?
        .into_iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .collect())
}

/// A missing `dir` has no children: callers race with removal and treat that as done.
fn child_dir_paths(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", dir, e)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err("listing", dir, e))?;
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(|e| io_err("stat of", &path, e))?
            .is_dir();
        if is_dir {
            dirs.push(path);
        }
    }
    Ok(dirs)
}
