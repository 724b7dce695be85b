//! The disk PowerFs serves: files and directories in memory, each with two
//! versions, what reads see now and what survives a power cut.
//!
//! What it keeps across [`Disk::cut_power`] is what a real disk promises and
//! no more: a file's bytes as of its last fsync (fdatasync), and a directory's
//! entries (creates, renames, unlinks) as of that directory's last fsync.
//! Everything else vanishes: bytes written since the last fsync, a file whose
//! name was never made durable, a rename whose directory was never synced
//! (the old name and old file come back). A file fsynced under a name that
//! was never made durable is lost with its name, as on a real disk.
//!
//! Inode numbers are never reused, so a kernel cache that still names an inode
//! from before a cut cannot reach a different file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};

/// The root directory's inode number (FUSE's).
pub const ROOT: u64 = 1;
/// A file may grow to this size; beyond it writes fail with ENOSPC, so a
/// runaway writer cannot eat the test machine's memory.
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// At most this many inodes at once, for the same reason.
pub const MAX_INODES: usize = 100_000;

/// A file's content now and as of its last fsync.
#[derive(Default)]
pub struct File {
    /// What reads see.
    pub data: Vec<u8>,
    /// What a power cut leaves.
    synced: Vec<u8>,
    /// `data` and `synced` agree below this offset: an fsync copies only what
    /// lies above it, so an fsync after an append costs the appended bytes and
    /// not the whole log.
    clean_below: usize,
}

impl File {
    fn mark_dirty_from(&mut self, offset: usize) {
        self.clean_below = self.clean_below.min(offset);
    }

    fn sync(&mut self) {
        self.synced.truncate(self.clean_below);
        self.synced
            .extend_from_slice(&self.data[self.clean_below..]);
        self.clean_below = self.data.len();
    }

    /// Goes back to the synced content; the bytes that were lost.
    fn revert(&mut self) -> u64 {
        let lost = (self.data.len() - self.clean_below) as u64;
        self.data.truncate(self.clean_below);
        self.data
            .extend_from_slice(&self.synced[self.clean_below..]);
        self.clean_below = self.data.len();
        lost
    }
}

/// A directory's entries now and as of its last fsync.
#[derive(Default)]
pub struct Dir {
    pub entries: BTreeMap<OsString, u64>,
    synced: BTreeMap<OsString, u64>,
    pub parent: u64,
}

pub enum Inode {
    File(File),
    Dir(Dir),
}

/// Why an operation failed, as the errno FUSE answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    NotFound,
    Exists,
    NotDir,
    IsDir,
    NotEmpty,
    NoSpace,
    Invalid,
}

/// What one power cut dropped, for the test's log.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cut {
    /// Unsynced bytes of surviving files that were dropped.
    pub bytes: u64,
    /// Files and directories that vanished with their unsynced names.
    pub inodes: usize,
}

pub struct Disk {
    pub inodes: HashMap<u64, Inode>,
    next_ino: u64,
    /// Counts, for the test's log: fsyncs of files and of directories.
    pub file_syncs: u64,
    pub dir_syncs: u64,
}

impl Default for Disk {
    fn default() -> Self {
        let root = Dir {
            parent: ROOT,
            ..Dir::default()
        };
        Disk {
            inodes: HashMap::from([(ROOT, Inode::Dir(root))]),
            next_ino: ROOT + 1,
            file_syncs: 0,
            dir_syncs: 0,
        }
    }
}

impl Disk {
    pub fn dir(&self, ino: u64) -> Result<&Dir, Fail> {
        match self.inodes.get(&ino) {
            Some(Inode::Dir(d)) => Ok(d),
            Some(Inode::File(_)) => Err(Fail::NotDir),
            None => Err(Fail::NotFound),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut Dir, Fail> {
        match self.inodes.get_mut(&ino) {
            Some(Inode::Dir(d)) => Ok(d),
            Some(Inode::File(_)) => Err(Fail::NotDir),
            None => Err(Fail::NotFound),
        }
    }

    pub fn file(&self, ino: u64) -> Result<&File, Fail> {
        match self.inodes.get(&ino) {
            Some(Inode::File(f)) => Ok(f),
            Some(Inode::Dir(_)) => Err(Fail::IsDir),
            None => Err(Fail::NotFound),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut File, Fail> {
        match self.inodes.get_mut(&ino) {
            Some(Inode::File(f)) => Ok(f),
            Some(Inode::Dir(_)) => Err(Fail::IsDir),
            None => Err(Fail::NotFound),
        }
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Fail> {
        self.dir(parent)?
            .entries
            .get(name)
            .copied()
            .ok_or(Fail::NotFound)
    }

    /// Creates an empty file or directory named `name` in `parent`.
    pub fn create(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<u64, Fail> {
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(Fail::Exists);
        }
        if self.inodes.len() >= MAX_INODES {
            return Err(Fail::NoSpace);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let inode = if dir {
            Inode::Dir(Dir {
                parent,
                ..Dir::default()
            })
        } else {
            Inode::File(File::default())
        };
        self.inodes.insert(ino, inode);
        self.dir_mut(parent)?.entries.insert(name.to_owned(), ino);
        Ok(ino)
    }

    pub fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<(), Fail> {
        let end = offset.saturating_add(bytes.len() as u64);
        if end > MAX_FILE_BYTES {
            return Err(Fail::NoSpace);
        }
        let (offset, end) = (offset as usize, end as usize);
        let file = self.file_mut(ino)?;
        if file.data.len() < end {
            file.data.resize(end, 0);
        }
        file.data[offset..end].copy_from_slice(bytes);
        file.mark_dirty_from(offset);
        Ok(())
    }

    pub fn set_len(&mut self, ino: u64, len: u64) -> Result<(), Fail> {
        if len > MAX_FILE_BYTES {
            return Err(Fail::NoSpace);
        }
        let file = self.file_mut(ino)?;
        let len = len as usize;
        file.mark_dirty_from(len.min(file.data.len()));
        file.data.resize(len, 0);
        Ok(())
    }

    /// fsync or fdatasync of a file (or of a directory through a file handle).
    pub fn sync(&mut self, ino: u64) -> Result<(), Fail> {
        match self.inodes.get_mut(&ino) {
            Some(Inode::File(f)) => f.sync(),
            Some(Inode::Dir(_)) => return self.sync_dir(ino),
            None => return Err(Fail::NotFound),
        }
        self.file_syncs += 1;
        Ok(())
    }

    /// fsync of a directory: its entries as they are now survive a cut.
    pub fn sync_dir(&mut self, ino: u64) -> Result<(), Fail> {
        let dir = self.dir_mut(ino)?;
        dir.synced = dir.entries.clone();
        self.dir_syncs += 1;
        Ok(())
    }

    pub fn unlink(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Fail> {
        let ino = self.lookup(parent, name)?;
        match (self.inodes.get(&ino), dir) {
            (Some(Inode::Dir(_)), false) => return Err(Fail::IsDir),
            (Some(Inode::File(_)), true) => return Err(Fail::NotDir),
            (Some(Inode::Dir(d)), true) if !d.entries.is_empty() => return Err(Fail::NotEmpty),
            _ => {}
        }
        self.dir_mut(parent)?.entries.remove(name);
        Ok(())
    }

    /// Moves `name` in `parent` to `new_name` in `new_parent`, replacing a file
    /// there (or an empty directory when a directory moves).
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
    ) -> Result<(), Fail> {
        let ino = self.lookup(parent, name)?;
        self.dir(new_parent)?;
        let moving_dir = matches!(self.inodes.get(&ino), Some(Inode::Dir(_)));
        if let Ok(old) = self.lookup(new_parent, new_name) {
            if old == ino {
                return Ok(());
            }
            match (self.inodes.get(&old), moving_dir) {
                (Some(Inode::Dir(d)), true) if !d.entries.is_empty() => return Err(Fail::NotEmpty),
                (Some(Inode::Dir(_)), false) => return Err(Fail::IsDir),
                (Some(Inode::File(_)), true) => return Err(Fail::NotDir),
                _ => {}
            }
        }
        if moving_dir && self.is_within(new_parent, ino) {
            return Err(Fail::Invalid);
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.dir_mut(new_parent)?
            .entries
            .insert(new_name.to_owned(), ino);
        if let Some(Inode::Dir(d)) = self.inodes.get_mut(&ino) {
            d.parent = new_parent;
        }
        Ok(())
    }

    /// Whether directory `ino` is `ancestor` or lies below it.
    fn is_within(&self, mut ino: u64, ancestor: u64) -> bool {
        for _ in 0..self.inodes.len() {
            if ino == ancestor {
                return true;
            }
            match self.dir(ino) {
                Ok(d) if ino != ROOT => ino = d.parent,
                _ => return false,
            }
        }
        false
    }

    /// The power cut: every directory goes back to its synced entries, every
    /// file to its synced bytes, and what no synced entry reaches is gone.
    pub fn cut_power(&mut self) -> Cut {
        let mut cut = Cut::default();
        for inode in self.inodes.values_mut() {
            match inode {
                Inode::File(f) => cut.bytes += f.revert(),
                Inode::Dir(d) => d.entries = d.synced.clone(),
            }
        }
        let before = self.inodes.len();
        self.keep_only(&HashSet::new());
        cut.inodes = before - self.inodes.len();
        // A directory that survived may have moved back under another parent.
        let parents: Vec<(u64, u64)> = (self.inodes.iter())
            .filter_map(|(ino, inode)| match inode {
                Inode::Dir(d) => Some(d.entries.values().map(move |child| (*child, *ino))),
                Inode::File(_) => None,
            })
            .flatten()
            .collect();
        for (child, parent) in parents {
            if let Some(Inode::Dir(d)) = self.inodes.get_mut(&child) {
                d.parent = parent;
            }
        }
        cut
    }

    /// Drops every inode that neither a current nor a synced entry reaches
    /// from the root, nor `open` (files still open though unlinked).
    pub fn keep_only(&mut self, open: &HashSet<u64>) {
        let mut reached: HashSet<u64> = open.iter().copied().collect();
        let mut todo = vec![ROOT];
        todo.extend(open.iter().copied());
        while let Some(ino) = todo.pop() {
            reached.insert(ino);
            if let Some(Inode::Dir(d)) = self.inodes.get(&ino) {
                for child in d.entries.values().chain(d.synced.values()) {
                    if !reached.contains(child) {
                        todo.push(*child);
                    }
                }
            }
        }
        self.inodes.retain(|ino, _| reached.contains(ino));
    }
}
