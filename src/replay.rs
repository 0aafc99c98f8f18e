//! `synwall replay`: the handshake core over every frame of a capture, with
//! each frame's capture timestamp as `now`. What the core would transmit is
//! written to an output pcap; the tally becomes a one-line JSON summary.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use serde::Serialize;

use crate::proto::handshake::{Core, Verdict};
use crate::proto::time::UnixTime;

/// Room for a reply: an AF_XDP frame is at least this big, so replay gives
/// the core the same space the datapath does.
pub const FRAME_ROOM: usize = 2048;

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The capture could not be parsed.
    #[error("cannot read capture: {0}")]
    Input(pcap_file::PcapError),
    /// A link type other than Ethernet.
    #[error("capture link type is {0:?}; only Ethernet captures can be replayed")]
    LinkType(DataLink),
    /// The output could not be written.
    #[error("cannot write output capture: {0}")]
    Output(pcap_file::PcapError),
}

/// The tally of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Frames read.
    pub frames: u64,
    /// Frames answered (SYN-ACKs written to the output).
    pub transmitted: u64,
    /// Frames left to the kernel.
    pub passed: u64,
    /// ACKs whose cookie validated.
    pub cookie_valid: u64,
    /// ACKs whose cookie did not (also counted in `dropped.bad_cookie`).
    pub cookie_invalid: u64,
    /// Drops by reason.
    pub dropped: BTreeMap<&'static str, u64>,
}

impl Summary {
    fn count(&mut self, v: Verdict) {
        self.frames += 1;
        match v {
            Verdict::Pass => self.passed += 1,
            Verdict::Transmit(_) => self.transmitted += 1,
            Verdict::Established(_) => self.cookie_valid += 1,
            Verdict::Drop(r) => {
                if r == crate::proto::handshake::DropReason::BadCookie {
                    self.cookie_invalid += 1;
                }
                *self.dropped.entry(r.as_str()).or_default() += 1;
            }
        }
    }
}

/// Runs `core` over the capture in `input` (pcap or pcapng, Ethernet link
/// type) and writes every reply to `output` as pcap.
pub fn replay<W: Write>(core: &mut Core, input: &[u8], output: W) -> Result<Summary, ReplayError> {
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: pcap_file::TsResolution::NanoSecond,
        ..PcapHeader::default()
    };
    let mut out = PcapWriter::with_header(output, header).map_err(ReplayError::Output)?;
    let mut summary = Summary::default();
    let mut buf = vec![0u8; FRAME_ROOM];
    let mut step =
        |ts: Duration, data: &[u8], out: &mut PcapWriter<W>| -> Result<(), ReplayError> {
            if buf.len() < data.len() + 64 {
                buf.resize(data.len() + 64, 0);
            }
            buf[..data.len()].copy_from_slice(data);
            let v = core.handle(UnixTime(ts.as_secs()), &mut buf, data.len());
            if let Verdict::Transmit(n) = v {
                let reply = &buf[..n];
                out.write_packet(&PcapPacket::new(ts, n as u32, reply))
                    .map_err(ReplayError::Output)?;
            }
            summary.count(v);
            Ok(())
        };

    if input.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut r = PcapNgReader::new(input).map_err(ReplayError::Input)?;
        while let Some(block) = r.next_block() {
            let Block::EnhancedPacket(p) = block.map_err(ReplayError::Input)? else {
                continue;
            };
            // The block borrows the reader; take what we need out of it.
            let (id, raw_ts, data) = (p.interface_id, p.timestamp, p.data.into_owned());
            let iface = usize::try_from(id)
                .ok()
                .and_then(|i| r.interfaces().get(i))
                .ok_or(ReplayError::Input(pcap_file::PcapError::InvalidField(
                    "packet names an undeclared interface",
                )))?;
            if iface.linktype != DataLink::ETHERNET {
                return Err(ReplayError::LinkType(iface.linktype));
            }
            let ts = pcapng_time(raw_ts, &iface.options);
            step(ts, &data, &mut out)?;
        }
    } else {
        let mut r = PcapReader::new(input).map_err(ReplayError::Input)?;
        if r.header().datalink != DataLink::ETHERNET {
            return Err(ReplayError::LinkType(r.header().datalink));
        }
        while let Some(p) = r.next_packet() {
            let p = p.map_err(ReplayError::Input)?;
            step(p.timestamp, &p.data, &mut out)?;
        }
    }
    Ok(summary)
}

/// pcap-file 2.0 returns the raw 64-bit pcapng timestamp as nanoseconds;
/// its unit is really 10^-6 s unless `if_tsresol` says otherwise
/// (draft-ietf-opsawg-pcapng §4.2: MSB clear, a power of ten; set, of two).
fn pcapng_time(raw: Duration, options: &[InterfaceDescriptionOption<'_>]) -> Duration {
    let ticks = raw.as_nanos();
    let resol = options
        .iter()
        .find_map(|o| match o {
            InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
            _ => None,
        })
        .unwrap_or(6);
    let nanos = if resol & 0x80 == 0 {
        let exp = u32::from(resol);
        if exp <= 9 {
            ticks.saturating_mul(10u128.pow(9 - exp))
        } else {
            ticks / 10u128.pow((exp - 9).min(38))
        }
    } else {
        let exp = u32::from(resol & 0x7f).min(127);
        ticks.saturating_mul(1_000_000_000) >> exp
    };
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcapng_resolutions() {
        let raw = Duration::from_nanos(1_700_000_000_123_456);
        assert_eq!(
            pcapng_time(raw, &[]),
            Duration::from_micros(1_700_000_000_123_456)
        );
        let ns = [InterfaceDescriptionOption::IfTsResol(9)];
        assert_eq!(pcapng_time(raw, &ns), raw);
        let bin = [InterfaceDescriptionOption::IfTsResol(0x80 | 10)];
        assert_eq!(
            pcapng_time(Duration::from_nanos(1024 * 5), &bin),
            Duration::from_secs(5)
        );
    }
}
