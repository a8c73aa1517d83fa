//! Per-thread seccomp filters (seccompiler). Each Kiln thread installs the filter for its role
//! as its first act. A blocked syscall traps: the handler names the syscall on stderr and the
//! process exits with status 159, so a missing rule is obvious rather than mysterious.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Which thread a filter is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadRole {
    /// Runs KVM_RUN and device register accesses.
    Vcpu,
    /// Runs device I/O (files, sockets, event fds).
    Devices,
    /// Serves the control socket.
    Api,
    /// The `vmm` binary's main thread after start-up: waits and tears down.
    Main,
}

/// Syscalls every thread needs: memory, locking, time, signals, logging, exit.
const COMMON: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_futex,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_sched_yield,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_tgkill,
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_rseq,
    libc::SYS_statx,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_lseek,
    // Devices remove their socket files when dropped, on whichever thread drops them last.
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    // The SIGINT/SIGTERM handler (signal-hook) wakes its thread with send(2) on a socket
    // pair, on whichever thread the signal lands.
    libc::SYS_sendto,
    // std's HashMap seeds its hasher from getrandom(2) the first time a thread makes one.
    libc::SYS_getrandom,
    // The vsock device's timeout timer, made when the guest activates it (a vCPU thread).
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
];

fn role_syscalls(role: ThreadRole) -> &'static [i64] {
    match role {
        ThreadRole::Vcpu => &[libc::SYS_ioctl, libc::SYS_epoll_ctl, libc::SYS_dup],
        ThreadRole::Devices => &[
            libc::SYS_epoll_wait,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_ctl,
            libc::SYS_readv,
            libc::SYS_pread64,
            libc::SYS_pwrite64,
            libc::SYS_preadv,
            libc::SYS_pwritev,
            libc::SYS_fsync,
            libc::SYS_fdatasync,
            libc::SYS_sendto,
            libc::SYS_recvfrom,
            libc::SYS_sendmsg,
            libc::SYS_recvmsg,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_accept4,
            libc::SYS_shutdown,
            libc::SYS_getsockopt,
            libc::SYS_setsockopt,
            libc::SYS_getrandom,
            libc::SYS_ioctl,
            libc::SYS_dup,
        ],
        ThreadRole::Api => &[
            libc::SYS_accept4,
            libc::SYS_accept,
            libc::SYS_recvfrom,
            libc::SYS_sendto,
            libc::SYS_shutdown,
            libc::SYS_poll,
            libc::SYS_ppoll,
            // Snapshots run on this thread: KVM state and dirty log (ioctl), the pagemap
            // (pread64), the memory file (ftruncate, pwrite64, fsync), the snapshot directory
            // (mkdir, renameat2; a failed or stale one is removed: getdents64) and the
            // parent's canonical path (readlink).
            libc::SYS_ioctl,
            libc::SYS_pread64,
            libc::SYS_pwrite64,
            libc::SYS_ftruncate,
            libc::SYS_fsync,
            libc::SYS_mkdir,
            libc::SYS_readlink,
            libc::SYS_getdents64,
            libc::SYS_renameat2,
            // Write caches are written back to their images before a snapshot, and a
            // power_cut writes the blocks that survive: spill-file reads (pread64, above),
            // image writes (pwritev) and syncs (fdatasync).
            libc::SYS_pwritev,
            libc::SYS_fdatasync,
        ],
        ThreadRole::Main => &[
            // An orderly end writes write caches back to their disk images: spill-file reads
            // (pread64), image writes (pwritev) and syncs (fdatasync).
            libc::SYS_pread64,
            libc::SYS_pwritev,
            libc::SYS_fdatasync,
            libc::SYS_shutdown,
            libc::SYS_ioctl,
            libc::SYS_epoll_ctl,
            libc::SYS_munlock,
            libc::SYS_sigaltstack,
            libc::SYS_poll,
        ],
    }
}

/// glibc's malloc opens /proc/sys/vm/overcommit_memory (read-only, close-on-exec) the first
/// time it shrinks a thread arena's heap, on any thread; no other open is allowed.
fn read_only_open() -> Result<SeccompRule, seccompiler::BackendError> {
    let flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
    SeccompRule::new(vec![SeccompCondition::new(
        2,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        flags,
    )?])
}

/// openat(2) with exactly `flags`.
fn open_with(flags: i32) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(vec![SeccompCondition::new(
        2,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        flags as u64,
    )?])
}

/// The opens a snapshot makes on the API thread: its new files (create-exclusive), the
/// directories it fsyncs, and the directory walk that removes a failed attempt.
fn snapshot_opens() -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    let cloexec = libc::O_CLOEXEC;
    [
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | cloexec,
        libc::O_RDONLY | libc::O_DIRECTORY | cloexec,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | cloexec,
    ]
    .into_iter()
    .map(open_with)
    .collect()
}

/// Builds the BPF program for `role`.
pub fn filter_for(role: ThreadRole) -> Result<BpfProgram, seccompiler::BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = COMMON
        .iter()
        .chain(role_syscalls(role))
        .map(|&nr| (nr, vec![]))
        .collect();
    let mut opens = vec![read_only_open()?];
    if role == ThreadRole::Api {
        opens.extend(snapshot_opens()?);
    }
    rules.insert(libc::SYS_openat, opens);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?;
    filter.try_into()
}

/// Installs the filter for `role` on the calling thread. Failure is logged, not fatal to the
/// guest, because a missing filter only weakens isolation.
pub fn apply(role: ThreadRole) {
    install_sigsys_reporter();
    match filter_for(role) {
        Ok(prog) => {
            if let Err(e) = seccompiler::apply_filter(&prog) {
                tracing::error!("cannot install seccomp filter for {role:?} thread: {e}");
            }
        }
        Err(e) => tracing::error!("cannot build seccomp filter for {role:?} thread: {e}"),
    }
}

fn install_sigsys_reporter() {
    extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // siginfo for SIGSYS carries the syscall number at si_syscall (offset 24 on x86_64:
        // after si_signo, si_errno, si_code, padding and si_call_addr).
        // SAFETY: the kernel hands a valid siginfo_t for SIGSYS.
        let nr = unsafe { *((info as *const u8).add(24) as *const i32) };
        let mut msg = *b"kiln vmm: seccomp blocked syscall           \n";
        let mut n = nr.unsigned_abs();
        let mut i = msg.len() - 2;
        loop {
            msg[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 || i == 35 {
                break;
            }
            i -= 1;
        }
        // SAFETY: write(2) and _exit(2) are async-signal-safe.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(159);
        }
    }
    let _ = vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, on_sigsys);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_compiles() {
        for role in [
            ThreadRole::Vcpu,
            ThreadRole::Devices,
            ThreadRole::Api,
            ThreadRole::Main,
        ] {
            assert!(!filter_for(role).unwrap().is_empty());
        }
    }

    #[test]
    fn only_read_only_opens_pass() {
        // SAFETY: the child applies a filter, tries two opens and exits with what it saw.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            apply(ThreadRole::Vcpu);
            let path = c"/proc/sys/vm/overcommit_memory";
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                unsafe { libc::_exit(1) };
            }
            // A write open is not allowed: this traps and exits 159.
            unsafe {
                libc::open(
                    c"/tmp/kiln-seccomp-probe".as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT,
                    0o600,
                )
            };
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 159);
    }

    #[test]
    fn blocked_syscall_is_reported_and_exits_159() {
        // Run in a child process so the filter does not land on the test harness.
        // SAFETY: the child only applies a filter, makes a syscall and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            apply(ThreadRole::Vcpu);
            // socket(2) is not allowed on vCPU threads.
            unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 159);
    }

    /// Writes a write cache holding unflushed data (some of it spilled to its file) back to
    /// its image under `role`'s filter, in a child process; returns the child's exit status
    /// (159: a syscall was blocked) and the image afterwards.
    fn write_back_under(role: ThreadRole, power_cut: bool) -> (i32, Vec<u8>) {
        use devices::virtio::block::backend::{BlockBackend, GuestSlice, RawFile, WriteCache};
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::write(&image, vec![0u8; 64 << 10]).unwrap();
        let raw = RawFile::open(&image, false).unwrap();
        let spill = tempfile::tempfile().unwrap();
        // One block in memory, the rest spilled.
        let mut cache = WriteCache::new(Box::new(raw), spill, 4096);
        for block in 0..4u64 {
            let mut data = vec![block as u8 + 1; 4096];
            cache
                .write(block * 4096, &[GuestSlice::from(&mut data[..])])
                .unwrap();
        }
        let handle = cache.handle();
        let prog = filter_for(role).unwrap();
        // SAFETY: the child applies a filter, writes the cache back and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            install_sigsys_reporter();
            let ok = seccompiler::apply_filter(&prog).is_ok()
                && if power_cut {
                    handle.power_cut(0, 0, 1.0).is_ok()
                } else {
                    handle.flush().is_ok()
                };
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child died: {status:#x}");
        let after = std::fs::read(&image).unwrap();
        // This process's copy of the cache must not write anything back when dropped.
        handle.power_cut(0, 0, 0.0).unwrap();
        drop((cache, handle));
        (libc::WEXITSTATUS(status), after)
    }

    /// An orderly end (main thread), a snapshot and a power cut (API thread) write a write
    /// cache back under their threads' filters: spill reads, image writes and syncs pass.
    #[test]
    fn cache_write_back_passes_the_main_and_api_filters() {
        for (role, power_cut) in [
            (ThreadRole::Main, false),
            (ThreadRole::Api, false),
            (ThreadRole::Api, true),
        ] {
            let (code, image) = write_back_under(role, power_cut);
            assert_eq!(code, 0, "{role:?} (power cut: {power_cut})");
            for block in 0..4usize {
                assert!(
                    image[block * 4096..(block + 1) * 4096]
                        .iter()
                        .all(|&b| b == block as u8 + 1),
                    "{role:?}: block {block} not written back"
                );
            }
        }
        // A vCPU thread may not write disks: the same write-back traps there.
        assert_eq!(write_back_under(ThreadRole::Vcpu, false).0, 159);
    }
}
