//! AF_XDP sockets and their UMEM: the only place for xsk-rs `unsafe`.
//!
//! Frame ownership is in the types. A [`Frame`] is neither `Copy` nor
//! `Clone`. Putting it into the fill or TX ring takes it by value, and the
//! RX and completion rings give it back, so a frame can be in one place at a
//! time: fill → rx → (worker) → tx → completion → fill, or rx → fill when
//! nothing is sent.

#![allow(
    unsafe_code,
    reason = "AF_XDP rings and UMEM through xsk-rs are unsafe by nature"
)]

use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, BorrowedFd};

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

/// Bytes per UMEM frame: one page-half, enough for any MTU-1500 frame and
/// the SYN-ACK written over a SYN.
pub const FRAME_SIZE: u32 = 2048;

/// Frames the kernel sends per tx wakeup in copy mode (TX_BATCH_SIZE in
/// net/xdp/xsk.c).
const TX_KICK_BATCH: usize = 32;

/// Preferred busy polling of the socket's NAPI context by the worker
/// (Documentation/networking/napi.rst): the worker's own recvfrom() runs
/// the interface's receive work instead of the NAPI thread or softirq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyPoll {
    /// SO_BUSY_POLL: microseconds one poll may spin.
    pub usecs: u32,
    /// SO_BUSY_POLL_BUDGET: frames one poll may process.
    pub budget: u32,
}

// include/uapi/asm-generic/socket.h (x86, arm64 and most others).
const SO_BUSY_POLL: libc::c_int = 46;
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

/// One UMEM frame owned by user space.
#[derive(Debug)]
pub struct Frame(FrameDesc);

/// Sizes of one socket's rings and UMEM.
#[derive(Debug, Clone, Copy)]
pub struct XskConfig {
    /// Descriptors per ring (fill, completion, rx, tx); a power of two.
    pub ring_size: u32,
}

/// Why a socket could not be made. Each variant keeps xsk-rs's error as its
/// source (printed after this message by an error chain).
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// The ring size is not a power of two.
    #[error("AF_XDP ring size rejected")]
    RingSize(#[source] xsk_rs::config::QueueSizeError),
    /// The frame size was rejected.
    #[error("AF_XDP frame size rejected")]
    FrameSize(#[source] xsk_rs::config::FrameSizeError),
    /// The UMEM settings were rejected.
    #[error("AF_XDP UMEM settings rejected")]
    UmemConfig(#[source] xsk_rs::config::UmemConfigBuilderError),
    /// The ring size is zero.
    #[error("AF_XDP ring size 0")]
    ZeroRing,
    /// The UMEM could not be created.
    #[error("AF_XDP UMEM")]
    Umem(#[source] xsk_rs::umem::UmemCreateError),
    /// The interface name cannot be passed to the kernel.
    #[error("interface name {0:?} contains a NUL byte")]
    InterfaceName(String),
    /// The socket could not be created or bound.
    #[error("AF_XDP socket on {ifname} queue {queue}")]
    Socket {
        /// Interface.
        ifname: String,
        /// Queue.
        queue: u32,
        /// The kernel's (libxdp's) answer.
        #[source]
        source: xsk_rs::socket::SocketCreateError,
    },
    /// The socket came without fill and completion rings.
    #[error("AF_XDP socket on {ifname} queue {queue}: no fill/completion rings returned")]
    NoFillRing {
        /// Interface.
        ifname: String,
        /// Queue.
        queue: u32,
    },
}

/// Kernel-side statistics of a socket (XDP_STATISTICS).
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelStats {
    /// Frames dropped because the rx ring was full.
    pub rx_dropped: u64,
    /// Frames dropped for lack of fill-ring entries.
    pub rx_fill_ring_empty: u64,
    /// Rx ring full events.
    pub rx_ring_full: u64,
    /// Invalid tx descriptors.
    pub tx_invalid: u64,
    /// Tx ring empty events.
    pub tx_ring_empty: u64,
}

/// One AF_XDP socket bound to one queue, with its own UMEM.
pub struct Xsk {
    // Field order matters for drop: rings before the UMEM they point into.
    tx: TxQueue,
    rx: RxQueue,
    fill: FillQueue,
    comp: CompQueue,
    umem: Umem,
    /// Scratch descriptors for ring calls, reused (no allocation per batch).
    scratch: Vec<FrameDesc>,
}

impl std::fmt::Debug for Xsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xsk")
            .field("fd", &self.rx.fd().as_raw_fd())
            .finish()
    }
}

/// How long [`Xsk::new`] waits for a queue a closed socket still holds.
pub const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl XskError {
    /// The queue is bound to another socket (EBUSY).
    fn is_busy(&self) -> bool {
        use std::error::Error;
        matches!(self, XskError::Socket { source, .. }
            if source.source()
                .and_then(|e| e.downcast_ref::<std::io::Error>())
                .and_then(std::io::Error::raw_os_error)
                == Some(libc::EBUSY))
    }
}

impl Xsk {
    /// Creates a UMEM of `2 × ring_size` frames and a socket bound to
    /// `ifname` queue `queue` in copy or zero-copy mode (whatever the driver
    /// offers), with need_wakeup and libxdp's own program load inhibited:
    /// synwall loads its program and fills its XSKMAP itself. Returns the
    /// socket and all frames, none in a ring yet.
    ///
    /// A socket closed a moment ago on the same queue (a restart, the
    /// process before) lets go of it in the kernel's own time, and binding
    /// meanwhile fails with EBUSY (seen for 0.1 to 1 s after a close on
    /// Linux 6.18): that is tried again for up to [`BUSY_WAIT`].
    pub fn new(ifname: &str, queue: u32, cfg: XskConfig) -> Result<(Xsk, Vec<Frame>), XskError> {
        Self::new_waiting(ifname, queue, cfg, BUSY_WAIT)
    }

    /// As [`Xsk::new`], waiting at most `wait` for a busy queue (zero:
    /// not at all, where a wait would hold up what runs already).
    pub fn new_waiting(
        ifname: &str,
        queue: u32,
        cfg: XskConfig,
        wait: std::time::Duration,
    ) -> Result<(Xsk, Vec<Frame>), XskError> {
        let deadline = std::time::Instant::now() + wait;
        let mut tries = 1;
        loop {
            match Self::create(ifname, queue, cfg) {
                Err(e) if e.is_busy() && std::time::Instant::now() < deadline => {
                    if tries == 1 {
                        tracing::info!(
                            ifname,
                            queue,
                            "the queue is busy (a socket closed a moment ago?): trying again"
                        );
                    }
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) if e.is_busy() => {
                    tracing::warn!(ifname, queue, tries, "the queue stayed busy");
                    return Err(e);
                }
                r => return r,
            }
        }
    }

    fn create(ifname: &str, queue: u32, cfg: XskConfig) -> Result<(Xsk, Vec<Frame>), XskError> {
        let ring = QueueSize::new(cfg.ring_size).map_err(XskError::RingSize)?;
        let frame_size = FrameSize::new(FRAME_SIZE).map_err(XskError::FrameSize)?;
        let umem_cfg = UmemConfig::builder()
            .frame_size(frame_size)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .map_err(XskError::UmemConfig)?;
        let count = NonZeroU32::new(cfg.ring_size.saturating_mul(2)).ok_or(XskError::ZeroRing)?;
        let (umem, descs) = Umem::new(umem_cfg, count, false).map_err(XskError::Umem)?;
        let sock_cfg = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP)
            .build();
        let name = std::ffi::CString::new(ifname)
            .map_err(|_| XskError::InterfaceName(ifname.to_owned()))?;
        // SAFETY: the UMEM is not shared with another socket (one UMEM per
        // queue), and libxdp's program load is inhibited, which the xsk-rs
        // docs require to avoid a double free on drop.
        let (tx, rx, fq_cq) = unsafe { Socket::new(sock_cfg, &umem, &Interface::new(name), queue) }
            .map_err(|source| XskError::Socket {
                ifname: ifname.to_owned(),
                queue,
                source,
            })?;
        let (fill, comp) = fq_cq.ok_or_else(|| XskError::NoFillRing {
            ifname: ifname.to_owned(),
            queue,
        })?;
        let frames = descs.into_iter().map(Frame).collect();
        Ok((
            Xsk {
                tx,
                rx,
                fill,
                comp,
                umem,
                scratch: Vec::with_capacity(cfg.ring_size as usize),
            },
            frames,
        ))
    }

    /// The socket's fd, for the XSKMAP.
    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd belongs to the socket owned by `self.rx` and stays
        // open for as long as `self` (and so the borrow) lives.
        unsafe { BorrowedFd::borrow_raw(self.rx.fd().as_raw_fd()) }
    }

    /// Moves frames from the end of `frames` into the fill ring, as many as
    /// fit; returns how many.
    pub fn fill(&mut self, frames: &mut Vec<Frame>) -> usize {
        // libxdp may report more free slots than asked for.
        let want = (self.fill.nb_free(frames.len() as u32) as usize).min(frames.len());
        if want == 0 {
            return 0;
        }
        let start = frames.len() - want;
        self.scratch.clear();
        self.scratch.extend(frames[start..].iter().map(|f| f.0));
        // SAFETY: every descriptor comes from a `Frame`, which is owned by
        // user space and in no ring; the frames are removed from `frames`
        // below for exactly the number the ring accepted.
        let n = unsafe { self.fill.produce(&self.scratch) };
        frames.truncate(frames.len() - n);
        if n < want {
            // produce() is all-or-nothing; the rest stays ours.
            frames.extend(self.scratch[n..].iter().map(|d| Frame(*d)));
        }
        n
    }

    /// True when the kernel asks to be woken to keep filling rx.
    pub fn fill_needs_wakeup(&self) -> bool {
        self.fill.needs_wakeup()
    }

    /// Takes up to `max` received frames into `out`; waits up to
    /// `timeout_ms` (poll) when none are ready. Returns how many.
    pub fn receive(&mut self, out: &mut Vec<Frame>, max: usize, timeout_ms: i32) -> usize {
        self.scratch.clear();
        self.scratch.resize(max, FrameDesc::default());
        // SAFETY: the descriptors written are frames the kernel hands back
        // from the rx ring; each becomes a `Frame` owned by the caller.
        let mut n = unsafe { self.rx.consume(&mut self.scratch) };
        if n == 0 && timeout_ms != 0 {
            // SAFETY: as above.
            n = unsafe { self.rx.poll_and_consume(&mut self.scratch, timeout_ms) }.unwrap_or(0);
        }
        out.extend(self.scratch[..n].iter().map(|d| Frame(*d)));
        n
    }

    /// Lets `f` rewrite a received frame in place. `f` gets the whole frame
    /// buffer and the received length and returns the length to send, if
    /// any; the frame's length is set to it.
    pub fn rewrite<R>(
        &mut self,
        frame: &mut Frame,
        f: impl FnOnce(&mut [u8], usize) -> (R, Option<usize>),
    ) -> R {
        // SAFETY: `frame` is owned by user space (in no ring), so nothing
        // else reads or writes its memory while we hold it.
        let mut data = unsafe { self.umem.data_mut(&mut frame.0) };
        let len = data.contents().len();
        let mut cursor = data.cursor();
        cursor.set_pos(usize::MAX); // widen to the whole frame (clamped)
        let (r, send) = f(data.contents_mut(), len);
        data.cursor().set_pos(send.unwrap_or(len));
        r
    }

    /// Moves frames from `frames` into the tx ring (as many as fit), wakes
    /// the kernel if it asks for it, and returns how many were queued; the
    /// rest stay in `frames`.
    pub fn transmit(&mut self, frames: &mut Vec<Frame>) -> usize {
        if frames.is_empty() {
            return 0;
        }
        // libxdp may report more free slots than asked for.
        let fit = (self.tx.nb_free(frames.len() as u32) as usize).min(frames.len());
        self.scratch.clear();
        self.scratch.extend(frames[..fit].iter().map(|f| f.0));
        // SAFETY: every descriptor comes from a `Frame` owned by user space
        // and in no ring; exactly the accepted ones are removed below.
        let n = unsafe { self.tx.produce(&self.scratch) };
        frames.drain(..n);
        // In copy mode one sendto() kick sends at most TX_BATCH_SIZE (32,
        // net/xdp/xsk.c) frames, so kick once per 32 queued.
        if self.tx.needs_wakeup() {
            for _ in 0..n.div_ceil(TX_KICK_BATCH).max(1) {
                let _ = self.tx.wakeup();
            }
        }
        n
    }

    /// Kicks the tx ring (when frames wait to be sent and need_wakeup is set).
    pub fn wakeup_tx(&self) {
        if self.tx.needs_wakeup() {
            let _ = self.tx.wakeup();
        }
    }

    /// Takes sent frames back from the completion ring into `out`.
    pub fn complete(&mut self, out: &mut Vec<Frame>, max: usize) -> usize {
        self.scratch.clear();
        self.scratch.resize(max, FrameDesc::default());
        // SAFETY: the completion ring returns frames the kernel has finished
        // sending; each becomes a `Frame` owned by the caller.
        let n = unsafe { self.comp.consume(&mut self.scratch) };
        out.extend(self.scratch[..n].iter().map(|d| Frame(*d)));
        n
    }

    /// True when the socket is bound in zero-copy mode (the driver's own
    /// buffers), false in copy mode (XDP_OPTIONS).
    pub fn zero_copy(&self) -> std::io::Result<bool> {
        let mut opts = libc::xdp_options { flags: 0 };
        let mut len = size_of::<libc::xdp_options>() as libc::socklen_t;
        // SAFETY: `fd` is this socket's open descriptor; `opts` and `len`
        // are live and `len` is the size of `opts`, which the kernel fills.
        let rc = unsafe {
            libc::getsockopt(
                self.rx.fd().as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_OPTIONS,
                (&mut opts as *mut libc::xdp_options).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
    }

    /// Turns on preferred busy polling for this socket.
    pub fn set_busy_poll(&self, b: BusyPoll) -> std::io::Result<()> {
        let fd = self.rx.fd().as_raw_fd();
        for (opt, v) in [
            (SO_PREFER_BUSY_POLL, 1),
            (SO_BUSY_POLL, b.usecs),
            (SO_BUSY_POLL_BUDGET, b.budget),
        ] {
            let v = libc::c_int::try_from(v).unwrap_or(libc::c_int::MAX);
            // SAFETY: `fd` is this socket's open descriptor; the option
            // value is a live c_int whose size is passed with it, and the
            // kernel copies it before returning.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&v as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// With busy polling on: runs the socket's NAPI context once from this
    /// thread (a non-blocking, empty recvfrom), filling the rx ring.
    pub fn busy_poll(&self) {
        // SAFETY: a zero-length receive into no buffer on this socket's
        // open descriptor; the kernel writes nothing back.
        let _ = unsafe {
            libc::recvfrom(
                self.rx.fd().as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }

    /// Wakes the kernel to refill rx (need_wakeup on the fill ring).
    pub fn wakeup_rx(&mut self) {
        let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
    }

    /// The kernel's statistics for this socket.
    pub fn kernel_stats(&self) -> KernelStats {
        match self.rx.fd().xdp_statistics() {
            Ok(s) => KernelStats {
                rx_dropped: s.rx_dropped(),
                rx_fill_ring_empty: s.rx_fill_ring_empty_descs(),
                rx_ring_full: s.rx_ring_full(),
                tx_invalid: s.tx_invalid_descs(),
                tx_ring_empty: s.tx_ring_empty_descs(),
            },
            Err(_) => KernelStats::default(),
        }
    }
}
