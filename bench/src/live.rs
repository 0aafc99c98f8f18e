//! The live-frames flood engine (bench/bpf/flood.bpf.c): the kernel
//! runs an XDP program on a template frame through `BPF_PROG_RUN` with
//! `BPF_F_TEST_XDP_LIVE_FRAMES` and transmits every result out of the given
//! interface, so the generator needs no socket, skb or copy per frame.

#![allow(unsafe_code, reason = "generated skeleton code (libbpf-cargo)")]

synwall::bpf_skeleton!("flood");

use std::mem::MaybeUninit;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, ProgramInput};
use skel::{FloodSkel, FloodSkelBuilder};

/// Why the live engine failed.
#[derive(Debug, thiserror::Error)]
pub enum FloodError {
    /// The template frame is not one the program can vary.
    #[error("flood template: {0}")]
    Template(&'static str),
    /// Loading (verification) failed.
    #[error("loading the flood program failed: {0}")]
    Load(#[source] libbpf_rs::Error),
    /// Reading the pace from another thread failed.
    #[error("reading the flood's progress: {0}")]
    Progress(#[source] libbpf_rs::Error),
    /// BPF_PROG_RUN failed.
    #[error("BPF_PROG_RUN (live frames) failed: {0}")]
    Run(#[source] libbpf_rs::Error),
}

/// What the flood sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodMode {
    /// SYNs (the template is a SYN).
    Syn,
    /// ACKs with random acknowledgment numbers (the template is an ACK).
    Ack,
    /// Half SYN, half ACK at random (the template is a SYN).
    Mix,
}

/// The IPv4 sources of a live flood: 198.18.H.L with the bits of `mask`
/// (of H.L) random and the others `set`. Every source of 198.18.1.0 to
/// 198.18.255.255 by default (never the testbed's own 198.18.0.x).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceNet {
    /// Random bits of the last 16.
    pub mask: u16,
    /// Fixed bits of the last 16.
    pub set: u16,
}

impl FloodError {
    /// The kernel refuses live frames as such: some builds of Linux 6.18
    /// answer EPERM even to root, kernels before 5.18 (no live frames)
    /// EINVAL. Asked of the first run, whose input is always valid.
    pub fn refused(&self) -> bool {
        matches!(self, FloodError::Run(e) if matches!(
            e.kind(),
            libbpf_rs::ErrorKind::PermissionDenied
                | libbpf_rs::ErrorKind::InvalidInput
                | libbpf_rs::ErrorKind::Unsupported
        ))
    }
}

impl Default for SourceNet {
    fn default() -> Self {
        SourceNet {
            mask: 0xffff,
            set: 0,
        }
    }
}

impl SourceNet {
    /// An IPv4 source from random bits `r`, as the program picks it:
    /// 198.18.H.L with H >= 1, never the testbed's 198.18.0.x.
    pub fn pick(&self, r: u16) -> [u8; 4] {
        let [h, l] = (r & self.mask | self.set).to_be_bytes();
        [198, 18, h.max(1), l]
    }

    /// The sources of `net`, which must lie in 198.18.1.0 to
    /// 198.18.255.255 (a prefix of /16 to /32 inside 198.18.0.0/16, not
    /// touching 198.18.0.0/24).
    pub fn v4(net: std::net::Ipv4Addr, len: u8) -> Option<SourceNet> {
        let o = net.octets();
        if o[..2] != [198, 18] || !(16..=32).contains(&len) {
            return None;
        }
        let host_bits = 32 - u32::from(len);
        let mask = if host_bits >= 16 {
            0xffff
        } else {
            (1u16 << host_bits) - 1
        };
        let set = u16::from_be_bytes([o[2], o[3]]) & !mask;
        // 198.18.0.x is the testbed's own: a net reaching into it is refused.
        let lowest_h = set >> 8;
        (len > 16 && lowest_h != 0).then_some(SourceNet { mask, set })
    }
}

/// How fast a flood sends: a token bucket in the program (see
/// bench/bpf/flood.bpf.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Frames per second; 0: as fast as the kernel's loop runs.
    pub rate: u64,
    /// The bucket's depth: the most frames sent back to back.
    pub burst: u64,
    /// Frames to send in all; runs after that drop their frame.
    pub limit: u64,
    /// How long from now frames may be sent; runs after that drop theirs.
    pub duration: std::time::Duration,
}

/// Milliseconds of [`LiveFlood::per_ms`] (PACE_SLOTS in flood.bpf.c).
pub const PACE_SLOTS: usize = 16384;

/// CLOCK_MONOTONIC in ns, the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always there");
    (t.tv_sec() as u64) * 1_000_000_000 + t.tv_nsec() as u64
}

/// A loaded flood program with its template.
pub struct LiveFlood {
    skel: FloodSkel<'static>,
    template: Vec<u8>,
    ctx: [u8; 24],
}

impl std::fmt::Debug for LiveFlood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveFlood")
    }
}

/// Longest template the program copies into each frame (TEMPLATE_MAX in
/// bench/bpf/flood.bpf.c).
const TEMPLATE_MAX: usize = 128;

/// Offset of the TCP checksum from the start of the TCP header (RFC 9293).
const TCP_CSUM: usize = 16;

impl LiveFlood {
    /// Loads the program for `template`: an Ethernet frame (no VLAN) with
    /// an IPv4 header without options or a bare IPv6 header, whose source
    /// address is the base of its range (198.18.0.0 or 2001:2::) and whose
    /// source port, sequence and acknowledgment numbers are zero, with valid
    /// checksums. It goes out of interface `ifindex` (in this namespace).
    pub fn new(
        template: Vec<u8>,
        mode: FloodMode,
        ifindex: u32,
        sources: SourceNet,
        pace: Pace,
    ) -> Result<LiveFlood, FloodError> {
        let ipv6 = template.get(12..14) == Some(&[0x86, 0xdd]);
        let l4 = if ipv6 { 14 + 40 } else { 14 + 20 };
        if template.len() < l4 + 20 {
            return Err(FloodError::Template(
                "shorter than its Ethernet, IP and TCP headers",
            ));
        }
        if template.len() > TEMPLATE_MAX {
            return Err(FloodError::Template("longer than 128 bytes"));
        }
        // The program writes the checksums absolutely from these.
        let tcp_csum0 = u16::from_ne_bytes([template[l4 + TCP_CSUM], template[l4 + TCP_CSUM + 1]]);
        let ip_csum0 = u16::from_ne_bytes([template[24], template[25]]);
        let storage = Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = FloodSkelBuilder::default()
            .open(storage)
            .map_err(FloodError::Load)?;
        if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
            ro.is_ipv6 = u8::from(ipv6);
            ro.mode = match mode {
                FloodMode::Syn => 0,
                FloodMode::Ack => 1,
                FloodMode::Mix => 2,
            };
            ro.tcp_csum0 = tcp_csum0;
            ro.ip_csum0 = if ipv6 { 0 } else { ip_csum0 };
            ro.template[..template.len()].copy_from_slice(&template);
            ro.template_len = template.len() as u32;
            ro.src_host_mask = sources.mask.to_be();
            ro.src_host_set = sources.set.to_be();
        }
        let now = monotonic_ns();
        if let Some(bss) = open.maps.bss_data.as_deref_mut() {
            bss.pace.rate = pace.rate;
            bss.pace.burst = pace.burst.max(1);
            bss.pace.limit = pace.limit;
            // The clock bpf_ktime_get_ns reads.
            bss.pace.t0 = now;
            bss.pace.end = now.saturating_add(pace.duration.as_nanos() as u64);
        }
        let skel = open.load().map_err(FloodError::Load)?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(template.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        Ok(LiveFlood {
            skel,
            template,
            ctx,
        })
    }

    /// Runs the program `runs` times, each run sending a frame if the pace
    /// and the limit let it. A signal ends the call early, which is no
    /// error: [`LiveFlood::sent`] says what went.
    pub fn run(&mut self, runs: u32) -> Result<(), FloodError> {
        let input = ProgramInput {
            data_in: Some(&self.template),
            context_in: Some(&mut self.ctx),
            flags: libbpf_rs::libbpf_sys::BPF_F_TEST_XDP_LIVE_FRAMES,
            repeat: runs,
            ..Default::default()
        };
        match self.skel.progs.xdp_flood.test_run(input) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(FloodError::Run(e)),
        }
    }

    fn bss(&self) -> &skel::types::bss {
        self.skel
            .maps
            .bss_data
            .as_deref()
            .expect("flood.bpf.c has a .bss")
    }

    /// Frames sent so far (between calls).
    pub fn sent(&self) -> u64 {
        self.bss().pace.sent
    }

    /// Tokens the pace has forgone so far (between calls): its bucket was
    /// full while nothing ran.
    pub fn forgone(&self) -> u64 {
        self.bss().pace.forgone
    }

    /// A handle of its own on the pace, for another thread to read while a
    /// call runs.
    pub fn progress(&self) -> Result<Progress, FloodError> {
        let id = self
            .skel
            .maps
            .bss
            .info()
            .map_err(FloodError::Progress)?
            .info
            .id;
        MapHandle::from_map_id(id)
            .map(Progress)
            .map_err(FloodError::Progress)
    }

    /// Frames sent in each millisecond since the first, the first
    /// [`PACE_SLOTS`] of them.
    pub fn per_ms(&self) -> &[u32] {
        &self
            .skel
            .maps
            .data_per_ms_data
            .as_deref()
            .expect("flood.bpf.c has a .data.per_ms")
            .per_ms
    }
}

/// The flood's pace as another thread sees it while a call runs.
#[derive(Debug)]
pub struct Progress(MapHandle);

impl Progress {
    /// Frames sent so far.
    pub fn sent(&self) -> Result<u64, FloodError> {
        let bss = self
            .0
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(FloodError::Progress)?
            .unwrap_or_default();
        let at = std::mem::offset_of!(skel::types::bss, pace)
            + std::mem::offset_of!(skel::types::pace, sent);
        let sent = bss.get(at..at + 8).ok_or_else(|| {
            FloodError::Progress(std::io::Error::other(".bss shorter than its pace").into())
        })?;
        Ok(u64::from_ne_bytes(sent.try_into().expect("8 bytes")))
    }
}
