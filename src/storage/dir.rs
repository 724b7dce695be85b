//! The few file operations storage needs, behind a trait, so the same storage code
//! runs on a real directory ([`FsDir`]) and on the simulator's disk
//! ([`MemDir`](super::MemDir)).
//!
//! The trait is deliberately flat (whole files by name, no handles): storage only
//! ever appends to one log, rewrites small files through a temp file and a rename,
//! and reads files whole at start. Durability is explicit: nothing written is
//! promised until `sync_file`, and no create, rename or remove until `sync_dir`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::StorageError;

/// Replaces (or creates) `name` with `bytes` so that a crash leaves either
/// the old file or the new one, and the new one is durable when this returns:
/// write `temp`, fsync it, rename it over `name`, fsync the directory.
pub(crate) fn replace_durably<D: Dir>(
    dir: &mut D,
    temp: &str,
    name: &str,
    bytes: &[u8],
) -> io::Result<()> {
    dir.write_new(temp, bytes)?;
    dir.sync_file(temp)?;
    dir.rename(temp, name)?;
    dir.sync_dir()
}

/// A flat directory of files, with explicit durability.
pub trait Dir {
    /// The names of the regular files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// The whole content of `name`; an error (not an allocation) when the file is
    /// longer than `max_bytes`, so a damaged or foreign file cannot exhaust memory.
    fn read(&self, name: &str, max_bytes: u64) -> io::Result<Vec<u8>>;
    /// Creates `name` (or truncates it) and writes `bytes`.
    fn write_new(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Appends `bytes` to `name`, creating it when missing.
    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Cuts `name` to `len` bytes.
    fn set_len(&mut self, name: &str, len: u64) -> io::Result<()>;
    /// Makes the content of `name` durable.
    fn sync_file(&mut self, name: &str) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to` atomically.
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Makes the directory entries (creates, renames, removes) durable.
    fn sync_dir(&mut self) -> io::Result<()>;
}

/// A real directory on disk.
#[derive(Debug)]
pub struct FsDir {
    path: PathBuf,
    /// The file last appended to, kept open because the log takes one append per
    /// event-loop round and reopening it each time costs a path lookup per round.
    /// Dropped whenever that file is cut, replaced, renamed or removed, so it never
    /// points at a stale inode.
    append_file: Option<(String, File)>,
}

impl FsDir {
    /// Opens the directory at `path`, creating it (and its parents) when missing.
    pub fn open(path: impl AsRef<Path>) -> Result<FsDir, StorageError> {
        let path = path.as_ref().to_path_buf();
        fs::create_dir_all(&path).map_err(|source| StorageError::Io {
            context: format!("creating data dir {}", path.display()),
            source,
        })?;
        Ok(FsDir {
            path,
            append_file: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Adds the full path to an error, so a message names the file a user can inspect.
    fn with_path(&self, name: &str, error: io::Error) -> io::Error {
        let path = self.file_path(name);
        io::Error::new(error.kind(), format!("{}: {error}", path.display()))
    }

    /// Forgets the cached append handle when an operation changes what `name` is.
    fn forget(&mut self, name: &str) {
        if self.append_file.as_ref().is_some_and(|(n, _)| n == name) {
            self.append_file = None;
        }
    }
}

impl Dir for FsDir {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.path).map_err(|e| self.with_path("", e))? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            // Names storage writes are ASCII; anything else is not ours to read.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, name: &str, max_bytes: u64) -> io::Result<Vec<u8>> {
        let run = || -> io::Result<Vec<u8>> {
            let file = File::open(self.file_path(name))?;
            let len = file.metadata()?.len();
            if len > max_bytes {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("file is {len} bytes, more than the {max_bytes}-byte limit"),
                ));
            }
            let mut bytes = Vec::with_capacity(len as usize);
            // `take` keeps the limit even if the file grows while it is read.
            file.take(max_bytes).read_to_end(&mut bytes)?;
            Ok(bytes)
        };
        run().map_err(|e| self.with_path(name, e))
    }

    fn write_new(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.forget(name);
        let mut file = File::create(self.file_path(name)).map_err(|e| self.with_path(name, e))?;
        file.write_all(bytes).map_err(|e| self.with_path(name, e))
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        if self.append_file.as_ref().is_none_or(|(n, _)| n != name) {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.file_path(name))
                .map_err(|e| self.with_path(name, e))?;
            self.append_file = Some((name.to_string(), file));
        }
        let (_, file) = self
            .append_file
            .as_mut()
            .expect("append handle set just above");
        let result = file.write_all(bytes);
        result.map_err(|e| self.with_path(name, e))
    }

    fn set_len(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.forget(name);
        let run = || {
            OpenOptions::new()
                .write(true)
                .open(self.file_path(name))?
                .set_len(len)
        };
        run().map_err(|e| self.with_path(name, e))
    }

    fn sync_file(&mut self, name: &str) -> io::Result<()> {
        // fdatasync is enough: it flushes the data and the size, which is all a
        // reader needs; the timestamps fdatasync skips are never read.
        let result = match &self.append_file {
            Some((n, file)) if n == name => file.sync_data(),
            _ => File::open(self.file_path(name)).and_then(|f| f.sync_data()),
        };
        result.map_err(|e| self.with_path(name, e))
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.forget(from);
        self.forget(to);
        fs::rename(self.file_path(from), self.file_path(to)).map_err(|e| self.with_path(from, e))
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.forget(name);
        fs::remove_file(self.file_path(name)).map_err(|e| self.with_path(name, e))
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        // On Linux a directory is fsynced through a read-only handle on it.
        let run = || File::open(&self.path)?.sync_all();
        run().map_err(|e| self.with_path("", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_survive_a_rename_of_another_file_and_reopen_after_a_cut() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut dir = FsDir::open(tmp.path().join("data")).expect("open");
        dir.append("log", b"abc").expect("append");
        dir.write_new("x.tmp", b"x").expect("write");
        dir.rename("x.tmp", "x").expect("rename");
        dir.append("log", b"def").expect("append");
        dir.set_len("log", 4).expect("cut");
        dir.append("log", b"Z").expect("append after cut");
        dir.sync_file("log").expect("sync");
        dir.sync_dir().expect("sync dir");
        assert_eq!(dir.read("log", 100).expect("read"), b"abcdZ");
        assert_eq!(dir.list().expect("list"), vec!["log", "x"]);
    }

    #[test]
    fn read_refuses_a_file_longer_than_the_limit() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut dir = FsDir::open(tmp.path()).expect("open");
        dir.write_new("big", &[0u8; 10]).expect("write");
        let err = dir.read("big", 9).expect_err("over the limit");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("big"), "{err}");
    }
}
