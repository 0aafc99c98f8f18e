/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * SYN -> SYN-ACK in XDP: the cookie (docs/cookie.md) minted with the same
 * keys and MAC as the ACK check, the frame rewritten in place and sent back
 * with XDP_TX. Byte for byte what the Rust core (src/proto/handshake.rs,
 * answer_syn) writes for the same SYN, key and epoch; tests/bpf_synack.rs
 * runs the handshake corpus through both and compares.
 *
 * Only the common shape is answered here: IPv4 without options or IPv6
 * without extension headers (up to two VLAN tags), no payload, options the
 * core parses the same way, checksums correct, a source the core accepts.
 * Everything else goes to the AF_XDP worker, whose core answers or drops it
 * with its reason; each such SYN is counted by why (SW_SYN_WORKER_*).
 */
#ifndef SYNWALL_SYNACK_H
#define SYNWALL_SYNACK_H

#include "maps.h"
#include "parse.h"

/* Who answers SYNs ([datapath] synack), written before load. */
#define SYNACK_AFXDP 0 /* the AF_XDP workers, always */
#define SYNACK_XDP 1   /* this program, always (the worker gets what it cannot answer) */
#define SYNACK_AUTO 2  /* the workers while they keep up, this program for the excess */

/* Written before load, fixed for the program's life. */
const volatile __u8 synack_mode = SYNACK_AFXDP;
const volatile __u8 verify_checksums = 1;

/* The SYN-ACK's shape, as the core's SynAckSettings (src/proto/handshake.rs);
 * a reload rewrites it. */
volatile __u16 synack_window LIVE = 64240;
volatile __u8 synack_ttl LIVE = 64;
volatile __u16 synack_mss_v4 LIVE = 1460;
volatile __u16 synack_mss_v6 LIVE = 1440;
volatile __u8 synack_ecn LIVE = 1;

/* RFC 9293 §3.7.1 and RFC 8200 §8.3: the MSS assumed without the option
 * (DEFAULT_MSS_V4 / DEFAULT_MSS_V6 in the core). */
#define DEFAULT_MSS_V4 536
#define DEFAULT_MSS_V6 1220

/* TCP option kinds and lengths beyond those in parse.h (RFC 9293, 7323,
 * 2018). */
#define TCPOPT_MSS 2
#define TCPOLEN_MSS 4
#define TCPOPT_WINDOW 3
#define TCPOLEN_WINDOW 3
#define TCPOPT_SACK_PERM 4
#define TCPOLEN_SACK_PERM 2
#define TCPOPT_SACK 5

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10
#define TCP_FLAG_ECE 0x40
#define TCP_FLAG_CWR 0x80

#define IP_DF 0x4000 /* RFC 791: don't fragment */

/*
 * synack = "auto": how far each queue's worker is behind. XDP counts the
 * SYNs it redirects to the queue's AF_XDP socket; the worker publishes
 * how many it has taken off its ring plus how many the kernel lost on the
 * way (XDP_STATISTICS: rx_dropped, rx_ring_full). The difference is what
 * waits in the ring. When it reaches auto_backlog, XDP answers the SYN
 * itself, and goes on answering for auto_hold_ns (the worker meanwhile
 * drains its ring): under a flood the worker would otherwise take a
 * little every time it caught up, at the price of a copy per frame. Below
 * it, the worker gets the SYN. With auto_backlog at half the ring, the
 * ring never overflows, so the count does not drift.
 *
 * One entry per queue, each half on its own cache line (XDP on the queue's
 * NAPI CPU writes one, the worker the other). Mmapped by synwall.
 */
#define MAX_QUEUES 256 /* as the xsks map */

struct sw_queue_load {
	__u64 redirected; /* XDP: SYNs sent to the worker */
	__u64 xdp_until;  /* XDP: answer here until this bpf_ktime_get_coarse_ns() */
	__u64 pad0[6];
	__u64 taken;	  /* the worker: frames taken off the ring + lost by the kernel */
	__u64 pad1[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, struct sw_queue_load);
} queue_load SEC(".maps");

/* SYNs waiting in a worker's ring from which XDP answers instead. */
const volatile __u32 auto_backlog = 1024;
/* How long XDP goes on answering once the worker was backed up. */
const volatile __u64 auto_hold_ns = 0;

/* The epoch whose key mints cookies now: its parity picks the slot of the
 * keys map. synwall's control loop writes it when the epoch turns (the
 * key itself is in the map skew_secs before). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} mint_epoch SEC(".maps");

/* No window-scale option: beyond any one-byte shift (a client may send 15,
 * the cookie's own "none", which the cookie clamps to 14). */
#define SYN_NO_WSCALE 0x100

/* What a SYN's options say, as the core's tcp::Options::parse reads them:
 * NOP skipped, EOL ends, a known kind with the wrong length or any option
 * running past the end is malformed, unknown kinds are skipped, a repeated
 * option keeps its last value. */
struct syn_walk {
	__u8 buf[OPT_BUF_LEN];
	__u32 len;
	__u32 off;
	__u32 mss;    /* 0: none */
	__u32 wscale; /* the shift as sent (0..255), or SYN_NO_WSCALE */
	__u32 sack;
	__u32 ts;
	__u32 tsval;
	int bad;
};

/* One option; 1 when the walk is over (end, EOL or malformed). */
static __always_inline long syn_opt(struct syn_walk *w)
{
	__u32 off = w->off, len, kind;

	if (off >= w->len)
		return 1;
	kind = OPT_AT(w, off);
	if (kind == TCPOPT_NOP) {
		w->off++;
		return 0;
	}
	if (kind == TCPOPT_EOL)
		return 1;
	len = OPT_AT(w, off + 1);
	if (len < 2 || off + len > w->len) {
		w->bad = 1;
		return 1;
	}
	switch (kind) {
	case TCPOPT_MSS:
		if (len != TCPOLEN_MSS)
			goto bad;
		w->mss = (__u32)OPT_AT(w, off + 2) << 8 | OPT_AT(w, off + 3);
		w->mss |= 0x10000; /* present, even when the value is 0 */
		break;
	case TCPOPT_WINDOW:
		if (len != TCPOLEN_WINDOW)
			goto bad;
		w->wscale = OPT_AT(w, off + 2);
		break;
	case TCPOPT_SACK_PERM:
		if (len != TCPOLEN_SACK_PERM)
			goto bad;
		w->sack = 1;
		break;
	case TCPOPT_TIMESTAMP:
		if (len != TCPOLEN_TIMESTAMP)
			goto bad;
		w->ts = 1;
		w->tsval = OPT_BE32(w, off + 2);
		break;
	case TCPOPT_SACK:
		if (len <= 2 || (len - 2) % 8)
			goto bad;
		break;
	default:
		break;
	}
	w->off = off + len;
	return 0;
bad:
	w->bad = 1;
	return 1;
}

static long syn_opt_step(__u64 i, void *arg)
{
	return syn_opt(arg);
}

/* Options a common SYN has, NOPs included (Linux 5, Windows 6, macOS 8),
 * walked inline; the rare longer list goes on in bpf_loop. */
#define SYN_OPTS_INLINE 8

static __always_inline void syn_walk_run(struct syn_walk *w, __u32 len)
{
	int i;

	w->len = len;
#pragma unroll
	for (i = 0; i < SYN_OPTS_INLINE; i++)
		if (syn_opt(w))
			return;
	bpf_loop(TCP_MAX_OPTIONS - SYN_OPTS_INLINE, syn_opt_step, w, 0);
}

/* Checksums (RFC 1071) as 64-bit sums of 32-bit words read in memory
 * order: folded to 16 bits, the result is already in network order. */
static __always_inline __u16 csum_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return ~s;
}

static __always_inline __u32 load32(const void *p)
{
	__u32 v;

	__builtin_memcpy(&v, p, 4);
	return v;
}

/* The TCP pseudo-header sum (RFC 9293 §3.1, RFC 8200 §8.1) of a segment of
 * `tcp_len` bytes between these addresses; symmetric in them, so it serves
 * the SYN and its answer. */
static __always_inline __u64 pseudo_sum(const struct pkt *p, __u32 tcp_len)
{
	const __u8 *a;
	__u64 s;
	int i;

	if (!p->v6)
		return (__u64)p->tuple.ipv4.saddr + p->tuple.ipv4.daddr + bpf_htons(IPPROTO_TCP) +
		       bpf_htons(tcp_len);
	a = (const __u8 *)p->tuple.ipv6.saddr;
	s = bpf_htonl(tcp_len) + bpf_htonl(IPPROTO_TCP);
#pragma unroll
	for (i = 0; i < 8; i++)
		s += load32(a + 4 * i); /* saddr then daddr: adjacent in the tuple */
	return s;
}

/* The sum of n (<= 10) 32-bit words at w. */
static __always_inline __u64 words_sum(const void *w, __u32 n)
{
	__u64 s = 0;
	int i;

#pragma unroll
	for (i = 0; i < 10; i++)
		if (i < n)
			s += load32((const __u8 *)w + 4 * i);
	return s;
}

/* The options of a SYN in the layout of one of the common stacks, read in
 * the packet at fixed offsets: a few compares replace the walk, its copy
 * of the options (bpf_xdp_load_bytes) and its branch per option; any other
 * layout goes through them. True when it matched: `w` holds what the walk
 * would give and *sum the options' 32-bit words summed, for the checksum.
 *   Linux (20 bytes, tcp_options_write in net/ipv4/tcp_output.c, as the
 *     core's tcp::Options::linux_syn): MSS, SACK-permitted, timestamps,
 *     NOP, window scale;
 *   Windows (12): MSS, NOP, window scale, NOP, NOP, SACK-permitted;
 *   macOS and iOS (24): MSS, NOP, window scale, NOP, NOP, timestamps,
 *     SACK-permitted, EOL (the walk stops there; the last byte is padding).
 */
static __always_inline int syn_common_opts(const struct tcphdr *tcp, void *data_end,
					   __u32 optlen, struct syn_walk *w, __u64 *sum)
{
	const __u8 *o = (const __u8 *)(tcp + 1);
	__u32 w0, w1, w2, w3 = 0, w4 = 0, w5 = 0, ok;

	if ((optlen != 12 && optlen != 20 && optlen != 24) || (void *)(o + 12) > data_end)
		return 0;
	w0 = bpf_ntohl(load32(o));
	w1 = bpf_ntohl(load32(o + 4));
	w2 = bpf_ntohl(load32(o + 8));
	if (optlen >= 20) {
		if ((void *)(o + 20) > data_end)
			return 0;
		w3 = bpf_ntohl(load32(o + 12));
		w4 = bpf_ntohl(load32(o + 16));
	}
	if (optlen == 24) {
		if ((void *)(o + 24) > data_end)
			return 0;
		w5 = bpf_ntohl(load32(o + 20));
	}
	if ((w0 & 0xffff0000) != 0x02040000)
		return 0;
	if (optlen == 12)
		ok = (w1 & 0xffffff00) == 0x01030300 && w2 == 0x01010402;
	else if (optlen == 20)
		ok = w1 == 0x0402080a && (w4 & 0xffffff00) == 0x01030300;
	else
		ok = (w1 & 0xffffff00) == 0x01030300 && w2 == 0x0101080a &&
		     (w5 & 0xffffff00) == 0x04020000;
	if (!ok)
		return 0;
	w->mss = (w0 & 0xffff) | 0x10000;
	w->sack = 1;
	w->wscale = (optlen == 20 ? w4 : w1) & 0xff;
	if (optlen != 12) {
		w->ts = 1;
		w->tsval = optlen == 20 ? w2 : w3;
	}
	/* The sum of the words in memory order, as words_sum reads them. */
	*sum = (__u64)bpf_htonl(w0) + bpf_htonl(w1) + bpf_htonl(w2) + bpf_htonl(w3) +
	       bpf_htonl(w4) + bpf_htonl(w5);
	return 1;
}

/* A SYN's TCP checksum is right, or its sender's stack left it to offload
 * (CHECKSUM_PARTIAL: the field holds the pseudo-header's sum alone), as a
 * local sender's segments cross a veth or a tap; the kernel takes those, so
 * does synwall (src/wire/tcp.rs, Packet::verify_checksum). `opt_sum`: the
 * options' words summed. */
static __always_inline int tcp_csum_ok(const struct pkt *p, const struct tcphdr *tcp,
				       __u64 opt_sum, __u32 hlen)
{
	__u64 pseudo = pseudo_sum(p, hlen);

	return !csum_fold(pseudo + words_sum(tcp, 5) + opt_sum) ||
	       tcp->check == (__u16)~csum_fold(pseudo);
}

/* The core's Net::bad_endpoints and its port and MAC checks: sources no
 * SYN may come from (RFC 1122 §3.2.1.3, RFC 4291 §2.7). */
static __always_inline int bad_endpoints(const struct pkt *p, const struct ethhdr *eth,
					 const struct tcphdr *tcp)
{
	if (eth->h_source[0] & 1 || tcp->source == 0)
		return 1;
	if (p->v6) {
		const __u8 *s = p->tuple.ipv6.saddr, *d = p->tuple.ipv6.daddr;
		__u64 s_hi, s_lo, d_hi, d_lo;

		__builtin_memcpy(&s_hi, s, 8);
		__builtin_memcpy(&s_lo, s + 8, 8);
		__builtin_memcpy(&d_hi, d, 8);
		__builtin_memcpy(&d_lo, d + 8, 8);
		if (s_hi == 0 && (s_lo == 0 || s_lo == bpf_cpu_to_be64(1)))
			return 1;
		if (s[0] == 0xff || d[0] == 0xff)
			return 1;
		return s_hi == d_hi && s_lo == d_lo;
	} else {
		__u32 s = bpf_ntohl(p->tuple.ipv4.saddr), d = bpf_ntohl(p->tuple.ipv4.daddr);

		if (s >> 24 == 0 || s >> 24 == 127 || s >> 24 >= 224 || d >> 24 >= 224)
			return 1;
		return s == d;
	}
}

/* The index of the largest MSS-table entry <= mss (0 below every entry):
 * MssTable::index_for. */
static __always_inline __u32 mss_index(__u32 mss)
{
	__u32 idx = 0;
	int i;

#pragma unroll
	for (i = 1; i < 8; i++)
		if (mss >= mss_table[i])
			idx = i;
	return idx;
}

/* The SYN-ACK's TCP header as 32-bit words in network order, options in
 * Linux's order (tcp::Options::words): MSS; SACK-permitted folded into the
 * timestamps word, else NOP NOP TS; NOP WS; NOP NOP SACK-permitted without
 * timestamps. Returns its length (24..40). */
static __always_inline __u32 synack_header(__be32 *h, const struct tcphdr *tcp, __u32 isn,
					   __u32 flags, const struct syn_walk *w, __u32 tsval,
					   __u16 our_mss)
{
	__u32 n;

	/* ports swapped (as on the wire), seq, ack; offset/flags/window below */
	__builtin_memcpy(&h[0], &tcp->dest, 2);
	__builtin_memcpy((__u8 *)&h[0] + 2, &tcp->source, 2);
	h[1] = bpf_htonl(isn);
	h[2] = bpf_htonl(bpf_ntohl(tcp->seq) + 1);
	h[4] = 0; /* checksum and urgent pointer */
	h[5] = bpf_htonl(TCPOPT_MSS << 24 | TCPOLEN_MSS << 16 | our_mss);
	n = 6;
	if (w->ts) {
		__u32 lead = w->sack ? (TCPOPT_SACK_PERM << 8 | TCPOLEN_SACK_PERM)
				     : (TCPOPT_NOP << 8 | TCPOPT_NOP);

		h[6] = bpf_htonl(lead << 16 | TCPOPT_TIMESTAMP << 8 | TCPOLEN_TIMESTAMP);
		h[7] = bpf_htonl(tsval);
		h[8] = bpf_htonl(w->tsval);
		n = 9;
	}
	if (w->wscale != SYN_NO_WSCALE) {
		if (n == 6)
			h[6] = bpf_htonl(TCPOPT_NOP << 24 | TCPOPT_WINDOW << 16 | TCPOLEN_WINDOW << 8 |
					 our_wscale);
		else
			h[9] = bpf_htonl(TCPOPT_NOP << 24 | TCPOPT_WINDOW << 16 | TCPOLEN_WINDOW << 8 |
					 our_wscale);
		n++;
	}
	if (w->sack && !w->ts) {
		__u32 v = bpf_htonl(TCPOPT_NOP << 24 | TCPOPT_NOP << 16 | TCPOPT_SACK_PERM << 8 |
				    TCPOLEN_SACK_PERM);

		if (n == 6)
			h[6] = v;
		else
			h[7] = v;
		n++;
	}
	h[3] = bpf_htonl((n << 28) | flags << 16 | synack_window);
	return n * 4;
}

/* The SYN's IP layer: the common shape only (see the top of this file).
 * Returns -1 when it is, or the worker counter. */
static __always_inline int syn_ip_ok(void *data, void *data_end, const struct pkt *p, __u32 l3,
				     __u32 l4, __u32 hlen)
{
	if (p->v6) {
		struct ipv6hdr *ip6 = data + l3;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return SW_SYN_WORKER_SHAPE;
		if (l4 != l3 + sizeof(*ip6))
			return SW_SYN_WORKER_IP_EXT;
		if (bpf_ntohs(ip6->payload_len) != hlen)
			return SW_SYN_WORKER_PAYLOAD;
	} else {
		struct iphdr *ip = data + l3;

		if ((void *)(ip + 1) > data_end || ip->version != 4)
			return SW_SYN_WORKER_SHAPE;
		if (ip->ihl != 5)
			return SW_SYN_WORKER_IP_EXT;
		if (bpf_ntohs(ip->tot_len) != sizeof(*ip) + hlen)
			return SW_SYN_WORKER_PAYLOAD;
		if (verify_checksums && csum_fold(words_sum(ip, 5)))
			return SW_SYN_WORKER_CHECKSUM;
	}
	return -1;
}

/* The SYN-ACK's IP header over the SYN's (addresses swapped). */
static __always_inline int write_ip(void *data, void *data_end, const struct pkt *p, __u32 l3,
				    __u32 tcp_len)
{
	if (p->v6) {
		struct ipv6hdr *ip6 = data + l3;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		/* version 6, traffic class 0, flow label 0 */
		*(__be32 *)ip6 = bpf_htonl(6u << 28);
		ip6->payload_len = bpf_htons(tcp_len);
		ip6->nexthdr = IPPROTO_TCP;
		ip6->hop_limit = synack_ttl;
		__builtin_memcpy(&ip6->saddr, p->tuple.ipv6.daddr, 16);
		__builtin_memcpy(&ip6->daddr, p->tuple.ipv6.saddr, 16);
	} else {
		struct iphdr *ip = data + l3;
		struct iphdr nip = {
			.version = 4,
			.ihl = 5,
			.tos = 0,			/* RFC 3168 §6.1.1: a SYN-ACK is not ECN-capable */
			.tot_len = bpf_htons(sizeof(nip) + tcp_len),
			.id = 0,			/* RFC 6864 §4.1: unused in an atomic datagram */
			.frag_off = bpf_htons(IP_DF),
			.ttl = synack_ttl,
			.protocol = IPPROTO_TCP,
			.saddr = p->tuple.ipv4.daddr,
			.daddr = p->tuple.ipv4.saddr,
		};

		if ((void *)(ip + 1) > data_end)
			return -1;
		nip.check = csum_fold(words_sum(&nip, 5));
		__builtin_memcpy(ip, &nip, sizeof(nip));
	}
	return 0;
}

/* The SYN-ACK's TCP header (n words, 6..10) over the SYN's. */
static __always_inline int write_tcp(void *data, void *data_end, __u32 l4, const __be32 *h,
				     __u32 n)
{
	__be32 *th = data + l4;
	int i;

	if ((void *)(th + 6) > data_end)
		return -1;
#pragma unroll
	for (i = 0; i < 10; i++) {
		if (i >= n)
			break;
		if ((void *)(th + i + 1) > data_end)
			return -1;
		th[i] = h[i];
	}
	return 0;
}

/* What sw_synack does with a SYN it could answer. */
#define SYNACK_CHECK 0 /* nothing: returns -1, the frame untouched */
#define SYNACK_WRITE 1 /* answers it */

/*
 * Answers a SYN to a protected port in place (`mode`). Returns -1 when the
 * frame now holds the SYN-ACK (the caller returns XDP_TX; SYNACK_CHECK: when
 * it could), otherwise the counter of why the worker must answer it, with
 * the frame untouched. `resize` (a constant) lets it change the frame's
 * length; without it, a SYN-ACK of another length than the SYN is the
 * worker's (SW_SYN_WORKER_NO_ROOM), and no call that moves packet data is
 * left in the code (see xdp_synwall_ext).
 */
static __always_inline int synack_in_place(struct xdp_md *ctx, struct pkt *p, __u32 mode,
					   const int resize)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct syn_walk w = { .wscale = SYN_NO_WSCALE };
	struct cookie_flow fl = {};
	struct ethhdr *eth = data;
	__u32 l3, l4, hlen, optlen, ecn, ws, attrs, slot, isn, tcp_len, flags, zero = 0;
	__u32 mac_lo;
	__u16 mac_hi;
	struct tcphdr *tcp;
	struct sw_key *key;
	__be32 h[10] = {};
	__u32 *epoch;
	__u64 mac, opt_sum;
	int rc;

	if (!p)
		return SW_SYN_WORKER_SHAPE;
	l3 = p->l3_off & L3_OFF_MASK;
	l4 = p->l4_off & L4_OFF_MASK;
	tcp = data + l4;
	if ((void *)(eth + 1) > data_end || (void *)(tcp + 1) > data_end)
		return SW_SYN_WORKER_SHAPE;
	if (tcp->fin)
		return SW_SYN_WORKER_FLAGS;
	hlen = tcp->doff * 4;
	if (hlen < sizeof(*tcp) || (void *)tcp + hlen > data_end)
		return SW_SYN_WORKER_SHAPE;
	rc = syn_ip_ok(data, data_end, p, l3, l4, hlen);
	if (rc >= 0)
		return rc;

	optlen = hlen - sizeof(*tcp);
	if (!syn_common_opts(tcp, data_end, optlen, &w, &opt_sum)) {
		if (optlen > 0 &&
		    bpf_xdp_load_bytes(ctx, l4 + sizeof(*tcp), w.buf, opt_read_len(optlen)))
			return SW_SYN_WORKER_SHAPE;
		syn_walk_run(&w, optlen);
		if (w.bad)
			return SW_SYN_WORKER_OPTIONS;
		opt_sum = words_sum(w.buf, optlen / 4);
	}
	if (verify_checksums && !tcp_csum_ok(p, tcp, opt_sum, hlen))
		return SW_SYN_WORKER_CHECKSUM;
	if (bad_endpoints(p, eth, tcp))
		return SW_SYN_WORKER_SOURCE;
	if (mode == SYNACK_CHECK)
		return -1;

	/* The cookie (docs/cookie.md §3 to §5), with the key of the epoch now. */
	epoch = bpf_map_lookup_elem(&mint_epoch, &zero);
	if (!epoch)
		return SW_SYN_WORKER_SHAPE;
	slot = *epoch & 1;
	key = bpf_map_lookup_elem(&keys, &slot);
	if (!key)
		return SW_SYN_WORKER_SHAPE;
	ecn = synack_ecn && tcp->ece && tcp->cwr;
	ws = w.wscale == SYN_NO_WSCALE ? WSCALE_NONE : (w.wscale > WSCALE_MAX ? WSCALE_MAX : w.wscale);
	attrs = slot << COOKIE_EPOCH_SHIFT |
		mss_index(w.mss ? w.mss & 0xffff : (p->v6 ? DEFAULT_MSS_V6 : DEFAULT_MSS_V4))
			<< COOKIE_MSS_SHIFT |
		ws << COOKIE_WSCALE_SHIFT | (w.sack ? COOKIE_SACK_BIT : 0) | (ecn ? COOKIE_ECN_BIT : 0);
	pkt_cookie_flow(p, &fl);
	mac = cookie_mac(key, &fl, bpf_ntohl(tcp->seq), attrs, w.ts);
	isn = (__u32)(mac & ISN_MAC_MASK) << ATTR_BITS | attrs;

	flags = TCP_FLAG_SYN | TCP_FLAG_ACK | (ecn ? TCP_FLAG_ECE : 0);
	tcp_len = synack_header(h, tcp, isn, flags, &w, mac >> 32,
				p->v6 ? synack_mss_v6 : synack_mss_v4);
	((__u16 *)h)[8] = csum_fold(pseudo_sum(p, tcp_len) + words_sum(h, tcp_len / 4));

	/* From here on the frame changes: its length first, so a tail that
	 * cannot grow leaves it as it was. */
	rc = (int)(l4 + tcp_len) - (int)(data_end - data);
	if (rc && (!resize || bpf_xdp_adjust_tail(ctx, rc)))
		return SW_SYN_WORKER_NO_ROOM;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return SW_SYN_WORKER_NO_ROOM;
	/* Swapped through registers: sw_synack's stack is tight. */
	mac_lo = load32(eth->h_dest);
	mac_hi = *(__u16 *)(eth->h_dest + 4);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, &mac_lo, 4);
	*(__u16 *)(eth->h_source + 4) = mac_hi;
	if (write_ip(data, data_end, p, l3, tcp_len) || write_tcp(data, data_end, l4, h, tcp_len / 4))
		return SW_SYN_WORKER_NO_ROOM;
	return -1;
}


/* The two answers the XDP programs call: global functions, each checked
 * once by the verifier. */
__attribute__((noinline)) int sw_synack(struct xdp_md *ctx, struct pkt *p, __u32 mode)
{
	return synack_in_place(ctx, p, mode, 1);
}

__attribute__((noinline)) int sw_synack_same_len(struct xdp_md *ctx, struct pkt *p, __u32 mode)
{
	return synack_in_place(ctx, p, mode, 0);
}

#endif
