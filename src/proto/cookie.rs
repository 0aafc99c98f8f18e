//! SYN cookies as specified in `docs/cookie.md`: SipHash-2-4 with 128-bit
//! per-epoch keys derived from a master secret, 22 MAC bits and 10 attribute
//! bits in the ISN, and 32 more MAC bits in TSval when the client uses
//! timestamps. The spec's test vectors (`tests/vectors/cookie.json`) pin this
//! implementation and the BPF one to the same output.

use siphasher::sip::SipHasher24;
use siphasher::sip128::SipHasher24 as SipHasher24x128;

use super::time::UnixTime;

/// MAC bits carried in the ISN. A random ACK without timestamps is accepted
/// with probability 2^-22 (docs/cookie.md §5); Linux's own cookies, about 2^-21.
pub const ISN_MAC_BITS: u32 = 22;
/// Attribute bits below the MAC in the ISN.
pub const ATTR_BITS: u32 = 10;
const ATTR_MASK: u32 = (1 << ATTR_BITS) - 1;
const MAC_MASK: u64 = (1 << ISN_MAC_BITS) - 1;
/// Version of the MAC message layout, mixed into every MAC.
pub const VERSION: u32 = 1;
/// Domain-separation label of the key derivation.
pub const KDF_LABEL: &[u8; 16] = b"synwall-key-v1\0\0";
/// Window-scale field value meaning "the client sent no window scale".
const WSCALE_NONE: u32 = 15;
/// Entries in the MSS table: 3 bits of the ISN index it.
pub const MSS_TABLE_LEN: usize = 8;

/// MSS values the cookie can express, ascending. The default covers the
/// minimum (536, RFC 9293 §3.7.1), IPv6's minimum MTU minus headers (1220),
/// common tunnel and PPPoE sizes, Ethernet (1460) and jumbo frames (8960).
pub const DEFAULT_MSS_TABLE: [u16; MSS_TABLE_LEN] = [536, 1220, 1300, 1360, 1400, 1440, 1460, 8960];

/// The 8-entry MSS table (configurable; every node of a fleet must agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MssTable([u16; MSS_TABLE_LEN]);

impl Default for MssTable {
    fn default() -> Self {
        MssTable(DEFAULT_MSS_TABLE)
    }
}

impl MssTable {
    /// A table from strictly ascending, non-zero entries.
    pub fn new(entries: [u16; MSS_TABLE_LEN]) -> Result<Self, &'static str> {
        if entries[0] == 0 {
            return Err("MSS table entries must be non-zero");
        }
        if entries.windows(2).any(|w| w[0] >= w[1]) {
            return Err("MSS table entries must be strictly ascending");
        }
        Ok(MssTable(entries))
    }

    /// The index of the largest entry not above `mss` (entry 0 when `mss` is
    /// below every entry, as Linux does with its smallest table entry).
    pub fn index_for(&self, mss: u16) -> u8 {
        let below = self.0.iter().filter(|&&e| e <= mss).count();
        below.saturating_sub(1) as u8
    }

    /// The entry at `index` (masked to the table size).
    pub fn get(&self, index: u8) -> u16 {
        self.0[usize::from(index) & (MSS_TABLE_LEN - 1)]
    }

    /// The entries.
    pub const fn entries(&self) -> [u16; MSS_TABLE_LEN] {
        self.0
    }
}

/// The fleet's master secret (128 bits).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 16]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Not exactly 32 hexadecimal digits.
    #[error("the secret must be exactly 32 hexadecimal digits (128 bits), found {0} characters")]
    Length(usize),
    /// A character that is not a hex digit.
    #[error("the secret contains a character that is not a hexadecimal digit")]
    NotHex,
    /// The system's random source failed.
    #[error("no randomness available for a secret: {0}")]
    Random(String),
}

impl Secret {
    /// A secret from its 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Secret(bytes)
    }

    /// Parses 32 hex digits; surrounding whitespace is ignored.
    pub fn from_hex(text: &str) -> Result<Self, SecretError> {
        let t = text.trim();
        if t.len() != 32 {
            return Err(SecretError::Length(t.chars().count()));
        }
        let mut out = [0u8; 16];
        for (i, pair) in t.as_bytes().chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(SecretError::NotHex)?;
            let lo = hex_val(pair[1]).ok_or(SecretError::NotHex)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Secret(out))
    }

    /// A fresh random secret from the operating system.
    pub fn random() -> Result<Self, SecretError> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(|e| SecretError::Random(e.to_string()))?;
        Ok(Secret(b))
    }

    /// The secret as 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A fingerprint that tells secrets apart without revealing them: the
    /// first 64 bits of SipHash-2-4-128 keyed with the secret over
    /// `"synwall secret fingerprint v1"` (29 bytes, so never a key
    /// derivation's 24-byte message), as 16 hex digits. Nodes of one fleet
    /// show the same one (docs/cookie.md §2).
    pub fn fingerprint(&self) -> String {
        let h = SipHasher24x128::new_with_key(&self.0)
            .hash(b"synwall secret fingerprint v1")
            .as_bytes();
        h[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The key of `epoch`: SipHash-2-4-128 keyed with the secret over
    /// `KDF_LABEL || epoch (u64, big-endian)` (docs/cookie.md §2).
    pub fn epoch_key(&self, epoch: u64) -> EpochKey {
        let mut msg = [0u8; 24];
        msg[..16].copy_from_slice(KDF_LABEL);
        msg[16..].copy_from_slice(&epoch.to_be_bytes());
        let key = SipHasher24x128::new_with_key(&self.0).hash(&msg).as_bytes();
        EpochKey {
            epoch,
            hasher: SipHasher24::new_with_key(&key),
        }
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// One epoch's MAC key.
#[derive(Debug, Clone)]
pub struct EpochKey {
    epoch: u64,
    hasher: SipHasher24,
}

impl EpochKey {
    /// The epoch number.
    pub const fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The 128-bit key as the two little-endian words SipHash calls k0, k1
    /// (what the BPF side receives).
    pub fn words(&self) -> (u64, u64) {
        self.hasher.keys()
    }

    fn mac(&self, msg: &[u8]) -> u64 {
        self.hasher.hash(msg)
    }
}

/// When each epoch's key is accepted (docs/cookie.md §2): always the epoch
/// now, and beside it the previous one, except in the last `skew_secs` of
/// an epoch, when the next one takes the previous one's parity slot. A
/// node whose clock runs up to `skew_secs` ahead of this one (or up to
/// `rotation_secs - skew_secs` behind) therefore mints cookies this one
/// accepts, and no more than two keys per secret are ever accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySchedule {
    rotation_secs: u64,
    skew_secs: u64,
}

/// The clock difference between nodes that the default schedule tolerates
/// in both directions, when `rotation_secs` allows it (at most half of it).
pub const DEFAULT_SKEW_SECS: u64 = 10;

/// The epochs whose keys are accepted at one moment, and the moments
/// (UNIX seconds, `[from, until)`) between which that holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epochs {
    /// The epoch now: it signs new cookies.
    pub current: u64,
    /// The other accepted epoch: `current - 1`, or `current + 1` in the
    /// epoch's last `skew_secs`.
    pub neighbour: u64,
    /// The first second of this state.
    pub from: u64,
    /// The first second after it.
    pub until: u64,
}

impl Epochs {
    /// The two accepted epochs in the order of their parity slots
    /// (`[even, odd]`): what the BPF key map holds, the same before and
    /// after an epoch's turn.
    pub const fn by_slot(&self) -> [u64; 2] {
        if self.current & 1 == 0 {
            [self.current, self.neighbour]
        } else {
            [self.neighbour, self.current]
        }
    }

    /// `epoch` and the one before it: an epoch's state outside its last
    /// `skew_secs`, regardless of the moment.
    pub const fn with_previous(epoch: u64) -> Self {
        Epochs {
            current: epoch,
            neighbour: epoch.wrapping_sub(1),
            from: 0,
            until: 0,
        }
    }
}

impl KeySchedule {
    /// A schedule of `rotation_secs`-second epochs (at least 1) whose next
    /// key is accepted `skew_secs` before its epoch begins. The lead is
    /// kept between 1 s and half an epoch (0 for 1-second epochs); the
    /// configuration rejects values outside that range.
    pub const fn new(rotation_secs: u64, skew_secs: u64) -> Self {
        let rotation_secs = if rotation_secs == 0 { 1 } else { rotation_secs };
        let max = rotation_secs / 2;
        let skew_secs = if skew_secs > max {
            max
        } else if skew_secs == 0 && max > 0 {
            1
        } else {
            skew_secs
        };
        KeySchedule {
            rotation_secs,
            skew_secs,
        }
    }

    /// Seconds per epoch.
    pub const fn rotation_secs(&self) -> u64 {
        self.rotation_secs
    }

    /// Seconds before an epoch begins at which its key is accepted.
    pub const fn skew_secs(&self) -> u64 {
        self.skew_secs
    }

    /// The accepted epochs at `now`.
    pub const fn at(&self, now: UnixTime) -> Epochs {
        let current = now.epoch(self.rotation_secs);
        let start = current * self.rotation_secs;
        let end = start.saturating_add(self.rotation_secs);
        let lead = end - self.skew_secs;
        if now.0 >= lead {
            Epochs {
                current,
                neighbour: current.wrapping_add(1),
                from: lead,
                until: end,
            }
        } else {
            Epochs {
                current,
                neighbour: current.wrapping_sub(1),
                from: start,
                until: lead,
            }
        }
    }
}

/// The secrets a node works with: one mints and is accepted; during a
/// rollover a second one is accepted too (docs/cookie.md §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    /// Signs new cookies.
    pub mint: Secret,
    /// Also accepted (`cookie.previous_secret_file`), never used to sign.
    pub accept: Option<Secret>,
}

impl From<Secret> for Secrets {
    fn from(mint: Secret) -> Self {
        Secrets { mint, accept: None }
    }
}

/// One secret's keys of the two accepted epochs.
#[derive(Debug, Clone)]
struct KeyPair {
    current: EpochKey,
    neighbour: EpochKey,
}

impl KeyPair {
    fn new(secret: &Secret, epochs: &Epochs) -> Self {
        KeyPair {
            current: secret.epoch_key(epochs.current),
            neighbour: secret.epoch_key(epochs.neighbour),
        }
    }

    /// The key a cookie with epoch parity `bit` was signed with.
    fn for_parity(&self, bit: u32) -> &EpochKey {
        if u64::from(bit) == self.current.epoch & 1 {
            &self.current
        } else {
            &self.neighbour
        }
    }
}

/// The accepted keys at one moment: two epochs of the minting secret, and
/// of the accepted one during a rollover.
#[derive(Debug, Clone)]
pub struct KeyRing {
    mint: KeyPair,
    accept: Option<KeyPair>,
}

impl KeyRing {
    /// Keys of one secret for `epoch` and `epoch - 1` (an epoch's state
    /// outside its last `skew_secs`).
    pub fn new(secret: &Secret, epoch: u64) -> Self {
        KeyRing::of(
            &Secrets::from(secret.clone()),
            &Epochs::with_previous(epoch),
        )
    }

    /// The keys of `secrets` for `epochs`.
    pub fn of(secrets: &Secrets, epochs: &Epochs) -> Self {
        KeyRing {
            mint: KeyPair::new(&secrets.mint, epochs),
            accept: secrets.accept.as_ref().map(|s| KeyPair::new(s, epochs)),
        }
    }

    /// The keys of `secrets` at `now` under `schedule`.
    pub fn at(secrets: &Secrets, schedule: &KeySchedule, now: UnixTime) -> Self {
        KeyRing::of(secrets, &schedule.at(now))
    }

    /// The current epoch.
    pub const fn epoch(&self) -> u64 {
        self.mint.current.epoch
    }

    /// The key that signs new cookies.
    pub const fn current(&self) -> &EpochKey {
        &self.mint.current
    }
}

/// Addresses and ports of a connection, from the client's point of view
/// (source = client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flow {
    /// IPv4.
    V4 {
        /// Client address.
        src: [u8; 4],
        /// Server address.
        dst: [u8; 4],
        /// Client port.
        sport: u16,
        /// Server port.
        dport: u16,
    },
    /// IPv6.
    V6 {
        /// Client address.
        src: [u8; 16],
        /// Server address.
        dst: [u8; 16],
        /// Client port.
        sport: u16,
        /// Server port.
        dport: u16,
    },
}

/// The client's handshake options as the cookie carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SynAttrs {
    /// Index into the MSS table (0..8).
    pub mss_index: u8,
    /// Client's window-scale shift, clamped to 14; `None` if not offered.
    pub wscale: Option<u8>,
    /// Client sent SACK-permitted.
    pub sack: bool,
    /// ECN negotiated (client sent ECE+CWR and we answered ECE).
    pub ecn: bool,
    /// Timestamps negotiated (the client sent the option).
    pub timestamps: bool,
}

/// What goes on the wire: our ISN and, with timestamps, our TSval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cookie {
    /// Server ISN of the SYN-ACK.
    pub isn: u32,
    /// TSval of the SYN-ACK, when timestamps are negotiated.
    pub tsval: Option<u32>,
}

/// Why an ACK's cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// MAC mismatch: forged, corrupted, or older than the previous epoch.
    #[error("cookie MAC does not match")]
    BadMac,
}

fn encode_attrs(epoch: u64, a: &SynAttrs) -> u32 {
    let ws = a.wscale.map_or(WSCALE_NONE, |w| u32::from(w.min(14)));
    ((epoch & 1) as u32) << 9
        | (u32::from(a.mss_index) & 7) << 6
        | ws << 2
        | u32::from(a.sack) << 1
        | u32::from(a.ecn)
}

fn decode_attrs(bits: u32, timestamps: bool) -> SynAttrs {
    let ws = (bits >> 2) & 0xf;
    SynAttrs {
        mss_index: ((bits >> 6) & 7) as u8,
        wscale: if ws == WSCALE_NONE {
            None
        } else {
            Some((ws as u8).min(14))
        },
        sack: bits & 2 != 0,
        ecn: bits & 1 != 0,
        timestamps,
    }
}

/// Builds the MAC message (docs/cookie.md §4) in `buf`; returns its length.
#[inline]
fn message(buf: &mut [u8; 44], flow: &Flow, client_isn: u32, attrs: u32, ts: bool) -> usize {
    let info = VERSION << 24 | u32::from(ts) << ATTR_BITS | attrs;
    let (addr_len, sport, dport) = match flow {
        Flow::V4 {
            src,
            dst,
            sport,
            dport,
        } => {
            buf[..4].copy_from_slice(src);
            buf[4..8].copy_from_slice(dst);
            (8, *sport, *dport)
        }
        Flow::V6 {
            src,
            dst,
            sport,
            dport,
        } => {
            buf[..16].copy_from_slice(src);
            buf[16..32].copy_from_slice(dst);
            (32, *sport, *dport)
        }
    };
    let tail = &mut buf[addr_len..addr_len + 12];
    tail[..2].copy_from_slice(&sport.to_be_bytes());
    tail[2..4].copy_from_slice(&dport.to_be_bytes());
    tail[4..8].copy_from_slice(&client_isn.to_be_bytes());
    tail[8..12].copy_from_slice(&info.to_be_bytes());
    addr_len + 12
}

/// The cookie for a SYN: deterministic for a given SYN and epoch.
#[inline]
pub fn generate(key: &EpochKey, flow: &Flow, client_isn: u32, attrs: &SynAttrs) -> Cookie {
    let bits = encode_attrs(key.epoch, attrs);
    let mut buf = [0u8; 44];
    let n = message(&mut buf, flow, client_isn, bits, attrs.timestamps);
    let h = key.mac(&buf[..n]);
    Cookie {
        isn: ((h & MAC_MASK) as u32) << ATTR_BITS | bits,
        tsval: attrs.timestamps.then_some((h >> 32) as u32),
    }
}

/// Checks the cookie of a handshake-completing ACK.
///
/// `client_isn` is the ACK's sequence number minus one, `cookie_isn` its
/// acknowledgment number minus one, and `tsecr` the TSecr of its timestamps
/// option if it carries one (a client that negotiated timestamps must send
/// them on every segment, RFC 7323 §3.2).
#[inline]
pub fn check(
    keys: &KeyRing,
    flow: &Flow,
    client_isn: u32,
    cookie_isn: u32,
    tsecr: Option<u32>,
) -> Result<SynAttrs, CookieError> {
    let bits = cookie_isn & ATTR_MASK;
    let mut buf = [0u8; 44];
    let n = message(&mut buf, flow, client_isn, bits, tsecr.is_some());
    let proves = |pair: &KeyPair| {
        let h = pair.for_parity(bits >> 9).mac(&buf[..n]);
        let isn_ok = u64::from(cookie_isn >> ATTR_BITS) == h & MAC_MASK;
        isn_ok && tsecr.is_none_or(|t| t == (h >> 32) as u32)
    };
    if proves(&keys.mint) || keys.accept.as_ref().is_some_and(proves) {
        Ok(decode_attrs(bits, tsecr.is_some()))
    } else {
        Err(CookieError::BadMac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_fingerprint_tells_secrets_apart_and_is_not_a_key() {
        let a = Secret::from_bytes(*b"synwall-test-key");
        let b = Secret::from_bytes(*b"synwall-test-kez");
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
        assert!(!a.to_hex().contains(&a.fingerprint()));
    }

    #[test]
    fn siphash_reference_vector() {
        // SipHash paper, Appendix A: key 00..0f, message 00..0e.
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(
            SipHasher24::new_with_key(&key).hash(&msg),
            0xa129_ca61_49be_45e5
        );
    }

    #[test]
    fn mss_table_lookup() {
        let t = MssTable::default();
        assert_eq!(t.index_for(0), 0);
        assert_eq!(t.index_for(536), 0);
        assert_eq!(t.index_for(1219), 0);
        assert_eq!(t.index_for(1220), 1);
        assert_eq!(t.index_for(1460), 6);
        assert_eq!(t.index_for(8000), 6);
        assert_eq!(t.index_for(65495), 7);
        assert!(MssTable::new([1, 2, 3, 4, 5, 6, 7, 7]).is_err());
        assert!(MssTable::new([0, 2, 3, 4, 5, 6, 7, 8]).is_err());
    }

    #[test]
    fn secret_parsing() {
        let s = Secret::from_hex(" 000102030405060708090a0b0c0d0E0F\n").unwrap();
        assert_eq!(s.to_hex(), "000102030405060708090a0b0c0d0e0f");
        assert_eq!(Secret::from_hex("abc"), Err(SecretError::Length(3)));
        assert_eq!(Secret::from_hex(&"g".repeat(32)), Err(SecretError::NotHex));
        assert_ne!(Secret::random().unwrap(), Secret::random().unwrap());
    }

    fn flow() -> impl Strategy<Value = Flow> {
        prop_oneof![
            (
                any::<[u8; 4]>(),
                any::<[u8; 4]>(),
                any::<u16>(),
                any::<u16>()
            )
                .prop_map(|(src, dst, sport, dport)| Flow::V4 {
                    src,
                    dst,
                    sport,
                    dport
                }),
            (
                any::<[u8; 16]>(),
                any::<[u8; 16]>(),
                any::<u16>(),
                any::<u16>()
            )
                .prop_map(|(src, dst, sport, dport)| Flow::V6 {
                    src,
                    dst,
                    sport,
                    dport
                }),
        ]
    }

    fn attrs() -> impl Strategy<Value = SynAttrs> {
        (
            0u8..8,
            proptest::option::of(0u8..=14),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(mss_index, wscale, sack, ecn, timestamps)| SynAttrs {
                mss_index,
                wscale,
                sack,
                ecn,
                timestamps,
            })
    }

    proptest! {
        #[test]
        fn round_trip_within_window(
            secret in any::<[u8; 16]>(), flow in flow(), isn in any::<u32>(), attrs in attrs(),
            epoch in 1u64..1 << 40, later in 0u64..=1,
        ) {
            let secret = Secret::from_bytes(secret);
            let c = generate(&secret.epoch_key(epoch), &flow, isn, &attrs);
            // Deterministic for the same SYN and epoch.
            prop_assert_eq!(c, generate(&secret.epoch_key(epoch), &flow, isn, &attrs));
            prop_assert_eq!(c.tsval.is_some(), attrs.timestamps);
            let ring = KeyRing::new(&secret, epoch + later);
            prop_assert_eq!(check(&ring, &flow, isn, c.isn, c.tsval), Ok(attrs));
        }

        #[test]
        fn rejected_after_window(
            secret in any::<[u8; 16]>(), flow in flow(), isn in any::<u32>(), attrs in attrs(),
            epoch in 1u64..1 << 40, later in 2u64..1000,
        ) {
            let secret = Secret::from_bytes(secret);
            let c = generate(&secret.epoch_key(epoch), &flow, isn, &attrs);
            let ring = KeyRing::new(&secret, epoch + later);
            prop_assert_eq!(check(&ring, &flow, isn, c.isn, c.tsval), Err(CookieError::BadMac));
            // Nor is a cookie from the future accepted.
            let ring = KeyRing::new(&secret, epoch - 1);
            prop_assert_eq!(check(&ring, &flow, isn, c.isn, c.tsval), Err(CookieError::BadMac));
        }

        #[test]
        fn any_single_bit_change_is_rejected(
            secret in any::<[u8; 16]>(), flow in flow(), isn in any::<u32>(), attrs in attrs(),
            epoch in 1u64..1 << 40, bit in 0usize..(64 + 32 + 32 + 32 + 32 + 16 + 16),
        ) {
            let secret = Secret::from_bytes(secret);
            let c = generate(&secret.epoch_key(epoch), &flow, isn, &attrs);
            let ring = KeyRing::new(&secret, epoch);
            let (mut f, mut cisn, mut cookie, mut tsecr) = (flow, isn, c.isn, c.tsval);
            // Flip one bit of anything the ACK carries: addresses, ports, both
            // sequence numbers, or the echoed timestamp.
            let flip = |b: &mut [u8], i: usize| b[i / 8] ^= 1 << (i % 8);
            match (&mut f, bit) {
                (Flow::V4 { src, .. }, b @ 0..32) => flip(src, b),
                (Flow::V4 { dst, .. }, b @ 32..64) => flip(dst, b - 32),
                (Flow::V6 { src, .. }, b @ 0..32) => flip(src, b * 4),
                (Flow::V6 { dst, .. }, b @ 32..64) => flip(dst, (b - 32) * 4 + 1),
                (_, b @ 64..96) => cisn ^= 1 << (b - 64),
                (_, b @ 96..128) => cookie ^= 1 << (b - 96),
                (_, b @ 128..160) => match tsecr.as_mut() {
                    Some(t) => *t ^= 1 << (b - 128),
                    None => cookie ^= 1 << (b - 128),
                },
                (Flow::V4 { sport, .. } | Flow::V6 { sport, .. }, b @ 160..176) => *sport ^= 1 << (b - 160),
                (Flow::V4 { dport, .. } | Flow::V6 { dport, .. }, b) => *dport ^= 1 << ((b - 176) % 16),
            }
            prop_assert_eq!(check(&ring, &f, cisn, cookie, tsecr), Err(CookieError::BadMac));
        }

        #[test]
        fn stripping_timestamps_is_rejected(
            secret in any::<[u8; 16]>(), flow in flow(), isn in any::<u32>(), attrs in attrs(), epoch in 1u64..1 << 40,
        ) {
            let secret = Secret::from_bytes(secret);
            let with_ts = SynAttrs { timestamps: true, ..attrs };
            let c = generate(&secret.epoch_key(epoch), &flow, isn, &with_ts);
            let ring = KeyRing::new(&secret, epoch);
            prop_assert_eq!(check(&ring, &flow, isn, c.isn, None), Err(CookieError::BadMac));
        }
    }

    #[test]
    fn random_acks_are_rarely_accepted() {
        // 2^22 trials would be slow in debug; 2^18 random cookies against one
        // flow must give (almost surely) zero or one accept at 2^-22.
        let secret = Secret::from_bytes([7; 16]);
        let ring = KeyRing::new(&secret, 1000);
        let flow = Flow::V4 {
            src: [198, 18, 0, 2],
            dst: [198, 18, 0, 1],
            sport: 40000,
            dport: 80,
        };
        let mut x: u32 = 0x1234_5678;
        let mut accepted = 0;
        for _ in 0..(1 << 18) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            accepted += u32::from(check(&ring, &flow, 1, x, None).is_ok());
        }
        assert!(accepted <= 2, "{accepted} of 2^18 random cookies accepted");
    }
}
