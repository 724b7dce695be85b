//! Turning off glibc's per-thread cache of freed blocks (tcache) in a node.
//!
//! glibc gives every thread a cache of up to 7 freed blocks of each size up to
//! 1 KiB, which only that thread reuses and which `malloc_trim` cannot release
//! (to the arena those blocks are still in use). A node has a hundred threads
//! or more: one per client connection, a few of its own (when this was
//! measured, under tiny_http: 128 handlers, about 200 threads in all, and a
//! request was allocated by one thread and freed by another, so every such
//! cache filled up with request-sized blocks while the connection threads took
//! fresh ones from their arenas). Measured on the leader of a 5-node cluster after 150,000 note writes
//! from 64 clients: RSS 18.1 MiB, its arenas held 10.8 MiB of which 2.4 MiB free
//! and about 8 MiB "in use" against 2-3 MiB of live data (massif), so about
//! 30 KiB sat in each thread's cache. With the cache off: RSS 11.3 MiB, arenas
//! 4.6 MiB; after a million writes 19.4-20.5 MiB became 10.0-10.4 MiB (the
//! footprint benchmark's leader: 23.3 MiB became 10.0 MiB). Note writes
//! per second did not drop (medians of three 10 s runs at c64: 13,791 with the
//! cache, 13,772 without): the loop's time goes to fsync and sockets, not to
//! malloc. Fewer arenas (`arena_max` 2) or a lower trim threshold on top of
//! this saved nothing more (11.1-11.3 MiB at 150,000 writes).
//!
//! glibc reads its tunables only from the environment when a program starts
//! (`mallopt` has no tcache setting), so the node executes itself again, once,
//! with `GLIBC_TUNABLES` set: same pid, same arguments, same open files. It does
//! so first thing in `main`, before any thread exists.

use std::io;

/// The tunable, as glibc names it.
const TCACHE_COUNT: &str = "glibc.malloc.tcache_count";

/// The `GLIBC_TUNABLES` value to run with, or None when `current` already sets
/// the tcache count: ours after the re-exec (which ends the loop), or one the
/// user chose, which wins.
pub(crate) fn tunables_without_tcache(current: Option<&str>) -> Option<String> {
    let off = format!("{TCACHE_COUNT}=0");
    match current {
        Some(tunables)
            if tunables
                .split(':')
                .any(|t| t.split('=').next() == Some(TCACHE_COUNT)) =>
        {
            None
        }
        Some(tunables) if !tunables.is_empty() => Some(format!("{tunables}:{off}")),
        _ => Some(off),
    }
}

/// Executes this program again with glibc's tcache off, unless it already is
/// (see `tunables_without_tcache`). Returns only when nothing was to be done
/// (`Ok`) or the exec failed (`Err`; the node runs on with the cache, using a
/// few MiB more).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn exec_without_tcache() -> io::Result<()> {
    use std::os::unix::process::CommandExt;

    let current = match std::env::var_os("GLIBC_TUNABLES") {
        None => None,
        Some(value) => match value.into_string() {
            Ok(text) => Some(text),
            // Not UTF-8: the user's business, and not ours to rewrite.
            Err(_) => return Ok(()),
        },
    };
    let Some(tunables) = tunables_without_tcache(current.as_deref()) else {
        return Ok(());
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    // The binary's own path, not /proc/self/exe: the kernel names a process
    // after the file it executed, and `ps`, `top`, `pgrep raftlb-node` and
    // `killall raftlb-node` would all see "exe". A binary deleted in the
    // milliseconds since start makes the exec fail: the node runs on as is.
    let binary = std::env::current_exe()?;
    Err(std::process::Command::new(binary)
        .arg0(arg0)
        .args(args)
        .env("GLIBC_TUNABLES", tunables)
        .exec())
}

/// Other allocators have no such tunable; nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn exec_without_tcache() -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::tunables_without_tcache;

    #[test]
    fn tcache_is_turned_off_when_nothing_is_set() {
        assert_eq!(
            tunables_without_tcache(None).as_deref(),
            Some("glibc.malloc.tcache_count=0")
        );
        assert_eq!(
            tunables_without_tcache(Some("")).as_deref(),
            Some("glibc.malloc.tcache_count=0")
        );
    }

    #[test]
    fn other_tunables_of_the_user_are_kept() {
        assert_eq!(
            tunables_without_tcache(Some("glibc.malloc.arena_max=2")).as_deref(),
            Some("glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0")
        );
    }

    #[test]
    fn a_tcache_count_already_set_is_left_alone_so_the_exec_happens_once() {
        assert_eq!(
            tunables_without_tcache(Some("glibc.malloc.tcache_count=0")),
            None
        );
        assert_eq!(
            tunables_without_tcache(Some("glibc.malloc.arena_max=2:glibc.malloc.tcache_count=7")),
            None
        );
    }
}
