//! Module blobs on disk, content-addressed by blake3: `<dir>/<digest>.wasm`. A put is atomic
//! (temp file, fsync, rename) and idempotent; a get verifies the bytes against their name, so
//! a corrupted blob is an error, never a different module. It does not validate wasm.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::domain::ModuleDigest;

/// A directory of module blobs.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("module {0} is not stored")]
    NotFound(ModuleDigest),
    #[error("module blob {digest} is corrupted: its bytes hash to {actual}")]
    Corrupted {
        digest: ModuleDigest,
        actual: ModuleDigest,
    },
    #[error("module store at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl BlobStore {
    /// Opens (creating) the blob directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, BlobError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|source| BlobError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    pub fn path(&self, digest: &ModuleDigest) -> PathBuf {
        self.dir.join(format!("{digest}.wasm"))
    }

    /// Stores `bytes` and returns their digest; storing the same bytes again is a no-op.
    pub fn put(&self, bytes: &[u8]) -> Result<ModuleDigest, BlobError> {
        let digest = ModuleDigest::of(bytes);
        let path = self.path(&digest);
        if path.exists() {
            return Ok(digest);
        }
        let io = |source| BlobError::Io {
            path: path.clone(),
            source,
        };
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(io)?;
        tmp.write_all(bytes).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        Ok(digest)
    }

    /// The bytes of `digest`, verified.
    pub fn get(&self, digest: &ModuleDigest) -> Result<Vec<u8>, BlobError> {
        let path = self.path(digest);
        let bytes = fs::read(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => BlobError::NotFound(*digest),
            _ => BlobError::Io {
                path: path.clone(),
                source,
            },
        })?;
        let actual = ModuleDigest::of(&bytes);
        if actual != *digest {
            return Err(BlobError::Corrupted {
                digest: *digest,
                actual,
            });
        }
        Ok(bytes)
    }

    pub fn contains(&self, digest: &ModuleDigest) -> bool {
        self.path(digest).exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_idempotent_and_get_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let d = store.put(b"\0asm module").unwrap();
        assert_eq!(store.put(b"\0asm module").unwrap(), d);
        assert_eq!(store.get(&d).unwrap(), b"\0asm module");
        fs::write(store.path(&d), b"tampered").unwrap();
        assert!(matches!(store.get(&d), Err(BlobError::Corrupted { .. })));
        let missing = ModuleDigest::of(b"other");
        assert!(matches!(store.get(&missing), Err(BlobError::NotFound(m)) if m == missing));
    }
}
