//! The one place with `unsafe`: setting up a container process between
//! `fork` and `exec` (network namespace, private mount namespace with the
//! pod's volumes bind-mounted at their mount paths, then the pod's user).
//!
//! Everything the child needs is prepared before `fork` (open namespace fd,
//! `CString` paths), so the `pre_exec` hook only makes raw syscalls and
//! never allocates, as required after `fork` in a multi-threaded process.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;

/// How to isolate one process.
#[derive(Debug, Default)]
pub struct Isolation {
    /// Network namespace to join (an open `/run/netns/<name>`).
    pub netns: Option<OwnedFd>,
    /// Bind mounts (host directory, mount path) in a private mount namespace.
    pub binds: Vec<(CString, CString)>,
    /// Credentials to switch to: uid, gid and supplementary groups.
    pub user: Option<(u32, u32, Vec<u32>)>,
}

/// `path` as a C string (paths with NUL bytes are refused).
pub fn c_path(path: &Path) -> std::io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == -1 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

/// Installs `iso` on `cmd` as a `pre_exec` hook.
pub fn isolate(cmd: &mut std::process::Command, iso: Isolation) {
    let Isolation { netns, binds, user } = iso;
    let root = c"/";
    let hook = move || -> std::io::Result<()> {
        if let Some(fd) = &netns {
            // SAFETY: setns(2) on a valid open namespace fd; a raw syscall, async-signal-safe.
            check(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) })?;
        }
        if !binds.is_empty() {
            // SAFETY: unshare(2) affects only this (single-threaded, forked) child.
            check(unsafe { libc::unshare(libc::CLONE_NEWNS) })?;
            // SAFETY: mount(2) with valid NUL-terminated strings prepared before fork; makes
            // every mount private so our binds never propagate back to the host.
            check(unsafe {
                libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
            })?;
            for (src, dst) in &binds {
                // SAFETY: as above; both paths are valid C strings owned by the closure.
                check(unsafe {
                    libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    )
                })?;
            }
        }
        if let Some((uid, gid, groups)) = &user {
            // SAFETY: setgroups(2) reads `groups.len()` gids from a live Vec; no allocation.
            check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })?;
            // SAFETY: plain credential syscalls; gid before uid, while we may still change it.
            check(unsafe { libc::setgid(*gid) })?;
            // SAFETY: as above.
            check(unsafe { libc::setuid(*uid) })?;
        }
        Ok(())
    };
    // SAFETY: the hook only makes raw syscalls on data prepared before fork (no allocation,
    // no locks), which is what `pre_exec` requires.
    unsafe {
        cmd.pre_exec(hook);
    }
}
