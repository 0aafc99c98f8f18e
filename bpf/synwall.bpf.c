// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * synwall XDP program: steer SYNs to protected ports into this receive
 * queue's AF_XDP socket, pass everything else to the kernel.
 *
 *   frame -> Ethernet (+ up to 2 VLAN tags) -> IPv4 (options) / IPv6 (ext
 *   headers walked) -> TCP -> protected port? -> kernel socket? -> SYN?
 *
 * Nothing here is dropped for being a fragment or lacking DF. Every verdict
 * increments its own per-CPU counter (enum sw_counter in synwall.h).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "synwall.h"
#include "cookie.h"

#define ETH_P_8021AD_ 0x88A8
#define ETH_P_QINQ_LEGACY 0x9100
#define MAX_VLAN_TAGS 2
#define MAX_IPV6_EXT 6 /* as src/wire/ipv6.rs MAX_EXT_HEADERS */
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* Settings written by synwall before load (read-only at run time). */
const volatile __u8 match_addresses = 0; /* 1: only sw_addr entries are protected */

/* The AF_XDP socket of each receive queue, by queue index; synwall puts
 * each worker's socket here. */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* Protected TCP ports: index = port in host order, value 1 = protected. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} ports SEC(".maps");

/* Protected destination addresses, used when match_addresses is set. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct sw_addr);
	__type(value, __u8);
} addresses SEC(".maps");

/* Cookie keys by epoch parity: keys[e & 1] = K(e) for the current and the
 * previous epoch, rewritten by synwall when the epoch changes. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct sw_key);
} keys SEC(".maps");

/* Verdict and drop counters, per CPU (enum sw_counter). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SW_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Makes enum sw_counter part of the BTF so the skeleton exports it. */
enum sw_counter sw_counter_type_anchor SEC(".bss");

static __always_inline void count(enum sw_counter c)
{
	__u32 key = c;
	__u64 *v = bpf_map_lookup_elem(&counters, &key);

	if (v)
		*v += 1;
}

static __always_inline int verdict(enum sw_counter c, int action)
{
	count(c);
	return action;
}

/* XDP -> TC: what XDP decided about a segment to a protected port, in 4
 * bytes of XDP metadata, so TC skips segments of established sockets
 * without parsing them again. Without metadata support TC does the full
 * work. Must be the last thing before returning: it moves ctx->data_meta. */
#define SW_META_PASS 0x53570000u	/* "SW", 0: belongs to a kernel socket */
#define SW_META_HANDOFF 0x53570001u	/* "SW", 1: cookie verified, hand it off */

static __always_inline void set_meta(struct xdp_md *ctx, __u32 v)
{
	void *data, *meta;

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(__u32)))
		return;
	data = (void *)(long)ctx->data;
	meta = (void *)(long)ctx->data_meta;
	if (meta + sizeof(__u32) > data)
		return;
	*(__u32 *)meta = v;
}

static __always_inline int is_vlan(__u16 proto_be)
{
	return proto_be == bpf_htons(ETH_P_8021Q) || proto_be == bpf_htons(ETH_P_8021AD_) ||
	       proto_be == bpf_htons(ETH_P_QINQ_LEGACY);
}

/* The options walk: a bpf_loop callback over a stack copy of the option
 * bytes, so the verifier checks one step instead of every path through 40. */
struct opt_walk {
	__u8 buf[64];	/* options, zero padded; indexes are masked into range */
	__u32 len;	/* option bytes present (0..40) */
	__u32 off;
	__u32 tsval;
	__u32 tsecr;
	int found;	/* 1: timestamps found, -1: malformed */
};

static long opt_step(__u64 i, void *arg)
{
	struct opt_walk *w = arg;
	__u32 off = w->off & 63, len;
	__u8 kind;

	if (w->off >= w->len)
		return 1;
	kind = w->buf[off];
	if (kind == 0)
		return 1;
	if (kind == 1) {
		w->off++;
		return 0;
	}
	len = w->buf[(off + 1) & 63];
	if (len < 2 || w->off + len > w->len) {
		w->found = -1;
		return 1;
	}
	if (kind == 8) {
		if (len != 10) {
			w->found = -1;
			return 1;
		}
		w->tsval = (__u32)w->buf[(off + 2) & 63] << 24 | (__u32)w->buf[(off + 3) & 63] << 16 |
			   (__u32)w->buf[(off + 4) & 63] << 8 | w->buf[(off + 5) & 63];
		w->tsecr = (__u32)w->buf[(off + 6) & 63] << 24 | (__u32)w->buf[(off + 7) & 63] << 16 |
			   (__u32)w->buf[(off + 8) & 63] << 8 | w->buf[(off + 9) & 63];
		w->found = 1;
		return 1;
	}
	w->off += len;
	return 0;
}

/* The ACK's timestamps option: 1 found (TSecr in *tsecr), 0 none, -1 malformed. */
static __always_inline int find_tsecr(struct xdp_md *ctx, struct tcphdr *tcp, __u32 tcp_off, __u32 *tsecr)
{
	struct opt_walk w = {};
	__u32 opt_len = tcp->doff * 4;

	if (opt_len < sizeof(*tcp))
		return -1;
	opt_len -= sizeof(*tcp);
	if (opt_len == 0)
		return 0;
	if (opt_len > 40)
		return -1;
	if (bpf_xdp_load_bytes(ctx, tcp_off + sizeof(*tcp), w.buf, opt_len))
		return -1;
	w.len = opt_len;
	bpf_loop(40, opt_step, &w, 0);
	*tsecr = w.tsecr;
	return w.found;
}

/*
 * An ACK to a protected port with no kernel socket: does its cookie prove
 * one of our handshakes? Returns SW_ACK_COOKIE_OK or the counter of the
 * reason it does not (the caller counts, and drops it unless it follows a
 * verified ACK of the same connection).
 *
 * A global function, so the verifier checks it once on its own instead of
 * once for every parse path that reaches it. It gets the context and the
 * offsets of the IP and TCP headers and re-derives its pointers.
 */
__attribute__((noinline)) int sw_check_ack(struct xdp_md *ctx, __u32 l3_off, __u32 l4_off, __u32 v6)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct tcphdr *tcp;
	struct sw_key *key;
	__u32 cookie, client_isn, slot, tsecr = 0;
	int ts, ok;

	/* Offsets are bounded by the parser: L2 + 2 tags, IPv6 + 6 ext headers. */
	l3_off &= 0x3f;
	l4_off &= 0x7ff;
	tcp = data + l4_off;
	if ((void *)(tcp + 1) > data_end)
		return SW_DROP_TRUNCATED_TCP;
	cookie = bpf_ntohl(tcp->ack_seq) - 1;
	client_isn = bpf_ntohl(tcp->seq) - 1;
	slot = (cookie >> 9) & 1;
	ts = find_tsecr(ctx, tcp, l4_off, &tsecr);
	if (ts < 0)
		return SW_DROP_BAD_OPTIONS;
	key = bpf_map_lookup_elem(&keys, &slot);
	if (!key)
		return SW_DROP_BAD_COOKIE;
	if (v6) {
		struct ipv6hdr *ip6 = data + l3_off;

		if ((void *)(ip6 + 1) > data_end)
			return SW_DROP_TRUNCATED_TCP;
		ok = cookie_check(key, (__u8 *)&ip6->saddr, (__u8 *)&ip6->daddr, 16, tcp->source,
				  tcp->dest, client_isn, cookie, ts, tsecr);
	} else {
		struct iphdr *ip = data + l3_off;

		if ((void *)(ip + 1) > data_end)
			return SW_DROP_TRUNCATED_TCP;
		ok = cookie_check(key, (__u8 *)&ip->saddr, (__u8 *)&ip->daddr, 4, tcp->source, tcp->dest,
				  client_isn, cookie, ts, tsecr);
	}
	return ok ? SW_ACK_COOKIE_OK : SW_DROP_BAD_COOKIE;
}

/* Where the headers of a TCP segment to a protected port are. */
struct pkt {
	__u32 l3_off;
	__u32 l4_off;
	__u32 v6;
	struct bpf_sock_tuple tuple;
};

/*
 * Connections in the middle of their hand-off. A receive batch (GRO, NAPI)
 * goes through XDP and TC as a whole before TCP sees its first segment, so
 * the segments right behind a handshake ACK (the request, an upload's first
 * window) find no socket yet: XDP would drop them as bad cookies (their
 * sequence numbers have moved on) and TC would hand the connection off a
 * second time, which the kernel drops as a duplicate. Both would cost the
 * client a retransmission. So XDP records each verified ACK here and passes
 * the segments that follow it; TC records each hand-off and requeues the
 * segments that meet the listener behind it once (through the device's
 * backlog), by which time TCP has made the connection. Entries live for
 * FLOW_TTL_NS; the map is LRU, so a flood of valid ACKs only evicts.
 */
#define FLOW_TTL_NS 1000000000ull	/* 1 s */
#define FOLLOW_UP_WINDOW (1u << 20)	/* bytes a follow-up may lie past the ACK */
#define MAX_DEFERRALS 64		/* requeues per hand-off, a bound on loops */
#define SW_TC_INDEX_DEFERRED 0x5357	/* "SW" in tc_index: already requeued once */

struct sw_flow_key {
	struct bpf_sock_tuple tuple; /* as parsed; IPv4 leaves the tail zero */
	__u32 v6;
};

struct sw_flow {
	__u64 verified_ns;	/* XDP: the ACK's cookie validated */
	__u64 assigned_ns;	/* TC: handed to the listener (0: not yet) */
	__u32 seq;		/* the ACK's sequence number */
	__u32 ack;		/* the ACK's acknowledgment number (our ISN + 1) */
	__u32 deferrals;	/* requeues since assigned_ns */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sw_flow_key);
	__type(value, struct sw_flow);
} flows SEC(".maps");

static __always_inline void flow_key(struct sw_flow_key *k, const struct pkt *p)
{
	__builtin_memcpy(&k->tuple, &p->tuple, sizeof(k->tuple));
	k->v6 = p->v6;
}

/*
 * Parses Ethernet, up to two VLAN tags, IPv4 (options) or IPv6 (extension
 * headers) and TCP. Returns -1 for a complete TCP header to a protected
 * port and address (p is filled), otherwise the counter that says why the
 * segment is not ours (SW_DROP_TRUNCATED_TCP: ours, but cut short).
 */
static __always_inline int parse(void *data, void *data_end, struct pkt *p)
{
	struct sw_addr dst = {};
	struct ethhdr *eth = data;
	struct tcphdr *tcp;
	__u16 proto;
	void *l3;
	int i;

	if ((void *)(eth + 1) > data_end)
		return SW_PASS_TRUNCATED;
	proto = eth->h_proto;
	l3 = eth + 1;
#pragma unroll
	for (i = 0; i < MAX_VLAN_TAGS; i++) {
		if (!is_vlan(proto))
			break;
		if (l3 + 4 > data_end)
			return SW_PASS_TRUNCATED;
		proto = *(__u16 *)(l3 + 2);
		l3 += 4;
	}
	if (is_vlan(proto))
		return SW_PASS_DEEP;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		__u32 ihl;

		if ((void *)(ip + 1) > data_end)
			return SW_PASS_TRUNCATED;
		if (ip->protocol != IPPROTO_TCP)
			return SW_PASS_NOT_TCP;
		if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
			return SW_PASS_FRAGMENT;
		ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return SW_PASS_TRUNCATED;
		tcp = l3 + ihl;
		p->tuple.ipv4.saddr = ip->saddr;
		p->tuple.ipv4.daddr = ip->daddr;
		p->v6 = 0;
		dst.family = 4;
		__builtin_memcpy(dst.addr, &ip->daddr, 4);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		__u8 nexthdr;
		void *q;

		if ((void *)(ip6 + 1) > data_end)
			return SW_PASS_TRUNCATED;
		nexthdr = ip6->nexthdr;
		q = ip6 + 1;
#pragma unroll
		for (i = 0; i < MAX_IPV6_EXT; i++) {
			__u8 *ext = q;

			if (nexthdr != IPPROTO_HOPOPTS && nexthdr != IPPROTO_ROUTING &&
			    nexthdr != IPPROTO_DSTOPTS)
				break;
			if ((void *)(ext + 2) > data_end)
				return SW_PASS_TRUNCATED;
			nexthdr = ext[0];
			q += 8 + ext[1] * 8;
		}
		if (nexthdr == IPPROTO_FRAGMENT)
			return SW_PASS_FRAGMENT;
		if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
		    nexthdr == IPPROTO_DSTOPTS)
			return SW_PASS_DEEP;
		if (nexthdr != IPPROTO_TCP)
			return SW_PASS_NOT_TCP;
		tcp = q;
		__builtin_memcpy(p->tuple.ipv6.saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->tuple.ipv6.daddr, &ip6->daddr, 16);
		p->v6 = 1;
		dst.family = 6;
		__builtin_memcpy(dst.addr, &ip6->daddr, 16);
	} else {
		return SW_PASS_NOT_IP;
	}

	/* The ports first: whether this is ours at all. */
	if ((void *)tcp + 4 > data_end)
		return SW_PASS_TRUNCATED;
	{
		__u32 port = bpf_ntohs(tcp->dest);
		__u8 *on = bpf_map_lookup_elem(&ports, &port);

		if (!on || !*on)
			return SW_PASS_PORT;
	}
	if (match_addresses && !bpf_map_lookup_elem(&addresses, &dst))
		return SW_PASS_ADDR;
	if ((void *)(tcp + 1) > data_end)
		return SW_DROP_TRUNCATED_TCP;
	if (p->v6) {
		p->tuple.ipv6.sport = tcp->source;
		p->tuple.ipv6.dport = tcp->dest;
	} else {
		p->tuple.ipv4.sport = tcp->source;
		p->tuple.ipv4.dport = tcp->dest;
	}
	p->l3_off = l3 - data;
	p->l4_off = (void *)tcp - data;
	return -1;
}

SEC("xdp")
int xdp_synwall(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pkt p = {};
	struct tcphdr *tcp;
	int rc;

	count(SW_RX);
	rc = parse(data, data_end, &p);
	if (rc == SW_DROP_TRUNCATED_TCP)
		return verdict(rc, XDP_DROP);
	if (rc >= 0)
		return verdict(rc, XDP_PASS);
	tcp = data + (p.l4_off & 0x7ff);
	if ((void *)(tcp + 1) > data_end)
		return verdict(SW_DROP_TRUNCATED_TCP, XDP_DROP);

	/* A segment of an existing kernel socket (established, time-wait or
	 * request) is the kernel's; only a listener (or nothing) is ours. */
	{
		__u32 tuple_len = p.v6 ? sizeof(p.tuple.ipv6) : sizeof(p.tuple.ipv4);
		struct bpf_sock *sk = bpf_skc_lookup_tcp(ctx, &p.tuple, tuple_len, BPF_F_CURRENT_NETNS, 0);

		if (sk) {
			int listener = sk->state == BPF_TCP_LISTEN;

			bpf_sk_release(sk);
			if (!listener) {
				set_meta(ctx, SW_META_PASS);
				return verdict(SW_PASS_SOCKET, XDP_PASS);
			}
		}
	}

	if (tcp->rst)
		return verdict(SW_PASS_RST, XDP_PASS);
	if (!tcp->syn) {
		struct sw_flow_key k = {};
		struct sw_flow *f;
		__u32 seq, ack;

		if (!tcp->ack)
			return verdict(SW_DROP_BAD_FLAGS, XDP_DROP);
		seq = bpf_ntohl(tcp->seq);
		ack = bpf_ntohl(tcp->ack_seq);
		flow_key(&k, &p);
		rc = sw_check_ack(ctx, p.l3_off, p.l4_off, p.v6);
		if (rc == SW_ACK_COOKIE_OK) {
			struct sw_flow nf = { .verified_ns = bpf_ktime_get_ns(), .seq = seq, .ack = ack };

			f = bpf_map_lookup_elem(&flows, &k);
			if (f && f->ack == ack) {
				f->verified_ns = nf.verified_ns;
			} else {
				bpf_map_update_elem(&flows, &k, &nf, BPF_ANY);
			}
			set_meta(ctx, SW_META_HANDOFF);
			return verdict(rc, XDP_PASS);
		}
		/* A segment right behind a verified ACK of the same connection:
		 * same acknowledgment, a little further on in sequence. */
		if (rc == SW_DROP_BAD_COOKIE) {
			f = bpf_map_lookup_elem(&flows, &k);
			if (f && f->ack == ack && seq - f->seq < FOLLOW_UP_WINDOW &&
			    bpf_ktime_get_ns() - f->verified_ns < FLOW_TTL_NS)
				return verdict(SW_PASS_FOLLOW_UP, XDP_PASS);
		}
		return verdict(rc, XDP_DROP);
	}
	if (tcp->ack) /* a SYN-ACK to a server port: reflection, as the core drops it */
		return verdict(SW_DROP_BAD_FLAGS, XDP_DROP);

	/* Falls back to XDP_PASS when this queue has no socket. */
	if (bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS) == XDP_REDIRECT)
		return verdict(SW_SYN_REDIRECT, XDP_REDIRECT);
	return verdict(SW_SYN_NO_XSK, XDP_PASS);
}

/*
 * Kernel-mode hand-off (TC ingress): an ACK with a valid cookie towards a
 * local listener becomes a request socket carrying the options the cookie
 * recorded, and the kernel completes the connection into the listener's
 * accept queue (bpf_sk_assign_tcp_reqsk, Linux 6.9). XDP has already
 * dropped bad cookies; the check is repeated here because TC cannot see
 * XDP's verdict.
 */
struct bpf_tcp_req_attrs {
	__u32 rcv_tsval;
	__u32 rcv_tsecr;
	__u16 mss;
	__u8 rcv_wscale;
	__u8 snd_wscale;
	__u8 ecn_ok;
	__u8 wscale_ok;
	__u8 sack_ok;
	__u8 tstamp_ok;
	__u8 usec_ts_ok;
	__u8 reserved[3];
};

/* Only a pointer is passed: libbpf checks the kfunc's prototype by BTF kind
 * and name, and a forward declaration (BTF FWD) does not match the
 * kernel's STRUCT, so give it a body. Never dereferenced. */
struct sock {
	__u8 opaque;
};
extern int bpf_sk_assign_tcp_reqsk(struct __sk_buff *skb, struct sock *sk, struct bpf_tcp_req_attrs *attrs,
				   int attrs__sz) __ksym __weak;

/* Settings for the hand-off, written by synwall before load. */
const volatile __u16 mss_table[8] = { 536, 1220, 1300, 1360, 1400, 1440, 1460, 8960 };
const volatile __u8 our_wscale = 7;

__attribute__((noinline)) int sw_handoff(struct __sk_buff *skb, struct pkt *p)
{
	struct bpf_tcp_req_attrs attrs = {};
	struct sw_flow_key k = {};
	struct opt_walk w = {};
	struct sw_flow *f;
	__u64 now;
	int requeued;
	struct bpf_sock *skc;
	struct tcp_sock *tp;
	struct sw_key *key;
	struct tcphdr th;
	__u32 cookie, client_isn, slot, opt_len, ws;
	int ok, ret;

	__u32 l3_off, l4_off, v6, tuple_len;

	if (!p)
		return TC_ACT_OK;
	l3_off = p->l3_off;
	l4_off = p->l4_off;
	v6 = p->v6;
	tuple_len = v6 ? sizeof(p->tuple.ipv6) : sizeof(p->tuple.ipv4);
	if (bpf_skb_load_bytes(skb, l4_off & 0x7ff, &th, sizeof(th)))
		return TC_ACT_OK;
	if (th.syn || th.rst || !th.ack)
		return TC_ACT_OK;
	skc = bpf_skc_lookup_tcp(skb, &p->tuple, tuple_len, BPF_F_CURRENT_NETNS, 0);
	if (!skc)
		return TC_ACT_OK;
	if (skc->state != BPF_TCP_LISTEN) {
		bpf_sk_release(skc);
		return TC_ACT_OK;
	}
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp) {
		bpf_sk_release(skc);
		return TC_ACT_OK;
	}

	/* This connection was handed off a moment ago, in this receive batch
	 * most likely: TCP has not made the socket yet. Requeue the segment
	 * once, behind the batch, where it finds the new socket (or, if the
	 * hand-off failed, comes back here and is checked as itself). */
	flow_key(&k, p);
	f = bpf_map_lookup_elem(&flows, &k);
	requeued = skb->tc_index == SW_TC_INDEX_DEFERRED;
	if (requeued)
		skb->tc_index = 0;
	now = bpf_ktime_get_ns();
	if (f && !requeued && f->assigned_ns && now - f->assigned_ns < FLOW_TTL_NS &&
	    f->deferrals < MAX_DEFERRALS) {
		bpf_sk_release(skc);
		f->deferrals++;
		skb->tc_index = SW_TC_INDEX_DEFERRED;
		count(SW_HANDOFF_DEFERRED);
		return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
	}

	cookie = bpf_ntohl(th.ack_seq) - 1;
	client_isn = bpf_ntohl(th.seq) - 1;
	opt_len = th.doff * 4;
	if (opt_len > sizeof(th) && opt_len <= 60) {
		opt_len -= sizeof(th);
		if (!bpf_skb_load_bytes(skb, (l4_off & 0x7ff) + sizeof(th), w.buf, opt_len)) {
			w.len = opt_len;
			bpf_loop(40, opt_step, &w, 0);
		}
	}
	slot = (cookie >> 9) & 1;
	key = bpf_map_lookup_elem(&keys, &slot);
	ok = key && w.found >= 0;
	if (ok) {
		if (v6) {
			struct ipv6hdr ip6;

			ok = !bpf_skb_load_bytes(skb, l3_off & 0x3f, &ip6, sizeof(ip6)) &&
			     cookie_check(key, (__u8 *)&ip6.saddr, (__u8 *)&ip6.daddr, 16, th.source, th.dest,
					  client_isn, cookie, w.found == 1, w.tsecr);
		} else {
			struct iphdr ip;

			ok = !bpf_skb_load_bytes(skb, l3_off & 0x3f, &ip, sizeof(ip)) &&
			     cookie_check(key, (__u8 *)&ip.saddr, (__u8 *)&ip.daddr, 4, th.source, th.dest,
					  client_isn, cookie, w.found == 1, w.tsecr);
		}
	}
	if (!ok) {
		bpf_sk_release(skc);
		/* Behind an ACK whose hand-off did not complete (a full accept
		 * queue): dropped, so the client resends it; the listener would
		 * answer it with a reset. */
		count(f ? SW_HANDOFF_FOLLOW_UP_DROP : SW_HANDOFF_BAD_COOKIE);
		return TC_ACT_SHOT;
	}

	/* The attributes the cookie carries (docs/cookie.md §3). */
	attrs.mss = mss_table[(cookie >> 6) & 7];
	ws = (cookie >> 2) & 0xf;
	if (ws != WSCALE_NONE) {
		attrs.wscale_ok = 1;
		attrs.snd_wscale = ws > 14 ? 14 : ws;
		attrs.rcv_wscale = our_wscale;
	}
	attrs.sack_ok = !!(cookie & 2);
	attrs.ecn_ok = cookie & 1;
	if (w.found == 1) {
		attrs.tstamp_ok = 1;
		attrs.rcv_tsval = w.tsval;
		attrs.rcv_tsecr = w.tsecr;
	}
	ret = bpf_sk_assign_tcp_reqsk(skb, (struct sock *)tp, &attrs, sizeof(attrs));
	bpf_sk_release(skc);
	if (ret) {
		count(SW_HANDOFF_FAILED);
		return TC_ACT_OK;
	}
	count(SW_HANDOFF_OK);
	if (f) {
		f->assigned_ns = now;
		f->deferrals = 0;
	} else {
		struct sw_flow nf = { .verified_ns = now, .assigned_ns = now, .seq = bpf_ntohl(th.seq),
				      .ack = bpf_ntohl(th.ack_seq) };

		bpf_map_update_elem(&flows, &k, &nf, BPF_ANY);
	}
	return TC_ACT_OK;
}

SEC("tcx/ingress")
int tc_handoff(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct pkt p = {};

	void *meta = (void *)(long)skb->data_meta;

	if (!bpf_ksym_exists(bpf_sk_assign_tcp_reqsk))
		return TC_ACT_OK;
	/* XDP already found this segment's kernel socket. */
	if (meta + sizeof(__u32) <= data && *(__u32 *)meta == SW_META_PASS)
		return TC_ACT_OK;
	if (parse(data, data_end, &p) >= 0)
		return TC_ACT_OK;
	return sw_handoff(skb, &p);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
