//! Decoding and inspecting contexts (pure: no sandbox, no host files).

mod common;

use base64::Engine as _;
use common::{lie_about_sizes, zip_of, Entry};
use sandpool_runcommand::{
    decode_context, inspect_zip, open_context, read_entry, ContextError, ContextLimits,
    UnpackBudget,
};

#[test]
fn base64_is_decoded_leniently() {
    let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let std = base64::engine::general_purpose::STANDARD.encode(&data);
    // MIME-style line breaks every 76 characters, CRLF and LF.
    for sep in ["\n", "\r\n", " \t"] {
        let wrapped = std
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(sep);
        assert_eq!(decode_context(&format!("{wrapped}\n")).unwrap(), data);
    }
    // Padding optional; URL-safe alphabet accepted.
    assert_eq!(decode_context("QUI").unwrap(), b"AB");
    assert_eq!(decode_context("QUI=").unwrap(), b"AB");
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&data);
    assert_eq!(decode_context(&url).unwrap(), data);
    assert_eq!(decode_context("").unwrap(), b"");
    assert_eq!(decode_context(" \r\n ").unwrap(), b"");
}

#[test]
fn invalid_base64_is_refused_with_a_reason() {
    for (input, expect) in [
        ("not base64!", "unexpected character '!' at offset 10"),
        ("QUJDRA=A", "'='"),
        ("Q", "length"),
        ("QU\u{e9}I", "byte 0xc3 at offset 2"),
    ] {
        match decode_context(input) {
            Err(e @ ContextError::Base64(_)) => {
                let msg = e.to_string();
                assert!(msg.starts_with("context is not valid base64"), "{msg}");
                assert!(msg.contains(expect), "{input:?}: {msg:?} lacks {expect:?}");
            }
            other => panic!("{input:?}: expected a base64 error, got {other:?}"),
        }
    }
}

#[test]
fn plan_lists_directories_parents_first_and_executables() {
    let zip = zip_of(&[
        Entry::File("run.sh", b"#!/bin/sh\n", 0o755),
        Entry::Dir("empty/"),
        Entry::File("a/b/c.txt", b"abc", 0o644),
        Entry::File("./a/./d.txt", b"d", 0o600),
    ]);
    let plan = inspect_zip(&zip, &ContextLimits::default()).unwrap();
    assert_eq!(plan.dirs, vec!["a", "a/b", "empty"]);
    let files: Vec<(&str, u64, bool)> = plan
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.declared_size, f.executable))
        .collect();
    assert_eq!(
        files,
        vec![
            ("run.sh", 10, true),
            ("a/b/c.txt", 3, false),
            ("a/d.txt", 1, false)
        ]
    );
    assert_eq!(plan.declared_bytes, 14);
    assert!(inspect_zip(b"", &ContextLimits::default())
        .unwrap()
        .is_empty());
}

fn refused(zip: &[u8]) -> ContextError {
    inspect_zip(zip, &ContextLimits::default()).expect_err("must be refused")
}

#[test]
fn escapes_links_and_conflicts_are_refused() {
    for name in ["../x", "a/../../x", "/etc/passwd", "C:/x", "a\\..\\x"] {
        let e = refused(&zip_of(&[Entry::File(name, b"x", 0o644)]));
        assert!(matches!(e, ContextError::UnsafePath { .. }), "{name}: {e}");
    }
    let e = refused(&zip_of(&[Entry::Symlink("l", "../../etc/shadow")]));
    assert_eq!(
        e.to_string(),
        "context entry \"l\" is a symbolic link; only regular files and directories are allowed"
    );
    let e = refused(&zip_of(&[
        Entry::File("a", b"1", 0o644),
        Entry::File("./a", b"2", 0o644),
    ]));
    assert!(matches!(e, ContextError::Conflict { .. }), "{e}");
    let e = refused(&zip_of(&[
        Entry::File("a", b"1", 0o644),
        Entry::File("a/b", b"2", 0o644),
    ]));
    assert!(e.to_string().contains("both a file and a directory"), "{e}");
    let e = refused(b"garbage that is no zip");
    assert!(matches!(e, ContextError::InvalidZip(_)), "{e}");
}

#[test]
fn declared_sizes_and_entry_counts_are_bounded() {
    let limits = ContextLimits {
        max_entries: 3,
        max_unpacked_bytes: 100,
        ..Default::default()
    };
    let four = zip_of(&[
        Entry::File("1", b"", 0o644),
        Entry::File("2", b"", 0o644),
        Entry::Dir("3/"),
        Entry::File("4", b"", 0o644),
    ]);
    assert_eq!(
        inspect_zip(&four, &limits),
        Err(ContextError::TooManyEntries { count: 4, max: 3 })
    );
    let big = zip_of(&[
        Entry::File("1", &[b'x'; 60], 0o644),
        Entry::File("2", &[b'y'; 60], 0o644),
    ]);
    assert_eq!(
        inspect_zip(&big, &limits),
        Err(ContextError::TooLarge { max: 100 })
    );
}

#[test]
fn reading_stops_at_the_declared_size_and_at_the_budget() {
    let data = vec![7u8; 200_000];
    let zip = lie_about_sizes(zip_of(&[Entry::File("f", &data, 0o644)]), 10);
    let plan = inspect_zip(&zip, &ContextLimits::default()).unwrap();
    assert_eq!(plan.files[0].declared_size, 10);
    let mut archive = open_context(&zip).unwrap();
    let mut seen = 0usize;
    let r = read_entry(
        &mut archive,
        &plan.files[0],
        &ContextLimits::default(),
        &mut UnpackBudget::default(),
        |c| {
            seen += c.len();
            Ok::<(), ()>(())
        },
    );
    assert_eq!(
        r,
        Err(ContextError::SizeMismatch {
            path: "f".into(),
            declared: 10
        })
    );
    assert!(
        seen <= 10,
        "nothing past the declared size is handed on ({seen})"
    );

    // Honest headers, but the budget of the whole archive runs out while reading.
    let zip = zip_of(&[Entry::File("f", &data, 0o644)]);
    let plan = inspect_zip(&zip, &ContextLimits::default()).unwrap();
    let tight = ContextLimits {
        max_unpacked_bytes: 1000,
        ..Default::default()
    };
    let mut archive = open_context(&zip).unwrap();
    let r = read_entry(
        &mut archive,
        &plan.files[0],
        &tight,
        &mut UnpackBudget::default(),
        |_| Ok::<(), ()>(()),
    );
    assert_eq!(r, Err(ContextError::TooLarge { max: 1000 }));

    let mut archive = open_context(&zip).unwrap();
    let mut out = Vec::new();
    let mut budget = UnpackBudget::default();
    let r = read_entry(
        &mut archive,
        &plan.files[0],
        &ContextLimits::default(),
        &mut budget,
        |c| {
            out.extend_from_slice(c);
            Ok::<(), ()>(())
        },
    );
    assert_eq!(r, Ok(Ok(())));
    assert_eq!(out, data);
    assert_eq!(budget.used(), data.len() as u64);
}
