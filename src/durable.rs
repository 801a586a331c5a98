//! Durable file writes: the one way files are replaced atomically.

use crate::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` atomically: writes the temporary file `tmp` (a sibling of
/// `path`), syncs it, renames it over `path`, and syncs the directory, so that after a crash
/// `path` holds either its old content or the new one, never a mix. On failure the temporary
/// file is removed (as far as possible) and the error names the file that failed.
pub(crate) fn write_atomic(path: &Path, tmp: &Path, bytes: &[u8]) -> Result<()> {
    let write = || -> Result<()> {
        let mut f = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(tmp, e))?;
        f.sync_all().map_err(|e| Error::io(tmp, e))?;
        std::fs::rename(tmp, path).map_err(|e| Error::io(path, e))
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Makes a directory's entries (new files, renames) durable. A no-op where directories
/// cannot be synced (not Unix).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let tmp = dir.path().join("f.tmp");
        write_atomic(&path, &tmp, b"one").unwrap();
        write_atomic(&path, &tmp, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!tmp.exists());
        // A temporary in a missing directory: an error naming it, the file untouched.
        let bad = dir.path().join("no/such/f.tmp");
        let e = write_atomic(&path, &bad, b"three").unwrap_err();
        assert!(e.to_string().contains("f.tmp"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
    }
}
