//! An in-memory disk for the deterministic simulator and the crash tests.
//!
//! It models what a power cut may leave behind, so tests can prove that storage
//! never relies on a write it did not fsync:
//! - each file has *durable* content (as of its last `sync_file`) and *current*
//!   content;
//! - directory entries (create, rename, remove) live in a current name -> file map
//!   and become durable only at `sync_dir`;
//! - [`MemDir::crash`] reverts the directory to its durable entries and each file to
//!   its durable content, except that a file that was only appended to since its
//!   last sync keeps a random prefix of the appended bytes (a torn write), chosen
//!   from the seed so a failing run replays exactly.
//!
//! [`MemDir::fail_after`] makes the disk refuse every change after a countdown, which
//! lets a test stop storage between any two of its operations and then crash.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::Dir;
use crate::raft::Rng;

/// A cheap handle on a shared in-memory disk: clones see the same files, so a test
/// keeps one while storage owns another.
#[derive(Clone, Debug, Default)]
pub struct MemDir {
    disk: Arc<Mutex<Disk>>,
}

#[derive(Debug, Default)]
struct Disk {
    files: HashMap<u64, MemFile>,
    current: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
    next_file_id: u64,
    /// `sync_file` plus `sync_dir` calls, so tests can check group commit.
    fsyncs: u64,
    /// Changes (writes, syncs, renames, removes) made so far.
    ops: u64,
    /// Changes allowed before the disk fails every further change (a crash point).
    ops_left: Option<u64>,
}

#[derive(Debug, Default)]
struct MemFile {
    durable: Vec<u8>,
    current: Vec<u8>,
    /// Something other than an append changed the file since its last sync, so a
    /// sync must copy it whole instead of just the appended tail.
    rewritten: bool,
}

impl MemDir {
    pub fn new() -> MemDir {
        MemDir::default()
    }

    /// Simulates a power cut: see the module docs for what survives.
    pub fn crash(&self, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut disk = self.lock();
        disk.current = disk.durable.clone();
        let live: Vec<u64> = disk.current.values().copied().collect();
        disk.files.retain(|id, _| live.contains(id));
        // Iterate in name order, not hash order, so the seed alone decides.
        for id in live {
            let file = disk.files.get_mut(&id).expect("live ids come from the map");
            if file.current.starts_with(&file.durable) {
                let extra = (file.current.len() - file.durable.len()) as u64;
                let kept = rng.range(0, extra + 1) as usize;
                file.current.truncate(file.durable.len() + kept);
            } else {
                file.current = file.durable.clone();
            }
            file.durable = file.current.clone();
        }
        disk.ops_left = None;
    }

    /// Lets `ops` more changes succeed, then fails every change until [`crash`](Self::crash).
    pub fn fail_after(&self, ops: u64) {
        self.lock().ops_left = Some(ops);
    }

    /// How many changes storage has made (to choose crash points for `fail_after`).
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    pub fn fsyncs(&self) -> u64 {
        self.lock().fsyncs
    }

    /// The current bytes of `name`, if it exists.
    pub fn file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        let disk = self.lock();
        let id = disk.current.get(name)?;
        Some(disk.files[id].current.clone())
    }

    /// Sets the bytes of `name`, durably and creating it if needed, as damage on
    /// the medium (or a file planted by a test) would.
    pub fn set_file_bytes(&self, name: &str, bytes: &[u8]) {
        let mut disk = self.lock();
        let file = disk.create(name);
        file.current = bytes.to_vec();
        file.durable = bytes.to_vec();
        let id = disk.current[name];
        disk.durable.insert(name.to_string(), id);
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        // Every change to the disk is a single assignment: well formed after a panic.
        crate::locks::lock(&self.disk)
    }

    /// Counts a change, or refuses it when the crash countdown ran out.
    fn change(&self) -> io::Result<MutexGuard<'_, Disk>> {
        let mut disk = self.lock();
        match disk.ops_left {
            Some(0) => return Err(io::Error::other("simulated crash: disk stopped")),
            Some(n) => disk.ops_left = Some(n - 1),
            None => {}
        }
        disk.ops += 1;
        Ok(disk)
    }
}

impl Disk {
    fn id_of(&self, name: &str) -> io::Result<u64> {
        self.current
            .get(name)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file")))
    }

    fn file_mut(&mut self, name: &str) -> io::Result<&mut MemFile> {
        let id = self.id_of(name)?;
        Ok(self.files.get_mut(&id).expect("ids in the map have files"))
    }

    fn create(&mut self, name: &str) -> &mut MemFile {
        let id = match self.current.get(name) {
            Some(id) => *id,
            None => {
                self.next_file_id += 1;
                let id = self.next_file_id;
                self.current.insert(name.to_string(), id);
                self.files.insert(id, MemFile::default());
                id
            }
        };
        self.files
            .get_mut(&id)
            .expect("created or found just above")
    }
}

impl Dir for MemDir {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.lock().current.keys().cloned().collect())
    }

    fn read(&self, name: &str, max_bytes: u64) -> io::Result<Vec<u8>> {
        let disk = self.lock();
        let id = disk.id_of(name)?;
        let bytes = &disk.files[&id].current;
        if bytes.len() as u64 > max_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name}: more than the {max_bytes}-byte limit"),
            ));
        }
        Ok(bytes.clone())
    }

    fn write_new(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut disk = self.change()?;
        let file = disk.create(name);
        file.current = bytes.to_vec();
        file.rewritten = true;
        Ok(())
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut disk = self.change()?;
        disk.create(name).current.extend_from_slice(bytes);
        Ok(())
    }

    fn set_len(&mut self, name: &str, len: u64) -> io::Result<()> {
        let mut disk = self.change()?;
        let file = disk.file_mut(name)?;
        file.current.resize(len as usize, 0);
        file.rewritten = true;
        Ok(())
    }

    fn sync_file(&mut self, name: &str) -> io::Result<()> {
        let mut disk = self.change()?;
        disk.fsyncs += 1;
        let file = disk.file_mut(name)?;
        if file.rewritten {
            file.durable = file.current.clone();
        } else {
            // Only appends since the last sync: copy the new tail, not the file,
            // so the simulator's cost per sync does not grow with the log.
            let synced = file.durable.len();
            file.durable.extend_from_slice(&file.current[synced..]);
        }
        file.rewritten = false;
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.change()?;
        let id = disk.id_of(from)?;
        disk.current.remove(from);
        disk.current.insert(to.to_string(), id);
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        let mut disk = self.change()?;
        disk.id_of(name)?;
        disk.current.remove(name);
        Ok(())
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        let mut disk = self.change()?;
        disk.fsyncs += 1;
        disk.durable = disk.current.clone();
        // Files no name reaches any more can never come back: free them, so a long
        // simulation does not keep every rewritten log.
        let Disk { files, durable, .. } = &mut *disk;
        files.retain(|id, _| durable.values().any(|v| v == id));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_synced_bytes_and_at_most_the_unsynced_appends() {
        for seed in 0..50 {
            let mut dir = MemDir::new();
            dir.append("log", b"synced").expect("append");
            dir.sync_file("log").expect("sync");
            dir.sync_dir().expect("sync dir");
            dir.append("log", b"-unsynced").expect("append");
            dir.crash(seed);
            let bytes = dir.file_bytes("log").expect("log survives");
            assert!(b"synced-unsynced".starts_with(&bytes), "seed {seed}");
            assert!(bytes.starts_with(b"synced"), "seed {seed}");
        }
    }

    #[test]
    fn crash_forgets_directory_changes_made_after_the_last_dir_sync() {
        let mut dir = MemDir::new();
        dir.write_new("a", b"1").expect("write");
        dir.sync_file("a").expect("sync");
        dir.sync_dir().expect("sync dir");
        dir.write_new("b.tmp", b"2").expect("write");
        dir.sync_file("b.tmp").expect("sync");
        dir.rename("b.tmp", "a").expect("rename");
        dir.crash(1);
        assert_eq!(dir.list().expect("list"), vec!["a"]);
        assert_eq!(dir.file_bytes("a").expect("a"), b"1");
    }

    #[test]
    fn fail_after_stops_changes_until_the_crash() {
        let mut dir = MemDir::new();
        dir.fail_after(1);
        dir.append("log", b"a").expect("first change allowed");
        assert!(dir.append("log", b"b").is_err());
        assert!(dir.read("log", 10).is_ok(), "reads still work");
        dir.crash(0);
        dir.append("log", b"c").expect("disk back after the crash");
        assert_eq!(dir.fsyncs(), 0);
    }
}
