//! The blob store: payloads too large to keep inline in a step row (over
//! 1.5 MB by default) live as files in a directory, named by the row that
//! refers to them. Written and synced before the transaction that refers to
//! them, so a committed reference always has its file; a crash in between
//! leaves only an unreferenced file behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Result, StoreError};

#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    seq: AtomicU64,
    /// Remove the directory on drop (the blobs of a `:memory:` database).
    ephemeral: bool,
}

impl BlobStore {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
        Ok(BlobStore {
            dir,
            seq: AtomicU64::new(0),
            ephemeral: false,
        })
    }

    /// A private directory removed when the store is dropped.
    pub fn temporary() -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("flowstate-blobs-{}-{nanos}", std::process::id()));
        let mut store = Self::open(dir)?;
        store.ephemeral = true;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `data` durably and returns its name.
    pub fn put(&self, data: &[u8]) -> Result<String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!(
            "{nanos:x}-{}-{}.json",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.dir.join(&name);
        let mut f = fs::File::create(&path).map_err(|e| err(&path, e))?;
        f.write_all(data).map_err(|e| err(&path, e))?;
        f.sync_all().map_err(|e| err(&path, e))?;
        Ok(name)
    }

    pub fn get(&self, name: &str) -> Result<String> {
        let path = self.path_of(name)?;
        fs::read_to_string(&path).map_err(|e| err(&path, e))
    }

    /// Removes a blob; one already gone is not an error.
    pub fn delete(&self, name: &str) {
        if let Ok(path) = self.path_of(name)
            && let Err(e) = fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not delete blob");
        }
    }

    fn path_of(&self, name: &str) -> Result<PathBuf> {
        if name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(StoreError::Blob {
                path: name.into(),
                message: "not a blob name".into(),
            });
        }
        Ok(self.dir.join(name))
    }
}

impl Drop for BlobStore {
    fn drop(&mut self) {
        if self.ephemeral {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn err(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Blob {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_names_cannot_escape() {
        let store = BlobStore::temporary().unwrap();
        let name = store.put(b"{\"big\":true}").unwrap();
        assert_eq!(store.get(&name).unwrap(), "{\"big\":true}");
        store.delete(&name);
        assert!(store.get(&name).is_err());
        assert!(store.get("../etc/passwd").is_err());
        let dir = store.dir().to_path_buf();
        drop(store);
        assert!(!dir.exists());
    }
}
