//! The Internet checksum (RFC 1071), the TCP pseudo-headers (RFC 9293 §3.1 for
//! IPv4, RFC 8200 §8.1 for IPv6) and the incremental update of RFC 1624.

/// IP protocol number of TCP (IANA).
pub const PROTO_TCP: u8 = 6;

/// Adds `data` to a one's-complement accumulator as big-endian 16-bit words
/// (an odd last byte is padded with zero, RFC 1071 §4.1).
///
/// Eight bytes are added at a time as one 64-bit word with end-around carry:
/// since 2^16 ≡ 1 modulo 0xffff, wider words fold to the same 16-bit sum
/// (RFC 1071 §2(B), "parallel summation").
#[inline]
pub fn accumulate(mut acc: u64, data: &[u8]) -> u64 {
    let (chunks, rest) = data.as_chunks::<8>();
    for c in chunks {
        let (sum, carry) = acc.overflowing_add(u64::from_be_bytes(*c));
        acc = sum + u64::from(carry);
    }
    // At most 7 bytes remain: a 32-bit word, a 16-bit word, a last byte.
    let mut small = 0u64;
    let mut rest = rest;
    if let Some((w, r)) = rest.split_first_chunk::<4>() {
        small += u64::from(u32::from_be_bytes(*w));
        rest = r;
    }
    if let Some((w, r)) = rest.split_first_chunk::<2>() {
        small += u64::from(u16::from_be_bytes(*w));
        rest = r;
    }
    if let Some(&b) = rest.first() {
        small += u64::from(b) << 8;
    }
    let (sum, carry) = acc.overflowing_add(small);
    sum + u64::from(carry)
}

/// Folds an accumulator to 16 bits (end-around carry).
#[inline]
pub fn fold(acc: u64) -> u16 {
    let mut a = (acc & 0xffff_ffff) + (acc >> 32);
    a = (a & 0xffff) + (a >> 16);
    a = (a & 0xffff) + (a >> 16);
    a = (a & 0xffff) + (a >> 16);
    a as u16
}

/// The checksum field value for `data` (the complement of the folded sum).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(accumulate(0, data))
}

/// Accumulator seeded with the IPv4 pseudo-header (RFC 9293 §3.1).
#[inline]
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u64 {
    // 32-bit words fold like 16-bit ones (see `accumulate`).
    u64::from(u32::from_be_bytes(src))
        + u64::from(u32::from_be_bytes(dst))
        + u64::from(proto)
        + u64::from(len)
}

/// Accumulator seeded with the IPv6 pseudo-header (RFC 8200 §8.1).
#[inline]
pub fn pseudo_v6(src: [u8; 16], dst: [u8; 16], next_header: u8, len: u32) -> u64 {
    let words = |a: [u8; 16]| -> u64 {
        let (w, _) = a.as_chunks::<4>();
        w.iter().map(|w| u64::from(u32::from_be_bytes(*w))).sum()
    };
    words(src) + words(dst) + u64::from(next_header) + u64::from(len)
}

/// True when `data`, which contains its own checksum field, sums to 0xffff
/// on top of `seed` (a pseudo-header accumulator, or 0).
#[inline]
pub fn verify(seed: u64, data: &[u8]) -> bool {
    fold(accumulate(seed, data)) == 0xffff
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit field changes from `old`
/// to `new`: HC' = ~(~HC + ~m + m').
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let acc = u64::from(!check) + u64::from(!old) + u64::from(new);
    !fold(acc)
}

/// RFC 1624 for a 32-bit field (two 16-bit halves).
#[inline]
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let c = update16(check, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straightforward RFC 1071 reference: 16-bit words, u32 accumulator.
    fn reference(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            sum += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
            i += 2;
        }
        if i < data.len() {
            sum += u32::from(data[i]) << 8;
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(accumulate(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A captured IPv4 header whose checksum field is 0xb861.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert!(verify(0, &hdr));
        let mut zeroed = hdr;
        zeroed[10] = 0;
        zeroed[11] = 0;
        assert_eq!(checksum(&zeroed), 0xb861);
    }

    proptest! {
        #[test]
        fn pseudo_headers_match_byte_sums(src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), len in any::<u16>()) {
            let mut b4 = Vec::new();
            b4.extend_from_slice(&src[..4]);
            b4.extend_from_slice(&dst[..4]);
            b4.extend_from_slice(&[0, 6]);
            b4.extend_from_slice(&len.to_be_bytes());
            let s4: [u8; 4] = src[..4].try_into().unwrap();
            let d4: [u8; 4] = dst[..4].try_into().unwrap();
            prop_assert_eq!(fold(pseudo_v4(s4, d4, 6, len)) % 0xffff, fold(accumulate(0, &b4)) % 0xffff);
            let mut b6 = Vec::new();
            b6.extend_from_slice(&src);
            b6.extend_from_slice(&dst);
            b6.extend_from_slice(&u32::from(len).to_be_bytes());
            b6.extend_from_slice(&[0, 0, 0, 6]);
            prop_assert_eq!(fold(pseudo_v6(src, dst, 6, u32::from(len))) % 0xffff, fold(accumulate(0, &b6)) % 0xffff);
        }

        #[test]
        fn matches_reference(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(checksum(&data), reference(&data));
        }

        #[test]
        fn incremental_matches_full(
            mut data in proptest::collection::vec(any::<u8>(), 4..64),
            word in 0usize..32,
            new in any::<u16>(),
            new32 in any::<u32>(),
        ) {
            let len = data.len() & !1;
            data.truncate(len);
            let at = (word * 2) % (len - 2);
            let before = checksum(&data);
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            data[at..at + 2].copy_from_slice(&new.to_be_bytes());
            // One's complement has two zeros; compare folded sums, not bit patterns.
            let inc = update16(before, old, new);
            prop_assert_eq!(fold(u64::from(!inc)) % 0xffff, fold(u64::from(!checksum(&data))) % 0xffff);

            if len >= 8 {
                let at = (word * 2) % (len - 4);
                let before = checksum(&data);
                let old = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
                data[at..at + 4].copy_from_slice(&new32.to_be_bytes());
                let inc = update32(before, old, new32);
                prop_assert_eq!(fold(u64::from(!inc)) % 0xffff, fold(u64::from(!checksum(&data))) % 0xffff);
            }
        }
    }
}
