//! The socket options the repair hand-off engine sets (`TCP_REPAIR` and
//! its companions, Linux `include/uapi/linux/tcp.h`), which neither rustix
//! nor any well-kept crate wraps: one raw `setsockopt` for plain values,
//! here beside the other kernel interfaces that need FFI.

use std::os::fd::{AsRawFd, BorrowedFd};

/// `TCP_MAXSEG`: the MSS clamp (before connect, so the socket's MSS is
/// computed from it).
pub const TCP_MAXSEG: i32 = 2;
/// `TCP_REPAIR`: 1 on, 0 off (the kernel then sends a window probe).
pub const TCP_REPAIR: i32 = 19;
/// `TCP_REPAIR_QUEUE`: which queue `TCP_QUEUE_SEQ` and `send` address.
pub const TCP_REPAIR_QUEUE: i32 = 20;
/// `TCP_QUEUE_SEQ`: the selected queue's next sequence number.
pub const TCP_QUEUE_SEQ: i32 = 21;
/// `TCP_REPAIR_OPTIONS`: an array of [`RepairOpt`].
pub const TCP_REPAIR_OPTIONS: i32 = 22;
/// `TCP_TIMESTAMP`: sets the socket's timestamp offset so that its clock
/// reads the value given now.
pub const TCP_TIMESTAMP: i32 = 24;
/// `TCP_REPAIR_WINDOW`: a [`RepairWindow`] (Linux 4.8).
pub const TCP_REPAIR_WINDOW: i32 = 29;
/// `TCP_REPAIR_QUEUE` values.
pub const TCP_RECV_QUEUE: u32 = 1;
/// The send queue.
pub const TCP_SEND_QUEUE: u32 = 2;

/// `struct tcp_repair_opt`: one negotiated option.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RepairOpt {
    /// `TCPOPT_*` code.
    pub code: u32,
    /// Its value (for TCPOPT_WINDOW: send shift | receive shift << 16).
    pub value: u32,
}

/// `struct tcp_repair_window`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RepairWindow {
    /// The sequence number of the segment that last updated the window.
    pub snd_wl1: u32,
    /// The peer's window, in bytes.
    pub snd_wnd: u32,
    /// The largest window the peer has offered.
    pub max_window: u32,
    /// Our window, in bytes.
    pub rcv_wnd: u32,
    /// The sequence number our window was last advertised at.
    pub rcv_wup: u32,
}

/// Plain-data values `setsockopt` may copy: integers and the `#[repr(C)]`
/// structs above, and slices of them.
pub trait Value {}
impl Value for i32 {}
impl Value for u32 {}
impl Value for RepairWindow {}
impl Value for [RepairOpt] {}

/// `setsockopt(fd, IPPROTO_TCP, name, value)`.
pub fn set_tcp<T: Value + ?Sized>(fd: BorrowedFd, name: i32, value: &T) -> std::io::Result<()> {
    let len = std::mem::size_of_val(value) as libc::socklen_t;
    // SAFETY: `value` is a live reference to `len` bytes of plain data
    // (`Value` is implemented only for integers and #[repr(C)] structs of
    // integers, and slices of them), which the kernel only reads; the fd is
    // borrowed, so it is open for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            name,
            std::ptr::from_ref(value).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
