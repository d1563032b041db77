//! The child process of a stdio server: spawned in a process group of its own, shut down gracefully on request
//! (stdin closed, then SIGTERM, then SIGKILL) and always killed and reaped when dropped, without needing a
//! runtime (so no zombie is left behind, whenever and wherever the client is dropped).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use catena_core::{Error, Result};

/// What to start: program, arguments, environment, working directory, where its stderr goes.
#[derive(Debug)]
pub(crate) struct Spawn {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub env_clear: bool,
    pub current_dir: Option<PathBuf>,
    pub stderr: Option<Stdio>,
}

impl Spawn {
    /// `program args...` as one string, for messages.
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A running child process with piped stdin and stdout (taken out by [`ChildGuard::spawn`]).
pub(crate) struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// Starts the process; returns it with its stdin and stdout as tokio pipes. Must be called within a tokio
    /// runtime (the pipes register with its reactor).
    pub fn spawn(spec: &mut Spawn) -> Result<(ChildGuard, tokio::process::ChildStdout, tokio::process::ChildStdin)> {
        let mut command = Command::new(&spec.program);
        command.args(&spec.args).stdin(Stdio::piped()).stdout(Stdio::piped());
        if spec.env_clear {
            command.env_clear();
        }
        command.envs(spec.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &spec.current_dir {
            command.current_dir(dir);
        }
        command.stderr(spec.stderr.take().unwrap_or_else(Stdio::inherit));
        #[cfg(unix)]
        {
            // Its own process group: shutting it down also reaches the processes it started (npx -> node, uv -> python).
            use std::os::unix::process::CommandExt;
            command.process_group(0);
        }
        let mut child = command.spawn().map_err(|e| Error::Config {
            setting: "McpClient::stdio command".into(),
            problem: format!("`{}` cannot be started ({e})", spec.display()),
            hint: "check that the program is installed and on the PATH (or give its full path)".into(),
        })?;
        let mut guard = ChildGuard { child: None };
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        guard.child = Some(child);
        let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
            return Err(transport_error(spec, "the child process has no stdin or stdout pipe".into()));
        };
        let stdout = tokio::process::ChildStdout::from_std(stdout)
            .map_err(|e| transport_error(spec, format!("cannot read the child's stdout asynchronously: {e}")))?;
        let stdin = tokio::process::ChildStdin::from_std(stdin)
            .map_err(|e| transport_error(spec, format!("cannot write the child's stdin asynchronously: {e}")))?;
        Ok((guard, stdout, stdin))
    }

    /// The process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits up to `grace` for the process to exit by itself (its stdin is closed by then), then sends SIGTERM
    /// and waits `grace` again, then kills it. Returns its exit status.
    pub async fn shutdown(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.wait_for(grace).await {
            return Some(status);
        }
        self.signal(Signal::Term);
        if let Some(status) = self.wait_for(grace).await {
            return Some(status);
        }
        self.kill_and_reap()
    }

    async fn wait_for(&mut self, grace: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + grace;
        loop {
            let child = self.child.as_mut()?;
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                Ok(None) => return None,
                Err(_) => return self.kill_and_reap(),
            }
        }
    }

    /// Kills the process (and its process group) and waits for it: returns at once, since SIGKILL cannot be
    /// ignored.
    fn kill_and_reap(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        #[cfg(unix)]
        kill_group(child.id(), Signal::Kill);
        let _ = child.kill();
        child.wait().ok()
    }

    fn signal(&self, signal: Signal) {
        #[cfg(unix)]
        if let Some(child) = &self.child {
            kill_group(child.id(), signal);
        }
        #[cfg(not(unix))]
        let _ = signal;
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

#[derive(Clone, Copy)]
enum Signal {
    Term,
    #[cfg_attr(not(unix), allow(dead_code))]
    Kill,
}

#[cfg(unix)]
fn kill_group(pid: u32, signal: Signal) {
    let signal = match signal {
        Signal::Term => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    };
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a negative pid signals the process group the child leads (it was spawned with
        // process_group(0)); it touches no memory of ours.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

fn transport_error(spec: &Spawn, message: String) -> Error {
    Error::Transport { provider: format!("mcp stdio `{}`", spec.display()), message, source: None }
}
