//! The testbed's XDP programs (bench/bpf/testbed.bpf.c): the physical limits
//! on the server veth (drop, bounce, reflect) and the sink on the client
//! veth, attached through a BPF link that goes away with the process.

#![allow(unsafe_code, reason = "generated skeleton code (libbpf-cargo)")]

synwall::bpf_skeleton!("testbed");

use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr};

use std::os::fd::{AsFd, OwnedFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use skel::{TestbedSkel, TestbedSkelBuilder};
use synwall::xdp::percpu_sum;

/// Which program to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Server: drop every frame.
    Drop,
    /// Server: pass every frame to the kernel.
    Pass,
    /// Server: send every frame back unmodified.
    Bounce,
    /// Server: answer each SYN with a SYN-ACK that carries no cookie.
    Reflect,
    /// Server: answer each SYN with the kernel's own SYN cookie (the
    /// kernel's raw SYN-cookie helpers), the MSS option only.
    KernelCookie,
    /// Client: drop answers to spoofed sources, pass the rest.
    Sink,
    /// Nothing: return XDP_PASS at once (the bench's zero).
    Nothing,
}

/// Why a testbed program could not run.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// Loading (verification) failed.
    #[error("loading the testbed program failed")]
    Load(#[source] libbpf_rs::Error),
    /// Attaching failed.
    #[error("attaching the testbed program to ifindex {0} failed")]
    Attach(u32, #[source] std::io::Error),
    /// Reading the counters failed.
    #[error("reading the testbed program's counters")]
    Counters(#[source] libbpf_rs::Error),
}

/// What the addresses the programs check are.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// The server's IPv4 address (limits: frames "as sent" go here).
    pub server4: Ipv4Addr,
    /// The protected port.
    pub port: u16,
    /// The client's own IPv4 address (the sink keeps its traffic).
    pub client4: Ipv4Addr,
    /// The client's own IPv6 address.
    pub client6: Ipv6Addr,
}

/// The programs loaded with `a`'s addresses. The skeleton borrows its
/// object storage for its whole life, which is the process's: leaked on
/// purpose.
fn load(a: &Addresses) -> Result<TestbedSkel<'static>, TestbedError> {
    let storage = Box::leak(Box::new(MaybeUninit::uninit()));
    let mut open = TestbedSkelBuilder::default()
        .open(storage)
        .map_err(TestbedError::Load)?;
    if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
        ro.expect_addr = u32::from_ne_bytes(a.server4.octets());
        ro.expect_port = a.port.to_be();
        ro.keep_addr4 = u32::from_ne_bytes(a.client4.octets());
        let o = a.client6.octets();
        ro.keep_addr6_hi = u64::from_ne_bytes(o[..8].try_into().unwrap_or_default());
        ro.keep_addr6_lo = u64::from_ne_bytes(o[8..].try_into().unwrap_or_default());
    }
    open.load().map_err(TestbedError::Load)
}

/// `role`'s program in `skel`.
fn program<'s>(skel: &'s TestbedSkel<'static>, role: Role) -> &'s libbpf_rs::ProgramMut<'static> {
    let p = &skel.progs;
    match role {
        Role::Drop => &p.xdp_drop,
        Role::Pass => &p.xdp_pass,
        Role::Bounce => &p.xdp_bounce,
        Role::Reflect => &p.xdp_reflect,
        Role::KernelCookie => &p.xdp_kernel_cookie,
        Role::Sink => &p.xdp_sink,
        Role::Nothing => &p.xdp_nothing,
    }
}

/// One program run by BPF_PROG_TEST_RUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRun {
    /// The XDP action.
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// The kernel's mean time per run, in ns.
    pub ns: u32,
}

/// The programs loaded, not attached: for BPF_PROG_TEST_RUN.
pub struct Loaded(TestbedSkel<'static>);

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Loaded(testbed)")
    }
}

impl Loaded {
    /// Loads the programs with `a`'s addresses.
    pub fn new(a: &Addresses) -> Result<Loaded, TestbedError> {
        load(a).map(Loaded)
    }

    /// Runs `role`'s program `repeat` times on `frame`.
    pub fn test_run(&self, role: Role, frame: &[u8], repeat: u32) -> Result<TestRun, TestbedError> {
        let mut out = vec![0u8; 4096];
        let input = libbpf_rs::ProgramInput {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        };
        let r = program(&self.0, role)
            .test_run(input)
            .map_err(TestbedError::Load)?;
        Ok(TestRun {
            action: r.return_value,
            frame: r.data.map(|d| d.to_vec()).unwrap_or_default(),
            ns: r.duration.as_nanos() as u32,
        })
    }
}

/// An attached testbed program; detached when dropped.
pub struct Attached {
    skel: TestbedSkel<'static>,
    _link: OwnedFd,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Attached(testbed)")
    }
}

/// The programs' counters (enum tb_counter), summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames seen (limit programs).
    pub rx: u64,
    /// Frames that arrived as the generator's SYNs to the server.
    pub as_sent: u64,
    /// Frames that arrived as anything else.
    pub altered: u64,
    /// Sink: answers to spoofed sources dropped.
    pub dropped: u64,
    /// Sink: the client's own traffic passed.
    pub passed: u64,
}

impl Attached {
    /// Loads `role`'s program and attaches it to `ifindex` (native XDP where
    /// the driver has it; `generic`: generic XDP, whose XDP_TX answers take
    /// the kernel's transmit path, so they reach a veth peer without XDP).
    pub fn new(
        role: Role,
        ifindex: u32,
        a: &Addresses,
        generic: bool,
    ) -> Result<Attached, TestbedError> {
        let skel = load(a)?;
        let flags = if generic {
            libbpf_rs::libbpf_sys::XDP_FLAGS_SKB_MODE
        } else {
            0
        };
        let link = synwall::xdp::link_create(
            program(&skel, role).as_fd(),
            ifindex,
            libbpf_rs::libbpf_sys::BPF_XDP,
            flags,
        )
        .map_err(|e| TestbedError::Attach(ifindex, e))?;
        Ok(Attached { skel, _link: link })
    }

    /// The counters now.
    pub fn counters(&self) -> Result<Counters, TestbedError> {
        let get = |i: u32| percpu_sum(&self.skel.maps.counters, i).map_err(TestbedError::Counters);
        Ok(Counters {
            rx: get(0)?,
            as_sent: get(1)?,
            altered: get(2)?,
            dropped: get(3)?,
            passed: get(4)?,
        })
    }
}
