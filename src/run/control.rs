//! The control loop: the cookie epochs, reloads, the watches, the
//! clients' questions, until synwall stops.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::config::{AttachMode, XdpMode};
use crate::handoff::proxy::ProxyCounters;
use crate::proto::time::UnixTime;
use crate::worker::WorkerCounters;
use crate::xdp::{self};

use super::reload::Live;
use super::{
    Control, Datapath, ProgramEpochs, Snapshot, Thread, WorkerEntry, XdpAnswers, attack, clients,
    error_chain, health, supervise, tx_watch,
};

/// How long the control loop waits for a client (stats socket or metrics)
/// when none is there.
pub(super) const CONTROL_IDLE: Duration = Duration::from_millis(50);

/// How often the control loop checks that the XDP and TC links are still
/// attached.
pub(super) const LINK_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Running totals of SYNs and of our answers.
#[derive(Debug, Clone, Copy)]
pub(super) struct SynTotals {
    /// SYNs to the protected ports.
    pub(super) syns: u64,
    /// SYN-ACKs sent, by the workers and by XDP.
    pub(super) answered: u64,
}

impl Datapath<'_> {
    /// Step 8, the control loop, until `ctl.stop` is set or a thread ends
    /// on its own (whose name it returns): keeps the XDP program's cookie
    /// epochs turning, reloads on request, and serves the stats socket.
    pub(super) fn control(
        &self,
        asks: &mpsc::Receiver<clients::Ask>,
        live: &mut Live,
        ctl: &Control,
        threads: &[Thread<'_>],
    ) -> Option<String> {
        let mut links_checked = Instant::now();
        // The first pass sweeps the kernel's sockets (bpf/tuples.h).
        let mut swept: Option<Instant> = None;
        let mut supervisor = supervise::Supervisor::new(self);
        let mut health = health::HealthWatch::new(self);
        let mut detector = attack::Detector::new();
        let d = &self.fixed.cfg.datapath;
        let mode = self.fixed.attached.xdp_mode();
        let mut tx = tx_watch::TxWatch::start(&d.interface, mode, d.synack, self.fixed.program);
        // xdp_mode = "auto" on our own link: a native mode whose answers do
        // not leave gives way to generic mode, whose answers do.
        tx.may_switch(
            d.xdp_mode == XdpMode::Auto
                && d.attach == AttachMode::Link
                && mode == "native"
                && !self.fixed.zero_copy.contains(&Some(true)),
        );
        while !ctl.stop.load(Ordering::Relaxed) {
            supervisor.tick(self);
            health.tick(self);
            self.watch_attack(&mut detector, live);
            if let Some(lost) = self.watch_xdp_answers(&mut tx) {
                return Some(lost);
            }
            if let Some((name, _)) = threads.iter().find(|(_, h)| h.is_finished()) {
                return Some(format!("{name} exited"));
            }
            if links_checked.elapsed() >= LINK_CHECK_EVERY {
                links_checked = Instant::now();
                if let Some(lost) = self.lost_link().or_else(|| self.lost_handoff()) {
                    return Some(lost);
                }
            }
            if swept.is_none_or(|t| t.elapsed() >= xdp::TUPLE_SWEEP_EVERY) {
                swept = Some(Instant::now());
                super::start::sweep_sockets(self.fixed.program);
            }
            self.turn_epochs(live);
            if ctl.reload.swap(false, Ordering::Relaxed) {
                let _ = self.reload_and_report(live, &ctl.config_path);
            }
            clients::take_asks(asks, CONTROL_IDLE, |a| self.answer(a, live, ctl, &health));
        }
        None
    }

    /// Answers what a client's thread asks (clients.rs).
    pub(super) fn answer(
        &self,
        ask: clients::Ask,
        live: &mut Live,
        ctl: &Control,
        health: &health::HealthWatch,
    ) {
        use clients::{Ask, Request};
        match ask {
            Ask::Snapshot(tx) => {
                let _ = tx.send(self.snapshot(live));
            }
            Ask::Socket(request, tx) => {
                let reply = match request {
                    Request::Stats => serde_json::to_value(self.snapshot(live)),
                    Request::Status => serde_json::to_value(self.status(live, &ctl.config_path)),
                    Request::Health => serde_json::to_value(self.health(health, live)),
                    Request::Reload => Ok(match self.reload_and_report(live, &ctl.config_path) {
                        Ok(()) => serde_json::json!({ "reload": "ok" }),
                        Err(e) => serde_json::json!({ "reload": "failed", "error": e }),
                    }),
                };
                let _ = tx.send(reply.map(|v| v.to_string()).unwrap_or_default());
            }
        }
    }

    /// A link that is no longer attached (the interface went away, or
    /// someone detached it): without it there is no protection.
    pub(super) fn lost_link(&self) -> Option<String> {
        let ifname = &self.fixed.cfg.datapath.interface;
        let xdp = self.fixed.attached.xdp();
        let Some(xdp) = xdp.as_ref() else {
            return Some(format!(
                "the XDP program is no longer attached to {ifname} (moving it to generic mode failed)"
            ));
        };
        let links = [
            Some(("XDP", xdp)),
            self.fixed
                .attached
                .handoff
                .as_ref()
                .map(|h| ("TC hand-off", h)),
        ];
        for (what, a) in links.into_iter().flatten() {
            if matches!(a.info(), Ok(i) if i.ifindex == 0) {
                return Some(format!(
                    "the {what} link is no longer attached to {ifname} \
                     (the interface went away, or the link was detached)"
                ));
            }
        }
        None
    }

    /// The kfunc hand-off with `net.ipv4.tcp_syncookies` set to 0 since the
    /// start: the kernel drops every hand-off then, so synwall stops (XDP
    /// detaches, and the kernel alone serves) rather than lose them all.
    pub(super) fn lost_handoff(&self) -> Option<String> {
        (self.fixed.attached.handoff.is_some() && crate::host::tcp_syncookies() == Some(0)).then(
            || {
                "net.ipv4.tcp_syncookies was set to 0: the kernel drops every hand-off of the \
                 kfunc then (it goes through the kernel's SYN-cookie check); set it to 1 (in \
                 proxy mode, engine \"auto\" takes \"repair\" at the next start)"
                    .to_string()
            },
        )
    }

    /// Keeps the program's keys and its minting epoch on the schedule.
    pub(super) fn turn_epochs(&self, live: &mut Live) {
        let want = ProgramEpochs::at(UnixTime::now(), &live.cfg.key_schedule());
        if want == live.epochs {
            return;
        }
        match want.install(self.fixed.program, &live.secrets, Some(live.epochs)) {
            Ok(()) => {
                live.epochs = want;
                self.state.epoch.store(want.mint, Ordering::Relaxed);
            }
            Err(e) => tracing::error!("cannot turn the XDP program's cookie epoch: {e}"),
        }
    }

    /// A reload, told to systemd (RELOADING=1 … READY=1), logged and
    /// counted; a rejected one leaves everything as it was.
    pub(super) fn reload_and_report(&self, live: &mut Live, path: &Path) -> Result<(), String> {
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
            reloading.push(now);
        }
        let _ = sd_notify::notify(&reloading);
        let result = self.reload(live, path).map_err(|e| error_chain(&e));
        match &result {
            Ok(()) => {
                self.state.reloads_ok.fetch_add(1, Ordering::Relaxed);
                self.state.epoch.store(live.epochs.mint, Ordering::Relaxed);
            }
            Err(e) => {
                self.state.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload rejected, the running configuration stays: {e}");
                // A fleet that moved on to another secret: health says so.
                live.rejected_expected = crate::config::Config::load(path)
                    .ok()
                    .and_then(|c| c.cookie.expected_fingerprint);
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        result
    }

    /// Every counter, now.
    pub(super) fn snapshot(&self, live: &Live) -> Snapshot {
        Snapshot {
            secret_fingerprint: live.secrets.mint.fingerprint(),
            previous_secret_fingerprint: live.secrets.accept.as_ref().map(|s| s.fingerprint()),
            interface: self.fixed.cfg.datapath.interface.clone(),
            xdp_mode: self.fixed.attached.xdp_mode(),
            workers: self
                .fixed
                .plan
                .queues
                .iter()
                .zip(&self.fixed.plan.cpus)
                .zip(&self.counters.workers)
                .map(|((&queue, &cpu), c)| WorkerEntry {
                    queue,
                    cpu,
                    counters: c.snapshot(),
                })
                .collect(),
            xdp: self
                .fixed
                .program
                .counters()
                .map(|c| xdp::COUNTER_NAMES.iter().copied().zip(c).collect())
                .unwrap_or_default(),
            proxy: self.counters.proxy.as_ref().map(ProxyCounters::snapshot),
            uptime_secs: self.fixed.started.elapsed().as_secs(),
            epoch: self.state.epoch.load(Ordering::Relaxed),
            reloads_ok: self.state.reloads_ok.load(Ordering::Relaxed),
            reloads_failed: self.state.reloads_failed.load(Ordering::Relaxed),
            under_attack: self.state.under_attack.load(Ordering::Relaxed),
            attacks: self.state.attacks.load(Ordering::Relaxed),
            xdp_answers: self.xdp_answers_now(),
        }
    }

    /// SYNs to the protected ports and SYN-ACKs sent so far, from the
    /// program's counters and the workers'.
    pub(super) fn syn_totals(&self) -> Option<SynTotals> {
        let c = self.fixed.program.counters().ok()?;
        let syns = xdp::counter::SYN_VERDICTS.iter().map(|&i| c[i]).sum();
        let workers: u64 = self
            .counters
            .workers
            .iter()
            .map(WorkerCounters::synacks)
            .sum();
        Some(SynTotals {
            syns,
            answered: c[xdp::counter::SYNACK_XDP] + workers,
        })
    }

    /// Moves the XDP link from native to generic mode: detached, then
    /// attached again (between the two, a blink, the kernel has every
    /// packet). If generic mode is refused, native mode again.
    pub(super) fn switch_to_generic(&self) -> Result<(), String> {
        let mut slot = self.fixed.attached.xdp();
        let Some(native) = slot.take() else {
            return Err("no XDP link to move".into());
        };
        let ifindex = native.ifindex;
        // The kernel is about to have every packet: the marks of its
        // sockets no longer count until the next sweep.
        self.fixed.program.forget_sweep();
        drop(native);
        let moved = self.fixed.program.attach(ifindex, XdpMode::Generic);
        // The kernel had every SYN meanwhile: its cookies' ACKs must pass.
        self.fixed.program.note_kernel_syns();
        let why = match moved {
            Ok(a) => {
                *slot = Some(a);
                super::start::sweep_sockets(self.fixed.program);
                return Ok(());
            }
            Err(e) => error_chain(&e),
        };
        match self.fixed.program.attach(ifindex, XdpMode::Native) {
            Ok(a) => {
                *slot = Some(a);
                self.fixed.program.note_kernel_syns();
                super::start::sweep_sockets(self.fixed.program);
                Err(format!("moving XDP to generic mode failed: {why}"))
            }
            Err(e) => Err(format!(
                "moving XDP to generic mode failed ({why}), and native mode again too ({}): \
                 no XDP program is attached",
                error_chain(&e)
            )),
        }
    }

    /// What the watch last said of the XDP answers.
    pub(super) fn xdp_answers_now(&self) -> Option<XdpAnswers> {
        self.state
            .xdp_answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Lets the watch compare the driver's failed XDP_TX frames with the
    /// program's answers, and publishes what it says. Returns why the run
    /// must end when a move to generic mode left no XDP program attached.
    pub(super) fn watch_xdp_answers(&self, tx: &mut tx_watch::TxWatch) -> Option<String> {
        if tx.tick(Instant::now(), self.fixed.program) == Some(tx_watch::Action::SwitchToGeneric) {
            match self.switch_to_generic() {
                Ok(()) => tx.switched_to_generic(self.fixed.program),
                Err(e) if self.fixed.attached.xdp().is_none() => return Some(e),
                Err(e) => {
                    tracing::error!("{e}; XDP answers stay off");
                    tx.switch_failed(&e);
                }
            }
        }
        let mut shown = self
            .state
            .xdp_answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if shown.as_ref() != Some(tx.report()) {
            *shown = Some(tx.report().clone());
        }
        None
    }

    /// Feeds the attack detector the SYNs and SYN-ACKs counted so far;
    /// logs an attack's start and end and tells the program.
    pub(super) fn watch_attack(&self, detector: &mut attack::Detector, live: &Live) {
        let Some(SynTotals { syns, answered }) = self.syn_totals() else {
            return;
        };
        let event = detector.sample(Instant::now(), syns, answered, &live.cfg.attack);
        match event {
            Some(attack::Event::Started { rate }) => tracing::warn!(
                syn_rate = rate as u64,
                mode = live.cfg.attack.mode.as_str(),
                "attack started: SYNs to the protected ports above enter_syn_rate"
            ),
            Some(attack::Event::Ended {
                duration,
                peak,
                syns,
                answered,
            }) => tracing::warn!(
                duration_secs = duration.as_secs(),
                peak_syn_rate = peak as u64,
                syns,
                answered,
                "attack ended"
            ),
            None => return,
        }
        let on = detector.under_attack();
        if on {
            // The SYNs passed in peacetime left no marks (bpf/tuples.h):
            // their request sockets are swept before a SYN skips a lookup.
            self.fixed.program.forget_sweep();
            self.fixed.program.set_under_attack(on);
            super::start::sweep_sockets(self.fixed.program);
        } else {
            self.fixed.program.set_under_attack(on);
        }
        self.state.under_attack.store(on, Ordering::Relaxed);
        self.state
            .attacks
            .store(detector.attacks, Ordering::Relaxed);
    }
}
