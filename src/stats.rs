//! What `synwall stats` and the metrics endpoint show: the snapshot the
//! control loop publishes, below both `run` (which fills it) and `metrics`
//! (which renders it).

use serde::{Deserialize, Serialize};

use crate::handoff::proxy::ProxySnapshot;
use crate::worker::WorkerSnapshot;

/// Everything `synwall stats` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Interface served.
    pub interface: String,
    /// XDP mode in effect.
    pub xdp_mode: &'static str,
    /// Per worker (queue order).
    pub workers: Vec<WorkerEntry>,
    /// The XDP program's counters, summed over CPUs.
    pub xdp: std::collections::BTreeMap<&'static str, u64>,
    /// Proxy-mode counters (absent in kernel mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxySnapshot>,
    /// Seconds since the datapath started.
    pub uptime_secs: u64,
    /// The key epoch cookies are minted with now.
    pub epoch: u64,
    /// The minting secret's fingerprint (docs/cookie.md §2): equal on every
    /// node of a fleet.
    pub secret_fingerprint: String,
    /// The fingerprint of the rollover's other, accepted secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_fingerprint: Option<String>,
    /// Reloads applied.
    pub reloads_ok: u64,
    /// Reloads rejected (the configuration stayed as it was).
    pub reloads_failed: u64,
    /// An attack is on (the `[attack]` detector).
    pub under_attack: bool,
    /// Attacks seen since the start.
    pub attacks: u64,
    /// Whether the XDP program's answers leave the interface.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp_answers: Option<XdpAnswers>,
}

/// One worker in a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct WorkerEntry {
    /// Receive queue.
    pub queue: u32,
    /// CPU it is pinned to.
    pub cpu: usize,
    /// Its counters.
    #[serde(flatten)]
    pub counters: WorkerSnapshot,
}

/// The state of the program's answers, for `stats`, `status` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpAnswers {
    /// `on`: XDP answers; `off`: they were seen to fail, the workers and
    /// the kernel answer.
    pub state: String,
    /// Whether the driver's counters are watched (false: the driver has
    /// none, or generic XDP sends through the kernel's stack).
    pub watched: bool,
    /// Why the state is what it is.
    pub reason: String,
    /// The interface's driver.
    pub driver: String,
    /// XDP_TX frames the driver failed to send since synwall started.
    pub failed: u64,
    /// Answers are known to leave (a NIC's wire in native mode, generic
    /// XDP on a veth, a veth whose driver counted them sent): `synack =
    /// "auto"` answers in XDP first, not only when a worker falls behind.
    /// Judged for `synack = "auto"` only (false otherwise).
    #[serde(default)]
    pub leaving: bool,
}
