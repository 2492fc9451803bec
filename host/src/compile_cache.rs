//! Compiled components on disk, so a restart does not recompile. An entry is keyed by the
//! component's digest and the engine's compatibility hash (wasmtime version + every engine
//! setting that affects code), and carries a SHA-256 of its own payload: a torn or corrupt
//! file is detected, deleted and recompiled, never handed to `Component::deserialize`.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

const MAGIC: &[u8; 8] = b"CRMCWSM1";

/// Where an entry came from, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    Miss,
    /// An entry was there but failed its checksum or would not deserialize.
    Corrupt,
}

impl Lookup {
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
            Lookup::Corrupt => "corrupt",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

impl CompileCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = format!("{:016x}", h.finish());
        Ok(CompileCache { dir, engine_key })
    }

    pub fn path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join(format!("{hex}-{}.cwasm", self.engine_key))
    }

    /// The cached compilation of `digest`, if a sound one exists.
    pub fn get(&self, engine: &Engine, digest: &str) -> (Option<Component>, Lookup) {
        let path = self.path(digest);
        let Ok(file) = std::fs::read(&path) else { return (None, Lookup::Miss) };
        match decode(&file) {
            // SAFETY: the payload is byte for byte what `put` wrote after compiling it with
            // an engine of the same compatibility hash (the checksum proves it); wasmtime
            // additionally checks its own version and settings in the artifact's header.
            Some(payload) => match unsafe { Component::deserialize(engine, payload) } {
                Ok(c) => return (Some(c), Lookup::Hit),
                Err(e) => tracing::warn!(path = %path.display(), "compile cache entry refused by wasmtime: {e:#}"),
            },
            None => tracing::warn!(path = %path.display(), "compile cache entry is corrupt (checksum mismatch)"),
        }
        let _ = std::fs::remove_file(&path);
        (None, Lookup::Corrupt)
    }

    /// Stores a compilation; written to a temporary file and renamed, so readers see a whole
    /// entry or none. Failures only cost a recompile later, so they are logged, not returned.
    pub fn put(&self, digest: &str, component: &Component) {
        let result = component.serialize().map_err(|e| format!("{e:#}")).and_then(|payload| {
            let path = self.path(digest);
            write_atomically(&path, &encode(&payload)).map_err(|e| e.to_string())
        });
        if let Err(e) = result {
            tracing::warn!(digest, "could not write the compile cache: {e}");
        }
    }

    /// Removes every entry but those of `digests` compiled by this engine build; with
    /// `temporary`, also interrupted writes (only when none can be under way: at start-up).
    /// How many files went.
    pub fn retain(&self, digests: &std::collections::HashSet<String>, temporary: bool) -> usize {
        let keep: std::collections::HashSet<PathBuf> = digests.iter().map(|d| self.path(d)).collect();
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return 0 };
        let mut removed = 0;
        for path in entries.flatten().map(|e| e.path()) {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
            let stale = (ext == "cwasm" && !keep.contains(&path)) || (temporary && ext.starts_with("tmp"));
            if stale && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 40);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&Sha256::digest(payload));
    out.extend_from_slice(payload);
    out
}

fn decode(file: &[u8]) -> Option<&[u8]> {
    let rest = file.strip_prefix(MAGIC)?;
    if rest.len() < 32 {
        return None;
    }
    let (sum, payload) = rest.split_at(32);
    (Sha256::digest(payload).as_slice() == sum).then_some(payload)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_catches_any_flipped_byte() {
        let file = encode(b"compiled code");
        assert_eq!(decode(&file), Some(&b"compiled code"[..]));
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x40;
            assert_eq!(decode(&bad), None, "flip at {i}");
        }
        assert_eq!(decode(&file[..file.len() - 1]), None, "truncated");
    }
}
