//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/data/<sub>` if present; otherwise prints why the caller skips and returns `None`.
pub fn shared_data(sub: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("DEEPFACTOR_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data"))
        .join(sub);
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: {} is absent (set DEEPFACTOR_DATA to the shared data folder)",
            dir.display()
        );
        None
    }
}
