//! The five disks of a test cluster: one [`PowerFs`] per node, so that the
//! power can be cut on some nodes and not on others.

use std::io;
use std::path::{Path, PathBuf};

use super::{Cut, PowerFs};

/// One PowerFs per node, each mounted in a temp dir: unmounted (even on a
/// panic) before the temp dir goes. Drop it after the processes writing there.
pub struct Disks {
    pub disks: Vec<PowerFs>,
    _dir: tempfile::TempDir,
}

impl Disks {
    /// Mounts `n` PowerFs; Err says why FUSE cannot be used here (no
    /// /dev/fuse, no right to mount), a reason to skip. Other mount errors
    /// panic: they are bugs.
    pub fn mount(n: usize) -> Result<Disks, String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("no /dev/fuse on this machine".into());
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mut disks = Vec::new();
        for i in 0..n {
            let path = dir.path().join(format!("disk-{i}"));
            std::fs::create_dir(&path).expect("create a mount point");
            match PowerFs::mount(&path) {
                Ok(disk) => disks.push(disk),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound
                    ) =>
                {
                    return Err(format!(
                        "cannot mount a FUSE filesystem here ({e}); as a user other \
                         than root, Debian's fuse3 provides fusermount3"
                    ));
                }
                Err(e) => panic!("mount PowerFs on {}: {e}", path.display()),
            }
        }
        Ok(Disks { disks, _dir: dir })
    }

    /// The mount points, as the nodes' data dirs.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.disks.iter().map(|d| d.path().to_path_buf()).collect()
    }

    /// Cuts the power on the disks of `nodes`, which must be dead; what it
    /// dropped, summed.
    pub fn cut_power(&self, nodes: &[usize]) -> Cut {
        let mut total = Cut::default();
        for &i in nodes {
            let cut = self.disks[i].cut_power();
            total.bytes += cut.bytes;
            total.inodes += cut.inodes;
        }
        total
    }
}
