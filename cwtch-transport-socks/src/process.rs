//! A child process in its own process group, stopped by its own pid when
//! dropped (also while unwinding from a panic). Never by name.

use core::time::Duration;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::Instant;

/// How long [`ProcessGuard::stop`] waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// Owns a spawned child; see the module docs.
#[derive(Debug)]
pub struct ProcessGuard {
    child: Child,
    pid: u32,
    exited: Option<ExitStatus>,
}

impl ProcessGuard {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(cmd: &mut Command) -> io::Result<Self> {
        let child = cmd.process_group(0).spawn()?;
        let pid = child.id();
        Ok(ProcessGuard {
            child,
            pid,
            exited: None,
        })
    }

    /// The child's pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `Some(status)` once the child has exited (it is then reaped).
    pub fn exit_status(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait()?;
        }
        Ok(self.exited)
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.exit_status(), Ok(None))
    }

    /// Stops the child: SIGTERM to its process group, then SIGKILL to it
    /// after [`STOP_GRACE`]; waits until it is reaped. Idempotent.
    pub fn stop(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.exit_status()? {
            return Ok(status);
        }
        // Not reaped yet, so the pid cannot have been reused.
        if let Ok(raw) = i32::try_from(self.pid)
            && let Some(pid) = rustix::process::Pid::from_raw(raw)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let status = self.child.wait()?;
        self.exited = Some(status);
        Ok(status)
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
