//! Zero-copy packet views and builders.
//!
//! The shape follows smoltcp: a `Packet<T: AsRef<[u8]>>` view wraps a buffer,
//! `new_checked` validates every length the accessors rely on, and after that
//! no accessor can panic. A separate `Repr` holds the parsed meaning and has
//! `parse` and `emit`.

pub mod checksum;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;

/// Why a buffer could not be viewed as a packet of some layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer ends before the header (or a length field) says it should.
    #[error("truncated header")]
    Truncated,
    /// A length, version or offset field has an impossible value.
    #[error("malformed header")]
    Malformed,
    /// A TCP option or IPv6 extension header has an impossible length.
    #[error("malformed option")]
    BadOption,
    /// More VLAN tags or IPv6 extension headers than we walk.
    #[error("too many nested headers")]
    TooDeep,
}

/// Result type of the wire layer.
pub type Result<T> = core::result::Result<T, Error>;

/// Reads a big-endian u16 at `at`; callers have checked the length.
#[inline(always)]
pub(crate) fn be16(buf: &[u8], at: usize) -> u16 {
    match buf.get(at..at + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

/// Reads a big-endian u32 at `at`; callers have checked the length.
#[inline(always)]
pub(crate) fn be32(buf: &[u8], at: usize) -> u32 {
    match buf.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// Writes a big-endian u16 at `at` if it fits (a short buffer is left as is).
#[inline(always)]
pub fn put16(buf: &mut [u8], at: usize, v: u16) {
    if let Some(s) = buf.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// Writes a big-endian u32 at `at` if it fits (a short buffer is left as is).
#[inline(always)]
pub fn put32(buf: &mut [u8], at: usize, v: u32) {
    if let Some(s) = buf.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}
