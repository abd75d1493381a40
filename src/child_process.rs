//! Children that die with drover: a redis-server of `drover dev` or of a
//! test, and every exec handler's program. A process killed with SIGKILL
//! runs no destructor, so the kernel is asked to kill the child when its
//! parent dies (`PR_SET_PDEATHSIG`). Note that the signal follows the
//! *thread* that forked the child: spawn from a thread that lives as long
//! as the child should (`redis_server` keeps one for that).

/// A `pre_exec` hook for a child that must not outlive this process. It
/// also stops the child at once if the parent died before the hook ran,
/// since such a parent never sends the signal.
pub(crate) fn die_with_parent() -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
    let parent = std::process::id();
    move || {
        // prctl and getppid are async-signal-safe, and the errors are built
        // without allocating (the child of a threaded parent must not).
        // SAFETY: both calls take no pointers into our memory.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
        }
        Ok(())
    }
}
