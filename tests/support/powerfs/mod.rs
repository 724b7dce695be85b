//! PowerFs: a FUSE filesystem of the project's own for tests of power loss
//! under real processes, as etcd's robustness tests use LazyFS. Processes
//! write through the mount as through any disk; the filesystem keeps every
//! write in memory and promises only what was fsynced, and on command "cuts
//! the power": everything not synced is gone ([`disk`] says exactly what is
//! kept). SIGKILL alone never shows a missing fsync, because the kernel's page
//! cache outlives the process; a power cut does.
//!
//! The filesystem is served by a thread of the test process (fuser's
//! background session) and unmounted when the [`PowerFs`] drops, even when the
//! test panics. The kernel is told to cache nothing (zero TTLs, direct I/O on
//! every open), so after a cut a restarted process sees the disk as it is, not
//! a page the kernel kept.

#![allow(dead_code)] // the process test and the chaos run use different parts

mod disk;
mod disks;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

pub use disk::{Cut, Disk};
use disk::{Fail, Inode};
pub use disks::Disks;

/// Nothing is cached by the kernel: every lookup and attribute comes here, so
/// a cut is seen at once.
const TTL: Duration = Duration::ZERO;

/// An open file or directory.
struct Handle {
    ino: u64,
    /// Opened with O_APPEND: writes go to the end of the file as this disk
    /// knows it, whatever offset the kernel computed from its cached size.
    append: bool,
}

struct State {
    disk: Disk,
    /// Open handles. A power cut closes them all: the processes that held
    /// them died with the machine, and a write they left in flight must not
    /// land on the disk after it came back.
    handles: HashMap<u64, Handle>,
    /// Handle numbers are never reused, so a late release or write of a
    /// handle from before a cut cannot touch a new one.
    next_fh: u64,
}

impl State {
    fn open(&mut self, ino: u64, flags: i32) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        let append = flags & libc::O_APPEND != 0;
        self.handles.insert(fh, Handle { ino, append });
        fh
    }

    /// The inode behind `fh`, when the handle is still open.
    fn handle(&self, fh: FileHandle, ino: INodeNo) -> Result<&Handle, Errno> {
        match self.handles.get(&fh.0) {
            Some(h) if h.ino == ino.0 => Ok(h),
            _ => Err(Errno::EBADF),
        }
    }
}

/// The FUSE side: turns kernel requests into [`Disk`] operations.
struct Fs {
    state: Arc<Mutex<State>>,
    uid: u32,
    gid: u32,
}

fn errno(fail: Fail) -> Errno {
    match fail {
        Fail::NotFound => Errno::ENOENT,
        Fail::Exists => Errno::EEXIST,
        Fail::NotDir => Errno::ENOTDIR,
        Fail::IsDir => Errno::EISDIR,
        Fail::NotEmpty => Errno::ENOTEMPTY,
        Fail::NoSpace => Errno::ENOSPC,
        Fail::Invalid => Errno::EINVAL,
    }
}

impl Fs {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn attr(&self, state: &State, ino: u64) -> Result<FileAttr, Errno> {
        let (kind, size, perm, nlink) = match state.disk.inodes.get(&ino) {
            Some(Inode::File(f)) => (FileType::RegularFile, f.data.len() as u64, 0o644, 1),
            Some(Inode::Dir(_)) => (FileType::Directory, 0, 0o755, 2),
            None => return Err(Errno::ENOENT),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        })
    }

    fn entry(&self, reply: ReplyEntry, result: Result<u64, Fail>) {
        let state = self.lock();
        match result.map_err(errno).and_then(|ino| self.attr(&state, ino)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

fn empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self.lock().disk.lookup(parent.0, name);
        self.entry(reply, found);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let state = self.lock();
        match self.attr(&state, ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.lock();
        let cut = size.map_or(Ok(()), |len| state.disk.set_len(ino.0, len));
        match cut.map_err(errno).and_then(|()| self.attr(&state, ino.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let made = self.lock().disk.create(parent.0, name, true);
        self.entry(reply, made);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.lock().disk.unlink(parent.0, name, false);
        empty(reply, result.map_err(errno));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.lock().disk.unlink(parent.0, name, true);
        empty(reply, result.map_err(errno));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !flags.is_empty() {
            return reply.error(Errno::EINVAL);
        }
        let result = (self.lock().disk).rename(parent.0, name, new_parent.0, new_name);
        empty(reply, result.map_err(errno));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.lock();
        if let Err(e) = state.disk.file(ino.0) {
            return reply.error(errno(e));
        }
        if flags.0 & libc::O_TRUNC != 0 {
            if let Err(e) = state.disk.set_len(ino.0, 0) {
                return reply.error(errno(e));
            }
        }
        let fh = state.open(ino.0, flags.0);
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.lock();
        let ino = match state.disk.lookup(parent.0, name) {
            Ok(_) if flags & libc::O_EXCL != 0 => return reply.error(Errno::EEXIST),
            Ok(ino) => state.disk.set_len(ino, 0).map(|()| ino),
            Err(_) => state.disk.create(parent.0, name, false),
        };
        let attr = ino.map_err(errno).and_then(|ino| self.attr(&state, ino));
        match attr {
            Ok(attr) => {
                let fh = state.open(attr.ino.0, flags);
                let flags = FopenFlags::FOPEN_DIRECT_IO;
                reply.created(&TTL, &attr, Generation(0), FileHandle(fh), flags);
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let state = self.lock();
        if let Err(e) = state.handle(fh, ino) {
            return reply.error(e);
        }
        match state.disk.file(ino.0) {
            Ok(f) => {
                let start = (offset as usize).min(f.data.len());
                let end = start.saturating_add(size as usize).min(f.data.len());
                reply.data(&f.data[start..end]);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.lock();
        let append = match state.handle(fh, ino) {
            Ok(h) => h.append,
            Err(e) => return reply.error(e),
        };
        let offset = match (append, state.disk.file(ino.0)) {
            (true, Ok(f)) => f.data.len() as u64,
            _ => offset,
        };
        match state.disk.write(ino.0, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _data: bool, reply: ReplyEmpty) {
        let mut state = self.lock();
        let result = state.handle(fh, ino).map(|_| ());
        let result = result.and_then(|()| state.disk.sync(ino.0).map_err(errno));
        empty(reply, result);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.lock();
        if let Err(e) = state.disk.dir(ino.0) {
            return reply.error(errno(e));
        }
        let fh = state.open(ino.0, flags.0);
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = self.lock();
        if let Err(e) = state.handle(fh, ino) {
            return reply.error(e);
        }
        let dir = match state.disk.dir(ino.0) {
            Ok(d) => d,
            Err(e) => return reply.error(errno(e)),
        };
        let dots = [(".".into(), ino.0), ("..".into(), dir.parent)];
        let listed = dots.into_iter().chain(dir.entries.clone());
        for (i, (name, child)) in listed.enumerate().skip(offset as usize) {
            let kind = match state.disk.inodes.get(&child) {
                Some(Inode::Dir(_)) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            let name: std::ffi::OsString = name;
            if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _data: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.lock();
        let result = state.handle(fh, ino).map(|_| ());
        let result = result.and_then(|()| state.disk.sync_dir(ino.0).map_err(errno));
        // Files replaced or removed for good since the last look can go now.
        let open: HashSet<u64> = state.handles.values().map(|h| h.ino).collect();
        state.disk.keep_only(&open);
        empty(reply, result);
    }
}

/// A mounted PowerFs; unmounted on drop.
pub struct PowerFs {
    state: Arc<Mutex<State>>,
    /// Taken on drop to unmount and join the serving thread.
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
}

impl PowerFs {
    /// Mounts an empty PowerFs on `mountpoint` (an existing empty directory),
    /// served by a thread of this process. Fails without /dev/fuse or without
    /// the right to mount.
    pub fn mount(mountpoint: &Path) -> io::Result<PowerFs> {
        let state = Arc::new(Mutex::new(State {
            disk: Disk::default(),
            handles: HashMap::new(),
            next_fh: 1,
        }));
        // SAFETY: geteuid and getegid take nothing and cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let fs = Fs {
            state: Arc::clone(&state),
            uid,
            gid,
        };
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("raftlb-powerfs".into())];
        let session = fuser::spawn_mount(fs, mountpoint, &config)?;
        Ok(PowerFs {
            state,
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops everything not synced, and closes every open handle. The
    /// processes writing here must be dead first (SIGKILLed and reaped).
    pub fn cut_power(&self) -> Cut {
        let mut state = self.lock();
        state.handles.clear();
        state.disk.cut_power()
    }

    /// How many file and directory fsyncs this disk has seen.
    pub fn syncs(&self) -> (u64, u64) {
        let state = self.lock();
        (state.disk.file_syncs, state.disk.dir_syncs)
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        if let Err(e) = session.umount_and_join() {
            // Busy (a process still has a file open): detach it now, the
            // kernel finishes the unmount when the last file closes.
            eprintln!(
                "powerfs: unmount {}: {e}; detaching",
                self.mountpoint.display()
            );
            if let Ok(path) = std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes())
            {
                // SAFETY: a valid NUL-terminated path; umount2 touches nothing else.
                unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}
