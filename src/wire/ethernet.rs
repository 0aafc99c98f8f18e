//! Ethernet II frames (IEEE 802.3) with up to two VLAN tags (IEEE 802.1Q,
//! 802.1ad QinQ).

use super::{Error, Result, be16};

/// Length of the Ethernet II header: two MAC addresses and the EtherType.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag: TCI and the inner EtherType (IEEE 802.1Q §9.6).
pub const VLAN_TAG_LEN: usize = 4;
/// Tags we walk: one 802.1Q tag or an 802.1ad outer tag plus an inner one.
pub const MAX_VLAN_TAGS: usize = 2;

/// EtherType values (IANA "IEEE 802 Numbers").
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IEEE 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IEEE 802.1ad service VLAN tag (QinQ outer tag).
    pub const QINQ: u16 = 0x88a8;
    /// Pre-standard QinQ outer tag still sent by some switches.
    pub const QINQ_LEGACY: u16 = 0x9100;
}

/// A MAC address.
pub type MacAddr = [u8; 6];

/// A read/write view of an Ethernet II header at the start of a buffer.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Wraps a buffer that holds at least an Ethernet header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Frame { buffer })
    }

    /// Destination MAC address.
    pub fn dst_addr(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), 0)
    }

    /// Source MAC address.
    pub fn src_addr(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), 6)
    }

    /// The outer EtherType (a VLAN TPID when the frame is tagged).
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), 12)
    }

    /// Everything after the Ethernet header.
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Exchanges the source and destination MAC addresses, turning the frame
    /// around towards its sender.
    pub fn swap_addrs(&mut self) {
        if let Some(h) = self.buffer.as_mut().get_mut(..12) {
            let (dst, src) = h.split_at_mut(6);
            dst.swap_with_slice(src);
        }
    }
}

fn mac_at(buf: &[u8], at: usize) -> MacAddr {
    let mut mac = [0; 6];
    if let Some(s) = buf.get(at..at + 6) {
        mac.copy_from_slice(s);
    }
    mac
}

/// True for a group (multicast or broadcast) MAC address: the I/G bit.
pub fn is_group(mac: MacAddr) -> bool {
    mac[0] & 1 == 1
}

/// The layer-2 facts the datapath needs, found without copying addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2 {
    /// EtherType of the payload after any VLAN tags.
    pub ethertype: u16,
    /// Where the payload starts.
    pub header_len: usize,
    /// The source MAC is a group (multicast/broadcast) address.
    pub src_is_group: bool,
}

impl L2 {
    /// Walks the header and up to [`MAX_VLAN_TAGS`] tags, with the same
    /// errors as [`Repr::parse`].
    #[inline]
    pub fn walk(buf: &[u8]) -> Result<L2> {
        let Some(hdr) = buf.first_chunk::<HEADER_LEN>() else {
            return Err(Error::Truncated);
        };
        let mut l2 = L2 {
            ethertype: u16::from_be_bytes([hdr[12], hdr[13]]),
            header_len: HEADER_LEN,
            src_is_group: hdr[6] & 1 == 1,
        };
        for _ in 0..MAX_VLAN_TAGS {
            if !is_vlan_tpid(l2.ethertype) {
                return Ok(l2);
            }
            let Some(&[_, _, a, b]) = buf.get(l2.header_len..l2.header_len + VLAN_TAG_LEN) else {
                return Err(Error::Truncated);
            };
            l2.ethertype = u16::from_be_bytes([a, b]);
            l2.header_len += VLAN_TAG_LEN;
        }
        if is_vlan_tpid(l2.ethertype) {
            return Err(Error::TooDeep);
        }
        Ok(l2)
    }
}

/// Parsed meaning of an Ethernet header and its VLAN tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Destination MAC address.
    pub dst: MacAddr,
    /// Source MAC address.
    pub src: MacAddr,
    /// VLAN tags, outermost first: (TPID, TCI).
    pub vlans: [(u16, u16); MAX_VLAN_TAGS],
    /// How many entries of `vlans` are used.
    pub vlan_count: u8,
    /// EtherType of the payload after the tags.
    pub ethertype: u16,
}

impl Repr {
    /// Parses the Ethernet header and walks up to [`MAX_VLAN_TAGS`] tags.
    ///
    /// A third tag gives [`Error::TooDeep`]; a tag cut short gives
    /// [`Error::Truncated`].
    pub fn parse(buf: &[u8]) -> Result<Repr> {
        let frame = Frame::new_checked(buf)?;
        let mut repr = Repr {
            dst: frame.dst_addr(),
            src: frame.src_addr(),
            vlans: [(0, 0); MAX_VLAN_TAGS],
            vlan_count: 0,
            ethertype: frame.ethertype(),
        };
        let mut at = HEADER_LEN;
        while is_vlan_tpid(repr.ethertype) {
            let idx = usize::from(repr.vlan_count);
            if idx >= MAX_VLAN_TAGS {
                return Err(Error::TooDeep);
            }
            if buf.len() < at + VLAN_TAG_LEN {
                return Err(Error::Truncated);
            }
            repr.vlans[idx] = (repr.ethertype, be16(buf, at));
            repr.ethertype = be16(buf, at + 2);
            repr.vlan_count += 1;
            at += VLAN_TAG_LEN;
        }
        Ok(repr)
    }

    /// Bytes taken by the header and its tags: where the payload starts.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN + VLAN_TAG_LEN * self.vlan_count as usize
    }

    /// Writes the header and tags to the start of `buf`; returns the length
    /// written, or [`Error::Truncated`] if `buf` is too short.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.header_len();
        let out = buf.get_mut(..len).ok_or(Error::Truncated)?;
        out[..6].copy_from_slice(&self.dst);
        out[6..12].copy_from_slice(&self.src);
        let mut at = 12;
        for &(tpid, tci) in self.vlans.iter().take(usize::from(self.vlan_count)) {
            out[at..at + 2].copy_from_slice(&tpid.to_be_bytes());
            out[at + 2..at + 4].copy_from_slice(&tci.to_be_bytes());
            at += VLAN_TAG_LEN;
        }
        out[at..at + 2].copy_from_slice(&self.ethertype.to_be_bytes());
        Ok(len)
    }
}

/// True for the tag protocol identifiers we walk.
pub const fn is_vlan_tpid(ethertype: u16) -> bool {
    matches!(
        ethertype,
        ethertype::VLAN | ethertype::QINQ | ethertype::QINQ_LEGACY
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_qinq() {
        let mut f = vec![0u8; 22];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&ethertype::QINQ.to_be_bytes());
        f[14..16].copy_from_slice(&100u16.to_be_bytes());
        f[16..18].copy_from_slice(&ethertype::VLAN.to_be_bytes());
        f[18..20].copy_from_slice(&200u16.to_be_bytes());
        f[20..22].copy_from_slice(&ethertype::IPV6.to_be_bytes());
        let r = Repr::parse(&f).unwrap();
        assert_eq!(r.vlan_count, 2);
        assert_eq!(r.vlans, [(ethertype::QINQ, 100), (ethertype::VLAN, 200)]);
        assert_eq!(r.ethertype, ethertype::IPV6);
        assert_eq!(r.header_len(), 22);
    }

    #[test]
    fn rejects_third_tag_and_truncation() {
        let mut f = vec![0u8; 26];
        for at in [12, 16, 20] {
            f[at..at + 2].copy_from_slice(&ethertype::VLAN.to_be_bytes());
        }
        assert_eq!(Repr::parse(&f), Err(Error::TooDeep));
        assert_eq!(Repr::parse(&f[..17]), Err(Error::Truncated));
        assert_eq!(Repr::parse(&f[..13]), Err(Error::Truncated));
    }

    #[test]
    fn swaps_addresses() {
        let mut f = [0u8; 14];
        f[..6].copy_from_slice(&[1; 6]);
        f[6..12].copy_from_slice(&[2; 6]);
        let mut frame = Frame::new_checked(&mut f[..]).unwrap();
        frame.swap_addrs();
        assert_eq!(frame.dst_addr(), [2; 6]);
        assert_eq!(frame.src_addr(), [1; 6]);
    }

    proptest! {
        #[test]
        fn walk_agrees_with_parse(data in proptest::collection::vec(any::<u8>(), 0..30), tags in 0usize..4) {
            let mut data = data;
            for i in 0..tags {
                let at = 12 + 4 * i;
                if data.len() >= at + 2 {
                    data[at..at + 2].copy_from_slice(&ethertype::VLAN.to_be_bytes());
                }
            }
            let walked = L2::walk(&data);
            match Repr::parse(&data) {
                Ok(r) => {
                    let w = walked.unwrap();
                    prop_assert_eq!(w.ethertype, r.ethertype);
                    prop_assert_eq!(w.header_len, r.header_len());
                    prop_assert_eq!(w.src_is_group, is_group(r.src));
                }
                Err(e) => prop_assert_eq!(walked, Err(e)),
            }
        }

        #[test]
        fn emit_parse_identity(
            dst in any::<[u8; 6]>(), src in any::<[u8; 6]>(),
            count in 0u8..=2, tci in any::<[u16; 2]>(),
            et in prop::sample::select(vec![ethertype::IPV4, ethertype::IPV6, ethertype::ARP]),
        ) {
            let mut vlans = [(0, 0); 2];
            for i in 0..usize::from(count) {
                vlans[i] = (if i == 0 && count == 2 { ethertype::QINQ } else { ethertype::VLAN }, tci[i]);
            }
            let repr = Repr { dst, src, vlans, vlan_count: count, ethertype: et };
            let mut buf = [0u8; 22];
            let n = repr.emit(&mut buf).unwrap();
            prop_assert_eq!(n, repr.header_len());
            prop_assert_eq!(Repr::parse(&buf[..n]).unwrap(), repr);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Repr::parse(&data);
        }
    }
}
