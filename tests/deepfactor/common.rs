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

/// deepfactor's cache folder, as the library computes it.
pub fn cache_dir() -> PathBuf {
    deepfactor::backbone::cache_dir()
}

/// The real EfficientNet-Lite0 weights, or `None` (with a SKIP message) when
/// `scripts/setup.sh` has not fetched them.
pub fn lite0_weights() -> Option<PathBuf> {
    let p = std::env::var_os("DEEPFACTOR_EFFICIENTNET_LITE0_WEIGHTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("weights/efficientnet-lite0-57934424.pth"));
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("SKIP: {} is absent (run scripts/setup.sh)", p.display());
        None
    }
}

/// The photos `scripts/setup.sh` fetches, or `None` (with a SKIP message).
pub fn photos() -> Option<PathBuf> {
    let p = cache_dir().join("photos");
    if p.join("chelsea.png").is_file() {
        Some(p)
    } else {
        eprintln!("SKIP: {} has no photos (run scripts/setup.sh)", p.display());
        None
    }
}
