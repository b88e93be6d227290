//! The command context: a base64 zip of files the command needs.
//!
//! Everything here is pure: decoding, inspecting and reading entries never touches the host
//! file system. Where the files land is decided by the runner, through the sandbox's own file
//! interface.

use std::collections::{BTreeSet, HashSet};
use std::io::{Cursor, Read};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};
use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

/// Bounds applied to a context archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextLimits {
    /// Most entries (files and directories) an archive may hold.
    pub max_entries: usize,
    /// Most bytes all files together may unpack to, declared and actual.
    pub max_unpacked_bytes: u64,
    /// Longest entry path, in bytes.
    pub max_path_bytes: usize,
}

impl Default for ContextLimits {
    fn default() -> Self {
        ContextLimits {
            max_entries: 10_000,
            max_unpacked_bytes: 256 * 1024 * 1024,
            max_path_bytes: 1024,
        }
    }
}

/// Why a context was refused. The message is meant for the API caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("context is not valid base64: {0}")]
    Base64(String),
    #[error("context is not a valid zip archive: {0}")]
    InvalidZip(String),
    #[error("context holds {count} entries; at most {max} are allowed")]
    TooManyEntries { count: usize, max: usize },
    #[error("context unpacks to more than {max} bytes")]
    TooLarge { max: u64 },
    #[error("context entry {path:?} is refused: {reason}")]
    UnsafePath { path: String, reason: &'static str },
    #[error("context entry {path:?} is a {kind}; only regular files and directories are allowed")]
    NotRegular { path: String, kind: &'static str },
    #[error("context entry {path:?} is not supported: {reason}")]
    Unsupported { path: String, reason: String },
    #[error("context entry {path:?} conflicts with another entry: {reason}")]
    Conflict { path: String, reason: &'static str },
    #[error(
        "context entry {path:?} unpacks to more bytes than the {declared} its header declares"
    )]
    SizeMismatch { path: String, declared: u64 },
    #[error("context entry {path:?} could not be read: {reason}")]
    Corrupt { path: String, reason: String },
}

/// Decodes the `context` field: standard or URL-safe base64, ASCII whitespace anywhere (clients
/// wrap lines every 76 characters), padding optional. Empty input is an empty context.
///
/// Streams: the text is cleaned and decoded a few KiB at a time, so decoding needs the result
/// (¾ of the text) and one small buffer, not copies of the text and an offset table beside it.
pub fn decode_context(s: &str) -> Result<Vec<u8>, ContextError> {
    const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    const ENGINE: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
    // Base64 characters per step: a multiple of 4, so every step but the last decodes exactly
    // like the same stretch of one whole decode.
    const STEP: usize = 16 * 1024;
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');

    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3 + 3);
    let mut step = Vec::with_capacity(STEP);
    // Base64 characters decoded before `step`, to point an error at the caller's offset.
    let mut decoded_chars = 0usize;
    let mut i = 0;
    loop {
        step.clear();
        while step.len() < STEP && i < bytes.len() {
            match bytes[i] {
                b if is_space(b) => {}
                b'-' => step.push(b'+'),
                b'_' => step.push(b'/'),
                other => step.push(other),
            }
            i += 1;
        }
        while i < bytes.len() && is_space(bytes[i]) {
            i += 1;
        }
        if step.is_empty() {
            return Ok(out);
        }
        ENGINE
            .decode_vec(&step, &mut out)
            .map_err(|e| base64_error(s, decoded_chars, e))?;
        decoded_chars += step.len();
        if i >= bytes.len() {
            return Ok(out);
        }
    }
}

/// The error of a step that started after `before` base64 characters, with offsets into `s`.
fn base64_error(s: &str, before: usize, e: base64::DecodeError) -> ContextError {
    // Offset in `s` of the `n`-th non-whitespace character (rare path: a rescan).
    let at = |n: usize| {
        s.bytes()
            .enumerate()
            .filter(|(_, b)| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            .nth(before + n)
            .map_or(s.len(), |(offset, _)| offset)
    };
    ContextError::Base64(match e {
        base64::DecodeError::InvalidByte(i, b) => {
            format!("unexpected {} at offset {}", describe_byte(b), at(i))
        }
        base64::DecodeError::InvalidLength(_) => {
            "its length does not match any base64 encoding (truncated?)".to_string()
        }
        base64::DecodeError::InvalidLastSymbol(i, b) => {
            format!("unexpected final {} at offset {}", describe_byte(b), at(i))
        }
        base64::DecodeError::InvalidPadding => "misplaced '=' padding".to_string(),
    })
}

fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("character '{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

/// A file of the archive that is safe to unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// Index of the entry in the archive.
    pub index: usize,
    /// Normalised relative path: no `.`/`..`/empty components, `/`-separated.
    pub path: String,
    /// Size the archive declares; the reader refuses to produce more.
    pub declared_size: u64,
    /// Whether the archive marks it executable for its owner.
    pub executable: bool,
}

/// What unpacking a context will create, relative to the working directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextPlan {
    /// Every directory to create (explicit entries and parents of files), parents first.
    pub dirs: Vec<String>,
    pub files: Vec<PlannedFile>,
    /// Sum of the files' declared sizes.
    pub declared_bytes: u64,
}

impl ContextPlan {
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.files.is_empty()
    }
}

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;

fn file_kind(mode: u32) -> &'static str {
    match mode & S_IFMT {
        0o120_000 => "symbolic link",
        0o140_000 => "socket",
        0o060_000 => "block device",
        0o020_000 => "character device",
        0o010_000 => "FIFO",
        _ => "special file",
    }
}

fn open_archive(bytes: &[u8]) -> Result<ZipArchive<Cursor<&[u8]>>, ContextError> {
    ZipArchive::new(Cursor::new(bytes)).map_err(|e| ContextError::InvalidZip(zip_reason(&e)))
}

fn zip_reason(e: &ZipError) -> String {
    match e {
        ZipError::Io(io) => io.to_string(),
        ZipError::InvalidArchive(m) => m.to_string(),
        ZipError::UnsupportedArchive(m) => format!("unsupported: {m}"),
        ZipError::FileNotFound => "entry not found".to_string(),
        ZipError::InvalidPassword => "encrypted".to_string(),
        other => other.to_string(),
    }
}

/// Checks an archive without unpacking it and says what it would create.
///
/// Refuses entries that would land outside the working directory (`..`, absolute paths,
/// backslashes, NUL), anything but regular files and directories (symbolic links above all),
/// encrypted or unknown-compression entries, duplicates, more than `limits.max_entries`
/// entries and declared sizes above `limits.max_unpacked_bytes`. Declared sizes can lie:
/// [`read_entry`] enforces them while reading. Empty input is an empty plan.
pub fn inspect_zip(bytes: &[u8], limits: &ContextLimits) -> Result<ContextPlan, ContextError> {
    if bytes.is_empty() {
        return Ok(ContextPlan::default());
    }
    let mut archive = open_archive(bytes)?;
    if archive.len() > limits.max_entries {
        return Err(ContextError::TooManyEntries {
            count: archive.len(),
            max: limits.max_entries,
        });
    }
    let mut dirs = BTreeSet::new();
    let mut files = Vec::new();
    let mut file_paths = HashSet::new();
    let mut declared: u64 = 0;
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| ContextError::InvalidZip(zip_reason(&e)))?;
        let raw_name = entry.name().to_string();
        let is_dir = entry.is_dir();
        let components = safe_components(&raw_name, limits)?;
        if let Some(mode) = entry.unix_mode() {
            let kind = mode & S_IFMT;
            if kind != 0 && kind != S_IFREG && kind != S_IFDIR {
                return Err(ContextError::NotRegular {
                    path: raw_name,
                    kind: file_kind(mode),
                });
            }
        }
        if entry.encrypted() {
            return Err(ContextError::Unsupported {
                path: raw_name,
                reason: "the entry is encrypted".to_string(),
            });
        }
        for depth in 1..components.len() {
            dirs.insert(components[..depth].join("/"));
        }
        if components.is_empty() {
            // `./` or similar: the working directory itself.
            continue;
        }
        let path = components.join("/");
        if is_dir {
            dirs.insert(path);
            continue;
        }
        #[allow(deprecated)]
        let supported = matches!(
            entry.compression(),
            CompressionMethod::Stored | CompressionMethod::Deflated
        );
        if !supported {
            return Err(ContextError::Unsupported {
                path: raw_name,
                reason: format!(
                    "compression method {} (only stored and deflate are supported)",
                    entry.compression()
                ),
            });
        }
        declared = declared.saturating_add(entry.size());
        if declared > limits.max_unpacked_bytes {
            return Err(ContextError::TooLarge {
                max: limits.max_unpacked_bytes,
            });
        }
        if !file_paths.insert(path.clone()) {
            return Err(ContextError::Conflict {
                path: raw_name,
                reason: "the same path appears twice",
            });
        }
        let executable = entry.unix_mode().is_some_and(|m| m & 0o100 != 0);
        files.push(PlannedFile {
            index,
            path,
            declared_size: entry.size(),
            executable,
        });
    }
    if let Some(clash) = files.iter().find(|f| dirs.contains(&f.path)) {
        return Err(ContextError::Conflict {
            path: clash.path.clone(),
            reason: "it is both a file and a directory",
        });
    }
    Ok(ContextPlan {
        dirs: dirs.into_iter().collect(),
        files,
        declared_bytes: declared,
    })
}

/// Splits an entry name into components that cannot leave the working directory.
fn safe_components<'a>(
    name: &'a str,
    limits: &ContextLimits,
) -> Result<Vec<&'a str>, ContextError> {
    let refuse = |reason| {
        Err(ContextError::UnsafePath {
            path: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("the name is empty");
    }
    if name.len() > limits.max_path_bytes {
        return refuse("the name is too long");
    }
    if name.contains('\0') {
        return refuse("the name contains a NUL byte");
    }
    if name.starts_with('/') {
        return refuse("absolute paths are not allowed");
    }
    if name.contains('\\') {
        return refuse("backslashes are not allowed in names");
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return refuse("drive-letter paths are not allowed");
    }
    let mut out = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => continue,
            ".." => return refuse("'..' would leave the working directory"),
            p if p.len() > 255 => return refuse("a path component is longer than 255 bytes"),
            p => out.push(p),
        }
    }
    Ok(out)
}

/// Running total of bytes unpacked so far, shared across the entries of one archive.
#[derive(Debug, Default)]
pub struct UnpackBudget {
    used: u64,
}

impl UnpackBudget {
    pub fn used(&self) -> u64 {
        self.used
    }
}

/// Opens the archive for reading the planned files.
pub fn open_context(bytes: &[u8]) -> Result<ZipArchive<Cursor<&[u8]>>, ContextError> {
    open_archive(bytes)
}

/// Streams one planned file's bytes to `sink` in chunks, counting what it really produces:
/// more than the declared size, or more than the archive's budget, stops it with an error.
pub fn read_entry<E>(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    file: &PlannedFile,
    limits: &ContextLimits,
    budget: &mut UnpackBudget,
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<Result<(), E>, ContextError> {
    let corrupt = |reason: String| ContextError::Corrupt {
        path: file.path.clone(),
        reason,
    };
    let mut entry = archive
        .by_index(file.index)
        .map_err(|e| corrupt(zip_reason(&e)))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut produced: u64 = 0;
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => return Ok(Ok(())),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(e.to_string())),
        };
        produced += n as u64;
        budget.used += n as u64;
        if produced > file.declared_size {
            return Err(ContextError::SizeMismatch {
                path: file.path.clone(),
                declared: file.declared_size,
            });
        }
        if budget.used > limits.max_unpacked_bytes {
            return Err(ContextError::TooLarge {
                max: limits.max_unpacked_bytes,
            });
        }
        if let Err(e) = sink(&buf[..n]) {
            return Ok(Err(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_normalise_and_refuse() {
        let l = ContextLimits::default();
        assert_eq!(
            safe_components("a/./b//c", &l).unwrap(),
            vec!["a", "b", "c"]
        );
        assert!(safe_components("./", &l).unwrap().is_empty());
        for bad in [
            "../x",
            "a/../../x",
            "a/..",
            "/etc/x",
            "C:/x",
            "a\\..\\x",
            "",
            "a\0b",
        ] {
            assert!(
                matches!(
                    safe_components(bad, &l),
                    Err(ContextError::UnsafePath { .. })
                ),
                "{bad:?} must be refused"
            );
        }
    }

    /// Steps decode like one whole decode: across their boundaries, and with errors far in.
    #[test]
    fn stepwise_decode_matches_a_whole_decode() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let text = STANDARD.encode(&data);
        let wrapped: Vec<String> = text
            .as_bytes()
            .chunks(76)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        assert_eq!(decode_context(&wrapped.join("\r\n")).unwrap(), data);
        assert_eq!(
            decode_context(&URL_SAFE_NO_PAD.encode(&data)).unwrap(),
            data
        );
        let mut bad = wrapped.join("\n");
        let at = bad.len() - 10;
        bad.replace_range(at..at + 1, "!");
        assert_eq!(
            decode_context(&bad).unwrap_err(),
            ContextError::Base64(format!("unexpected character '!' at offset {at}"))
        );
    }

    #[test]
    fn base64_error_points_at_original_offset() {
        let err = decode_context("QUJD\nR!==").unwrap_err();
        assert_eq!(
            err,
            ContextError::Base64("unexpected character '!' at offset 6".to_string())
        );
    }
}
