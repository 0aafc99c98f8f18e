// SPDX-License-Identifier: GPL-2.0
/* The bench kit's flood generator (synwall-flood --engine live).
 *
 * Run through BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES, the way
 * xdp-trafficgen works: the kernel runs this program on a template frame
 * `repeat` times and transmits each result (XDP_TX goes out of the
 * ingress_ifindex given in the context), with no socket, skb or copy on the
 * generator side. Each run randomises the source address inside the
 * benchmarking range of the template (198.18.0.0/16 of 198.18.0.0/15, or
 * the low 80 bits of 2001:2::/48), the source port, the sequence number and
 * (ACKs) the acknowledgment number, and fixes the checksums.
 *
 * Pacing (synwall-flood --rate) is a token bucket here, in the kernel's
 * loop: a run whose bucket is empty drops its frame (XDP_DROP recycles the
 * page at once) instead of sending it, so frames leave at the rate, spaced
 * by microseconds, however long the call; user space only chooses how many
 * runs a call makes. The bucket holds at most `pace.burst` frames: a
 * generator held up (another task on its CPU) sends at most that many at
 * once when it is back, as a link would.
 *
 * Pages are recycled between runs, and veth hands frames over by
 * reference: a receiver that rewrites a frame in place (an XDP_TX answer)
 * rewrites the page the next frame is made from. So each frame starts as a
 * fresh copy of the whole template (held here, not in the page), and the
 * checksums start from the template's, whose randomised fields are zero.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Set by user space before load. */
const volatile __u8 is_ipv6 = 0;
/* 0: SYN, 1: ACK (template has ACK), 2: mix (template has SYN; half ACK). */
const volatile __u8 mode = 0;
/* IPv4: which bits of the source's last 16 (198.18.H.L, as stored) are
 * random, and the fixed ones (synwall-flood --source-net). */
const volatile __u16 src_host_mask = 0xffff;
const volatile __u16 src_host_set = 0;
/* The template's checksums as they sit in the frame. */
const volatile __u16 tcp_csum0 = 0;
const volatile __u16 ip_csum0 = 0;
/* The template itself: Ethernet, IPv4 (20) or IPv6 (40), TCP with its
 * options; at most TEMPLATE_MAX bytes. */
#define TEMPLATE_MAX 128
const volatile __u8 template[TEMPLATE_MAX] = {};
const volatile __u32 template_len = 0;

/* The pace, written by user space before the first call; `sent` and
 * `forgone` carry over between calls (one call runs at a time, on one
 * CPU; user space only reads while it runs). rate 0: every run sends. */
struct pace {
	__u64 rate;	/* frames per second */
	__u64 burst;	/* the bucket's depth, frames */
	__u64 limit;	/* frames to send in all */
	__u64 t0;	/* CLOCK_MONOTONIC ns the flood starts (the bucket empty) */
	__u64 sent;
	__u64 forgone;	/* tokens lost while the bucket was full */
	__u64 end;	/* CLOCK_MONOTONIC ns from which nothing is sent */
};
struct pace pace = {};

/* Frames sent per millisecond since t0, the first PACE_SLOTS ms: what
 * synwall-flood reports as the flood's evenness. A map of its own, so
 * reading `pace` while a call runs copies 48 bytes. */
#define PACE_SLOTS 16384
__u32 per_ms[PACE_SLOTS] SEC(".data.per_ms") = {};

#define NSEC_PER_SEC 1000000000ULL

/* Whether this run may send, and if so it counts as sent. */
static __always_inline int may_send(void)
{
	__u64 now = bpf_ktime_get_ns(), due, allowed, ms;

	/* The flood's bounds, here as well as in user space: a stuck
	 * caller cannot make it send more or for longer. */
	if (pace.sent >= pace.limit || now >= pace.end || now < pace.t0)
		return 0;
	if (pace.rate) {
		/* In microseconds: no overflow below 10^8 frames/s (the most
		 * synwall-flood asks) for 10^5 s. */
		due = (now - pace.t0) / 1000 * pace.rate / 1000000;
		allowed = due - pace.forgone;
		if (allowed > pace.sent + pace.burst) {
			pace.forgone = due - pace.sent - pace.burst;
			allowed = pace.sent + pace.burst;
		}
		if (pace.sent >= allowed)
			return 0;
	}
	pace.sent++;
	ms = (now - pace.t0) / 1000000;
	if (ms < PACE_SLOTS) {
		/* The verifier needs the mask the compiler would drop. */
		asm volatile("" : "+r"(ms));
		per_ms[ms & (PACE_SLOTS - 1)]++;
	}
	return 1;
}

static __always_inline __u16 fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* Sum of the 16-bit words of a 32-bit value as stored in memory. */
static __always_inline __u32 words(__u32 v)
{
	return (v & 0xffff) + (v >> 16);
}

SEC("xdp")
int xdp_flood(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 r1, r2, r3;
	struct tcphdr *tcp;
	/* ~checksum = the sum over the template. */
	__u32 sum = (__u16)~tcp_csum0;

	if (!may_send())
		return XDP_DROP;
	r1 = bpf_get_prandom_u32();
	r2 = bpf_get_prandom_u32();
	r3 = bpf_get_prandom_u32();
	if (template_len == 0 || template_len > TEMPLATE_MAX ||
	    bpf_xdp_store_bytes(ctx, 0, (void *)template, template_len))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (is_ipv6) {
		struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);

		tcp = (void *)(ip6 + 1);
		if ((void *)(tcp + 1) > end)
			return XDP_ABORTED;
		/* 2001:2:0:RRRR:RRRR:RRRR:RRRR:RRRR, never ...::1 or ::2. */
		__u32 hi = r1 & 0xffff, mid = r2, lo = r3 | 0x100;

		ip6->saddr.in6_u.u6_addr16[3] = hi;
		ip6->saddr.in6_u.u6_addr32[2] = mid;
		ip6->saddr.in6_u.u6_addr32[3] = lo;
		sum += hi + words(mid) + words(lo);
	} else {
		struct iphdr *ip = data + sizeof(struct ethhdr);

		tcp = (void *)(ip + 1);
		if ((void *)(tcp + 1) > end)
			return XDP_ABORTED;
		/* 198.18.H.L with H >= 1: never the testbed's 198.18.0.x. */
		__u16 host = (r1 & src_host_mask) | src_host_set;

		if ((bpf_ntohs(host) >> 8) == 0)
			host |= bpf_htons(0x0100);
		((__u16 *)&ip->saddr)[1] = host;
		sum += host;
		ip->check = ~fold((__u16)~ip_csum0 + host);
	}

	__u16 sport = (r1 >> 16) | bpf_htons(1024);
	__u32 seq = r2 ^ r3;
	__u32 ack = 0;
	__u8 *flags = (__u8 *)tcp + 13;
	__u8 f = mode == 1 ? 0x10 : 0x02;

	if (mode == 2 && (r3 & 0x80000000))
		f = 0x10;
	if (f == 0x10)
		ack = bpf_get_prandom_u32();
	tcp->source = sport;
	tcp->seq = seq;
	tcp->ack_seq = ack;
	sum += sport + words(seq) + words(ack);
	*flags = f;
	if (mode == 2) {
		/* Absolute: the template word had SYN (0x02); now f. */
		__u8 doff = *((__u8 *)tcp + 12);
		__u16 syn_word, cur_word;

		((__u8 *)&syn_word)[0] = doff;
		((__u8 *)&syn_word)[1] = 0x02;
		((__u8 *)&cur_word)[0] = doff;
		((__u8 *)&cur_word)[1] = f;
		sum += (__u16)~syn_word + cur_word;
	}
	tcp->check = ~fold(sum);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
