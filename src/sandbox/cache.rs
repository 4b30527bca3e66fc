//! The on-disk cache of compiled modules, so a restart does not recompile. Entries are keyed
//! by module digest under a directory named for the engine's compatibility hash, and each file
//! carries the blake3 hash of its payload: a corrupted or foreign entry is recompiled, never
//! loaded. Writes are atomic (temp file + rename). It does not evict.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use wasmtime::{Engine, Module};

use super::SandboxError;
use crate::domain::ModuleDigest;

const CHECKSUM_LEN: usize = 32;

/// Compiled artifacts of one engine configuration.
#[derive(Debug)]
pub(super) struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    /// Opens (creating) the cache directory for `engine`'s configuration under `root`.
    pub(super) fn open(engine: &Engine, root: &Path) -> Result<Self, SandboxError> {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let dir = root.join(format!("engine-{:016x}", h.finish()));
        fs::create_dir_all(&dir).map_err(|source| SandboxError::Cache {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    fn path(&self, digest: &ModuleDigest) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    /// The cached module for `digest`, or `None` if absent or unusable (then removed).
    pub(super) fn load(&self, engine: &Engine, digest: &ModuleDigest) -> Option<Module> {
        let path = self.path(digest);
        let file = fs::read(&path).ok()?;
        let module =
            Self::verified_payload(&file).and_then(|payload| deserialize(engine, payload).ok());
        if module.is_none() {
            tracing::warn!(path = %path.display(), "a cached compiled module is unusable; it is removed and compiled again");
            let _ = fs::remove_file(&path);
        }
        module
    }

    /// Stores `module`'s compiled artifact; failures only cost a recompile later.
    pub(super) fn store(&self, digest: &ModuleDigest, module: &Module) {
        let Ok(payload) = module.serialize() else {
            return;
        };
        let write = || -> std::io::Result<()> {
            let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            tmp.write_all(blake3::hash(&payload).as_bytes())?;
            tmp.write_all(&payload)?;
            tmp.as_file().sync_data()?;
            tmp.persist(self.path(digest)).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!(
                dir = %self.dir.display(),
                error = %e,
                "cannot cache a compiled module; it will be compiled again when needed"
            );
        }
    }

    fn verified_payload(file: &[u8]) -> Option<&[u8]> {
        if file.len() < CHECKSUM_LEN {
            return None;
        }
        let (checksum, payload) = file.split_at(CHECKSUM_LEN);
        (blake3::hash(payload).as_bytes() == checksum).then_some(payload)
    }
}

/// Loads an artifact this cache wrote.
#[expect(
    unsafe_code,
    reason = "loading artifacts this cache wrote and verified"
)]
fn deserialize(engine: &Engine, payload: &[u8]) -> wasmtime::Result<Module> {
    // SAFETY: wasmtime requires that deserialized bytes were produced by `Module::serialize`
    // of a compatible engine and not changed since. Callers pass only payloads read from this
    // cache, whose directory is keyed by the engine's compatibility hash, and whose blake3
    // checksum matched the one `store` wrote beside them: byte for byte what `serialize` made.
    unsafe { Module::deserialize(engine, payload) }
}
