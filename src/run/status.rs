//! `synwall status`: what a running instance serves and how, in the spirit
//! of `xdp-loader status` and `bpftool net`: the interface and XDP mode,
//! program and link ids, copy or zero-copy per queue, what the kernel has,
//! the configuration in effect, the secret's fingerprint (never the
//! secret), the key epoch and the uptime.

use std::fmt::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::Datapath;
use super::reload::Live;
use crate::proto::cookie::Secret;
use crate::xdp::Attachment;

/// One BPF link.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkStatus {
    /// The link's id (`bpftool link show id N`).
    pub link_id: u32,
    /// The program's id (`bpftool prog show id N`).
    pub prog_id: u32,
    /// Still attached to the interface.
    pub attached: bool,
}

/// One receive queue and its worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueStatus {
    /// The queue.
    pub queue: u32,
    /// Its worker's CPU.
    pub cpu: usize,
    /// AF_XDP zero-copy (true) or copy mode; `None` if the kernel did not say.
    pub zero_copy: Option<bool>,
}

/// What `synwall status --json` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// synwall's version.
    pub version: String,
    /// Its process id.
    pub pid: u32,
    /// The configuration file (read again on reload).
    pub config: PathBuf,
    /// Seconds since the datapath started.
    pub uptime_secs: u64,
    /// The interface.
    pub interface: String,
    /// Its index.
    pub ifindex: u32,
    /// XDP attach mode in effect: "native" or "generic".
    pub xdp_mode: String,
    /// How XDP is attached: "link", "libxdp dispatcher", or libxdp alone.
    pub attach: String,
    /// The XDP program's link.
    pub xdp_link: Option<LinkStatus>,
    /// The TC hand-off program's link.
    pub handoff_link: Option<LinkStatus>,
    /// Receive queues served.
    pub queues: Vec<QueueStatus>,
    /// Who answers SYNs.
    pub synack: String,
    /// Where established connections go.
    pub handoff: String,
    /// How their sockets are made: "kfunc" or "repair".
    pub handoff_engine: String,
    /// Protected ports.
    pub ports: Vec<u16>,
    /// Protected addresses (empty: all).
    pub addresses: Vec<IpAddr>,
    /// The secret's fingerprint (docs/cookie.md §2).
    pub secret_fingerprint: String,
    /// Where the secret comes from: its file, or "random".
    pub secret_source: String,
    /// The fingerprint of the rollover's other secret, accepted but never
    /// minted with (`cookie.previous_secret_file`).
    pub previous_secret_fingerprint: Option<String>,
    /// The key epoch cookies are minted with.
    pub epoch: u64,
    /// Seconds per epoch.
    pub rotation_secs: u64,
    /// The clock difference between nodes that cookies tolerate.
    pub skew_secs: u64,
    /// Reloads applied and rejected.
    pub reloads_ok: u64,
    /// Reloads rejected.
    pub reloads_failed: u64,
    /// The running kernel.
    pub kernel: KernelStatus,
    /// `[attack] mode`.
    pub attack_mode: String,
    /// An attack is on.
    pub under_attack: bool,
    /// Attacks seen since the start.
    pub attacks: u64,
    /// Whether XDP answers leave the interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp_answers: Option<super::XdpAnswers>,
}

/// What the kernel was found to have.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelStatus {
    /// `uname -r`.
    pub release: String,
    /// The kfunc both hand-off modes need (Linux 6.9).
    pub handoff_kfunc: bool,
    /// XDP may leave TC a note in metadata (`bpf_xdp_adjust_meta`).
    #[serde(default)]
    pub xdp_meta: bool,
    /// Busy polling configured for the AF_XDP sockets.
    pub busy_poll: bool,
}

fn link(a: &Attachment) -> Option<LinkStatus> {
    a.info().ok().map(|i| LinkStatus {
        link_id: i.id,
        prog_id: i.prog_id,
        attached: i.ifindex != 0,
    })
}

impl KernelStatus {
    /// This kernel's, with busy polling on or off.
    fn now(busy_poll: bool) -> KernelStatus {
        KernelStatus {
            release: rustix::system::uname()
                .release()
                .to_string_lossy()
                .into_owned(),
            handoff_kfunc: crate::xdp::has_handoff_kfunc(),
            xdp_meta: crate::xdp::has_xdp_meta(),
            busy_poll,
        }
    }
}

impl Datapath<'_> {
    /// Each queue served, its worker's CPU and its socket's mode.
    fn queue_status(&self) -> Vec<QueueStatus> {
        self.fixed
            .plan
            .queues
            .iter()
            .zip(&self.fixed.plan.cpus)
            .zip(&self.fixed.zero_copy)
            .map(|((&queue, &cpu), &zero_copy)| QueueStatus {
                queue,
                cpu,
                zero_copy,
            })
            .collect()
    }

    /// The status now.
    pub(super) fn status(&self, live: &Live, config: &std::path::Path) -> Status {
        let cfg = &live.cfg;
        // One lock for the three fields (a guard held while taking it again
        // would deadlock the control loop).
        let xdp = self.fixed.attached.xdp();
        Status {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            config: config.to_owned(),
            uptime_secs: self.fixed.started.elapsed().as_secs(),
            interface: cfg.datapath.interface.clone(),
            ifindex: self.fixed.plan.ifindex,
            xdp_mode: xdp.as_ref().map_or("detached", |a| a.mode).into(),
            attach: xdp.as_ref().map_or("detached", |a| a.how).into(),
            xdp_link: xdp.as_ref().and_then(link),
            handoff_link: self.fixed.attached.handoff.as_ref().and_then(link),
            queues: self.queue_status(),
            synack: cfg.datapath.synack.as_str().into(),
            handoff: cfg.handoff.mode.as_str().into(),
            handoff_engine: self.fixed.plan.engine.as_str().into(),
            ports: cfg.protect.ports.clone(),
            addresses: cfg.protect.addresses.clone(),
            secret_fingerprint: live.secrets.mint.fingerprint(),
            previous_secret_fingerprint: live.secrets.accept.as_ref().map(Secret::fingerprint),
            secret_source: cfg
                .cookie
                .secret_file
                .as_ref()
                .map_or("random (no cookie.secret_file)".into(), |p| {
                    p.display().to_string()
                }),
            epoch: self.state.epoch.load(Ordering::Relaxed),
            rotation_secs: cfg.cookie.rotation_secs,
            skew_secs: cfg.cookie.skew_secs(),
            reloads_ok: self.state.reloads_ok.load(Ordering::Relaxed),
            reloads_failed: self.state.reloads_failed.load(Ordering::Relaxed),
            kernel: KernelStatus::now(cfg.datapath.busy_poll_us > 0),
            attack_mode: cfg.attack.mode.as_str().into(),
            under_attack: self.state.under_attack.load(Ordering::Relaxed),
            attacks: self.state.attacks.load(Ordering::Relaxed),
            xdp_answers: self.xdp_answers_now(),
        }
    }
}

fn link_text(l: &Option<LinkStatus>) -> String {
    match l {
        Some(l) if l.attached => format!("prog id {}, link id {}", l.prog_id, l.link_id),
        Some(l) => format!("DETACHED (prog id {}, link id {})", l.prog_id, l.link_id),
        None => "unknown".into(),
    }
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// The status for a person.
pub fn human(s: &Status) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "synwall {} (pid {}), up {}, config {}",
        s.version,
        s.pid,
        duration(s.uptime_secs),
        s.config.display()
    );
    let _ = writeln!(
        o,
        "interface  {} (ifindex {}): XDP {} by {} ({}); TC hand-off ({})",
        s.interface,
        s.ifindex,
        s.xdp_mode,
        s.attach,
        link_text(&s.xdp_link),
        link_text(&s.handoff_link)
    );
    let _ = writeln!(o, "queues     {}", queues_text(&s.queues));
    let ports: Vec<String> = s.ports.iter().map(u16::to_string).collect();
    let _ = writeln!(
        o,
        "protects   ports {} on {}; SYN-ACKs by {}; hand-off to {} ({} engine)",
        ports.join(", "),
        addresses_text(&s.addresses),
        s.synack,
        s.handoff,
        s.handoff_engine
    );
    cookies_and_state(&mut o, s);
    o
}

/// "0 copy (cpu 0), 1 zero-copy (cpu 1)".
fn queues_text(queues: &[QueueStatus]) -> String {
    let queues: Vec<String> = queues
        .iter()
        .map(|q| {
            let mode = match q.zero_copy {
                Some(true) => "zero-copy",
                Some(false) => "copy",
                None => "unknown",
            };
            format!("{} {mode} (cpu {})", q.queue, q.cpu)
        })
        .collect();
    queues.join(", ")
}

fn addresses_text(addresses: &[IpAddr]) -> String {
    if addresses.is_empty() {
        return "every address".to_string();
    }
    let a: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
    a.join(", ")
}

/// The status's lines on cookies, attacks, answers and the kernel.
fn cookies_and_state(o: &mut String, s: &Status) {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let also = s
        .previous_secret_fingerprint
        .as_ref()
        .map_or(String::new(), |f| format!(", also accepting {f}"));
    let _ = writeln!(
        o,
        "cookies    secret {} (fingerprint {}{also}), epoch {} of {} s, skew {} s; \
         {} reloads, {} rejected",
        s.secret_source,
        s.secret_fingerprint,
        s.epoch,
        s.rotation_secs,
        s.skew_secs,
        s.reloads_ok,
        s.reloads_failed
    );
    let attack = if s.under_attack {
        "UNDER ATTACK"
    } else {
        "none now"
    };
    let _ = writeln!(
        o,
        "attack     {attack} (mode {}); {} attacks since the start",
        s.attack_mode, s.attacks
    );
    if let Some(a) = &s.xdp_answers {
        let _ = writeln!(
            o,
            "answers    XDP answers {}{}{}: {}",
            a.state.to_uppercase(),
            if a.watched { "" } else { " (unwatched)" },
            if a.leaving { ", known to leave" } else { "" },
            a.reason
        );
    }
    let _ = writeln!(
        o,
        "kernel     {}: bpf_sk_assign_tcp_reqsk {}, XDP metadata {}, busy polling {}",
        s.kernel.release,
        yes(s.kernel.handoff_kfunc),
        yes(s.kernel.xdp_meta),
        yes(s.kernel.busy_poll)
    );
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn uptime_reads_as_a_person_would_say_it() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(65), "1m 5s");
        assert_eq!(duration(3 * 3600 + 61), "3h 1m");
        assert_eq!(duration(2 * 86400 + 3600), "2d 1h");
    }
}
