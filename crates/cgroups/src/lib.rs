//! One interface over cgroup v1 and cgroup v2 for the per-sandbox limits of sandpool
//! (memory with OOM reporting, pids, cpu quota) and their accounting.
//!
//! It knows nothing of sandboxes, namespaces or HTTP.
