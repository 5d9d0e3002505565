//! One supervised OS process of the cluster: started, restarted when it exits unasked (after a
//! pause that doubles while it keeps failing fast), killed on purpose for chaos and started again
//! after a delay, and stopped with SIGTERM (SIGKILL if it does not drain in time).
//!
//! Its standard output and error are appended to a log file of its own.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The first pause before a process that exited unasked is started again.
const FIRST_RESTART_PAUSE: Duration = Duration::from_millis(200);
/// The longest pause between restarts of a process that keeps exiting.
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(5);
/// A process that ran this long is healthy again: its next restart pause starts over.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// What a process is, for the status lines and for chaos to pick from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A broker node.
    Broker,
    /// A purchase worker process.
    Worker,
    /// An API instance.
    Api,
    /// A balancer.
    Balancer,
}

impl Kind {
    /// The word for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Broker => "broker",
            Self::Worker => "worker",
            Self::Api => "api",
            Self::Balancer => "balancer",
        }
    }
}

/// How to start a process.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// What it is.
    pub kind: Kind,
    /// Its number among its kind (from 1).
    pub index: usize,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment (secrets go here, not in `args`: they stay out of `ps`).
    pub env: Vec<(String, String)>,
    /// Where its output is appended.
    pub log: PathBuf,
    /// What it serves, for the status page (e.g. `http://127.0.0.1:8080`).
    pub address: String,
    /// The address it serves clients on, when it has one (the autoscaler registers an API's).
    pub listen: Option<std::net::SocketAddr>,
}

impl ProcessSpec {
    /// `api 2`, `broker 1`, ...
    pub fn name(&self) -> String {
        format!("{} {}", self.kind.name(), self.index)
    }
}

/// What the supervisor knows of a process now.
#[derive(Debug, Default)]
pub struct ProcessState {
    /// Its pid while running, 0 while down.
    pid: AtomicU32,
    /// Times it was started again (after exiting unasked or being killed).
    restarts: AtomicU64,
    /// Times it exited unasked.
    crashes: AtomicU64,
    /// Set once it is stopping for good.
    stopping: AtomicBool,
}

impl ProcessState {
    /// Its pid while running.
    pub fn pid(&self) -> Option<u32> {
        match self.pid.load(Ordering::Acquire) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// Times it was started again.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Times it exited without being asked to.
    pub fn crashes(&self) -> u64 {
        self.crashes.load(Ordering::Relaxed)
    }
}

enum Control {
    /// SIGKILL now, start again after this long.
    Kill(Duration, oneshot::Sender<bool>),
    /// SIGTERM, SIGKILL after the grace period; do not start again.
    Stop(Duration, oneshot::Sender<()>),
}

/// A process under supervision (its supervisor is a task of its own, which ends once the process
/// is stopped, or when this handle is dropped: the process is then ended at once).
#[derive(Debug)]
pub struct Supervised {
    spec: ProcessSpec,
    state: Arc<ProcessState>,
    control: mpsc::Sender<Control>,
}

impl Supervised {
    /// Starts the process and supervises it until [`Self::stop`].
    pub fn start(spec: ProcessSpec) -> Self {
        let state = Arc::new(ProcessState::default());
        let (control, rx) = mpsc::channel(4);
        tokio::spawn(supervise(spec.clone(), Arc::clone(&state), rx));
        Self {
            spec,
            state,
            control,
        }
    }

    /// How it was started.
    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// Its state now.
    pub fn state(&self) -> &ProcessState {
        &self.state
    }

    /// SIGKILLs the process and starts it again after `down`. False when it was not running
    /// (down already, or stopping).
    pub async fn kill(&self, down: Duration) -> bool {
        let (done, killed) = oneshot::channel();
        if self.control.send(Control::Kill(down, done)).await.is_err() {
            return false;
        }
        killed.await.unwrap_or(false)
    }

    /// Stops it for good: SIGTERM, and SIGKILL after `grace` if it has not exited. Returns once
    /// it has exited.
    pub async fn stop(&self, grace: Duration) {
        self.state.stopping.store(true, Ordering::Release);
        let (done, stopped) = oneshot::channel();
        if self.control.send(Control::Stop(grace, done)).await.is_ok() {
            let _ = stopped.await;
        }
    }
}

fn spawn(spec: &ProcessSpec) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(crate::SUPERVISOR_PID, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // If the supervisor's task goes away, the process goes with it.
        .kill_on_drop(true);
    cmd.spawn()
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Waits `pause` while the process is down. True when told to stop meanwhile (a stop, which is
/// answered, or the handle gone); a kill is answered "not running".
async fn stopped_during(pause: Duration, rx: &mut mpsc::Receiver<Control>) -> bool {
    let until = Instant::now() + pause;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(until) => return false,
            c = rx.recv() => match c {
                Some(Control::Kill(_, answer)) => {
                    let _ = answer.send(false);
                }
                Some(Control::Stop(_, done)) => {
                    let _ = done.send(());
                    return true;
                }
                None => return true,
            },
        }
    }
}

async fn supervise(spec: ProcessSpec, state: Arc<ProcessState>, mut rx: mpsc::Receiver<Control>) {
    let name = spec.name();
    let mut restart_pause = FIRST_RESTART_PAUSE;
    let mut first = true;
    loop {
        let mut child = match spawn(&spec) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(process = %name, error = %e, "cannot start");
                if stopped_during(restart_pause, &mut rx).await {
                    return;
                }
                restart_pause = (restart_pause * 2).min(MAX_RESTART_PAUSE);
                continue;
            }
        };
        if !first {
            state.restarts.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        state.pid.store(child.id().unwrap_or(0), Ordering::Release);
        let started = Instant::now();
        let next_pause = tokio::select! {
            status = child.wait() => {
                state.pid.store(0, Ordering::Release);
                state.crashes.fetch_add(1, Ordering::Relaxed);
                if started.elapsed() >= HEALTHY_AFTER {
                    restart_pause = FIRST_RESTART_PAUSE;
                }
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                tracing::warn!(process = %name, %status, pause = ?restart_pause, "exited unasked; starting it again");
                let p = restart_pause;
                restart_pause = (restart_pause * 2).min(MAX_RESTART_PAUSE);
                p
            }
            c = rx.recv() => match c {
                Some(Control::Kill(down, answer)) => {
                    signal(&child, rustix::process::Signal::KILL);
                    let _ = child.wait().await;
                    state.pid.store(0, Ordering::Release);
                    let _ = answer.send(true);
                    tracing::info!(process = %name, down = ?down, "killed (chaos)");
                    down
                }
                stop => {
                    let (grace, done) = match stop {
                        Some(Control::Stop(grace, done)) => (grace, Some(done)),
                        _ => (Duration::ZERO, None),
                    };
                    signal(&child, rustix::process::Signal::TERM);
                    if tokio::time::timeout(grace, child.wait()).await.is_err() {
                        tracing::warn!(process = %name, ?grace, "did not drain in time; killed");
                        signal(&child, rustix::process::Signal::KILL);
                        let _ = child.wait().await;
                    }
                    state.pid.store(0, Ordering::Release);
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
            },
        };
        if stopped_during(next_pause, &mut rx).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(dir: &std::path::Path, script: &str) -> ProcessSpec {
        ProcessSpec {
            kind: Kind::Worker,
            index: 1,
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("GREETING".into(), "hello".into())],
            log: dir.join("worker-1.log"),
            address: String::new(),
            listen: None,
        }
    }

    async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_process_that_exits_is_started_again_and_its_output_logged() {
        let dir = tempfile::tempdir().unwrap();
        let p = Supervised::start(sleeper(dir.path(), "echo $GREETING; exit 3"));
        wait_for("restarted twice", || p.state().restarts() >= 2).await;
        assert!(p.state().crashes() >= 2);
        p.stop(Duration::from_secs(1)).await;
        let log = std::fs::read_to_string(dir.path().join("worker-1.log")).unwrap();
        assert!(log.lines().filter(|l| *l == "hello").count() >= 2, "{log}");
    }

    #[tokio::test]
    async fn a_killed_process_comes_back_after_its_down_time_and_stop_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = Supervised::start(sleeper(dir.path(), "exec sleep 60"));
        wait_for("running", || p.state().pid().is_some()).await;
        let first = p.state().pid();
        assert!(p.kill(Duration::from_millis(300)).await, "it was running");
        assert_eq!(p.state().pid(), None, "down right after the kill");
        assert!(
            !p.kill(Duration::ZERO).await,
            "a process that is down is not killed"
        );
        wait_for("back", || p.state().pid().is_some()).await;
        assert_ne!(p.state().pid(), first);
        assert_eq!((p.state().restarts(), p.state().crashes()), (1, 0));
        let pid = p.state().pid().unwrap();
        p.stop(Duration::from_secs(5)).await;
        let alive = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap())
            .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok());
        assert!(!alive, "SIGTERM ended it");
    }

    #[tokio::test]
    async fn a_process_that_ignores_sigterm_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let p = Supervised::start(sleeper(
            dir.path(),
            "trap '' TERM; while :; do sleep 0.05; done",
        ));
        wait_for("running", || p.state().pid().is_some()).await;
        let began = Instant::now();
        p.stop(Duration::from_millis(300)).await;
        assert!(began.elapsed() >= Duration::from_millis(300));
        assert!(began.elapsed() < Duration::from_secs(5));
    }
}
