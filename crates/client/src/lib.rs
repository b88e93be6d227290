//! A typed async HTTP client of the sandpool API, used by the `sandpool` CLI and the benchmarks.
