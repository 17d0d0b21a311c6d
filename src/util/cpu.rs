//! Cores for the console's engine work: all but one, so the terminal keeps a core.
//!
//! Measured with `benches/latency.py` on 2 cores during a 6.3M-row `run all`: with the engine on
//! both cores, one trial in five had a key take 91–115 ms to show (the terminal — tmux, sshd, the
//! pty — waited for a core; the console's own thread handles and draws a key in under 9 ms);
//! with the console's threads on one core, five of five stayed at 13–25 ms and the run took
//! ~15 % longer.

/// Keep this thread, and every thread it starts from now on (the engine runtime's workers and
/// their blocking threads inherit it), off one of the cores it may use, when it may use two or
/// more. Call it before starting the runtime. Does nothing where it cannot (other platforms).
pub fn leave_a_core_to_the_terminal() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: `set` is a plain bit set of `size` bytes that the calls read and write.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size, &mut set) != 0 {
                return;
            }
            let cores: Vec<usize> = (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect();
            let [.., _, last] = cores.as_slice() else { return };
            libc::CPU_CLR(*last, &mut set);
            if libc::sched_setaffinity(0, size, &set) != 0 {
                tracing::debug!("could not leave a core to the terminal; the console's engine uses every core");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The thread that asks, and the threads it starts afterwards, see one core fewer; a thread
    /// of one core keeps it.
    #[test]
    fn a_thread_and_its_children_leave_one_core() {
        let asked = std::thread::spawn(|| {
            let before = std::thread::available_parallelism().map_or(1, |n| n.get());
            super::leave_a_core_to_the_terminal();
            let after = std::thread::available_parallelism().map_or(1, |n| n.get());
            let child = std::thread::spawn(|| std::thread::available_parallelism().map_or(1, |n| n.get())).join().expect("child");
            (before, after, child)
        });
        let (before, after, child) = asked.join().expect("thread");
        if cfg!(all(target_os = "linux", target_env = "gnu")) && before >= 2 {
            assert_eq!((after, child), (before - 1, before - 1));
        } else {
            assert_eq!(after, before);
        }
        let untouched = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(untouched, before, "other threads keep every core");
    }
}
