//! What the cluster runner shows an operator: a `/status` page listing every process (up or
//! down, pid, restarts, unasked exits, address, log) and `/metrics` with the same per process,
//! plus the kills chaos made, on the runner's own listener (`--status-listen`).

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::process::{Kind, Supervised};

/// `process` and `kind` labels.
type Labels = Vec<(&'static str, String)>;

fn labels(p: &Supervised) -> Labels {
    vec![
        ("process", p.spec().name()),
        ("kind", p.spec().kind.name().to_owned()),
    ]
}

/// The runner's metrics.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    up: Family<Labels, Gauge>,
    restarts: Family<Labels, Counter>,
    exits: Family<Labels, Counter>,
    kills: Family<Vec<(&'static str, String)>, Counter>,
    apis: Gauge,
    api_load: Gauge,
    workers: Gauge,
    worker_lag: Gauge,
}

impl ClusterMetrics {
    /// Registers every family in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "ticket_cluster_process_up",
            "1 while the process runs, 0 while it is down (between an exit or a kill and its restart)",
            m.up.clone(),
        );
        registry.register(
            "ticket_cluster_process_restarts",
            "Times the process was started again, after exiting unasked or being killed by chaos",
            m.restarts.clone(),
        );
        registry.register(
            "ticket_cluster_process_exits",
            "Times the process exited without being asked to (a crash, a failed start)",
            m.exits.clone(),
        );
        registry.register(
            "ticket_cluster_apis",
            "API processes running, as the API autoscaler last counted them",
            m.apis.clone(),
        );
        registry.register(
            "ticket_cluster_api_load",
            "Requests in flight or queued per API, summed over every balancer, as the API autoscaler last read it",
            m.api_load.clone(),
        );
        registry.register(
            "ticket_cluster_workers",
            "Worker processes running, as the worker autoscaler last counted them",
            m.workers.clone(),
        );
        registry.register(
            "ticket_cluster_worker_lag",
            "Purchases queued and not yet decided, as the worker autoscaler last read it",
            m.worker_lag.clone(),
        );
        registry.register(
            "ticket_cluster_chaos_kills",
            "Processes SIGKILLed on purpose by chaos mode, by kind",
            m.kills.clone(),
        );
        m
    }

    /// Brings the per-process series up to date with the supervisor's state.
    pub fn refresh(&self, processes: &[Arc<Supervised>]) {
        for p in processes {
            let l = labels(p);
            let s = p.state();
            self.up.get_or_create(&l).set(i64::from(s.pid().is_some()));
            catch_up(&self.restarts.get_or_create(&l), s.restarts());
            catch_up(&self.exits.get_or_create(&l), s.crashes());
        }
    }

    /// What the API autoscaler last saw: `apis` running, `load` requests per API.
    pub fn apis_now(&self, apis: usize, load: u64) {
        self.apis.set(i64::try_from(apis).unwrap_or(i64::MAX));
        self.api_load.set(i64::try_from(load).unwrap_or(i64::MAX));
    }

    /// What the worker autoscaler last saw: `workers` running, `lag` purchases queued.
    pub fn workers_now(&self, workers: usize, lag: u64) {
        self.workers.set(i64::try_from(workers).unwrap_or(i64::MAX));
        self.worker_lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
    }

    /// Counts a kill by chaos.
    pub fn killed(&self, kind: Kind) {
        self.kills
            .get_or_create(&vec![("kind", kind.name().to_owned())])
            .inc();
    }
}

/// Raises `counter` to `total` (counters only go up; the supervisor's totals do too).
fn catch_up(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// The `/status` page: one line per process.
pub fn page(processes: &[Arc<Supervised>]) -> String {
    let up = processes
        .iter()
        .filter(|p| p.state().pid().is_some())
        .count();
    let mut out = format!(
        "ticketrush cluster: {} processes, {up} up\n\n{:<12} {:>8}  {:<5} {:>8} {:>6}  {:<28} {}\n",
        processes.len(),
        "process",
        "pid",
        "state",
        "restarts",
        "exits",
        "address",
        "log"
    );
    for p in processes {
        let s = p.state();
        let (pid, state) = match s.pid() {
            Some(pid) => (pid.to_string(), "up"),
            None => ("-".to_owned(), "DOWN"),
        };
        let _ = writeln!(
            out,
            "{:<12} {pid:>8}  {state:<5} {:>8} {:>6}  {:<28} {}",
            p.spec().name(),
            s.restarts(),
            s.crashes(),
            p.spec().address,
            p.spec().log.display()
        );
    }
    out
}

/// The page as [`plumbing::metrics::Page`], over the cluster's members as they are at each
/// request.
pub fn status_page(members: super::members::Members) -> plumbing::metrics::Page {
    Arc::new(move || page(&members.all()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::process::{ProcessSpec, Supervised};
    use std::time::Duration;

    #[tokio::test]
    async fn the_page_and_the_metrics_follow_each_process() {
        let dir = tempfile::tempdir().unwrap();
        let spec = |index: usize, script: &str| ProcessSpec {
            kind: Kind::Api,
            index,
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: Vec::new(),
            log: dir.path().join(format!("api-{index}.log")),
            address: format!("http://127.0.0.1:{index}"),
            listen: None,
        };
        let processes = vec![
            Arc::new(Supervised::start(spec(1, "exec sleep 60"))),
            Arc::new(Supervised::start(spec(2, "exec sleep 60"))),
        ];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while processes.iter().any(|p| p.state().pid().is_none()) {
            assert!(tokio::time::Instant::now() < deadline, "both start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(processes[1].kill(Duration::from_secs(30)).await);

        let text = page(&processes);
        assert!(
            text.starts_with("ticketrush cluster: 2 processes, 1 up"),
            "{text}"
        );
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap()
                .to_owned()
        };
        assert!(line("api 1").contains(" up "), "{text}");
        assert!(line("api 2").contains("DOWN") && line("api 2").contains("http://127.0.0.1:2"));

        let mut registry = Registry::default();
        let metrics = ClusterMetrics::new(&mut registry);
        metrics.refresh(&processes);
        metrics.killed(Kind::Api);
        let text = plumbing::metrics::encode(&registry).unwrap();
        assert!(
            text.contains(r#"ticket_cluster_process_up{process="api 1",kind="api"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"ticket_cluster_process_up{process="api 2",kind="api"} 0"#));
        assert!(text.contains(r#"ticket_cluster_chaos_kills_total{kind="api"} 1"#));
        for p in &processes {
            p.stop(Duration::from_secs(5)).await;
        }
    }
}
