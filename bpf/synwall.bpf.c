// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * synwall's datapath in BPF.
 *
 * XDP (xdp_synwall): steer SYNs to protected ports into this receive
 * queue's AF_XDP socket, check the cookie of ACKs that have no socket, and
 * pass everything else to the kernel:
 *
 *   frame -> parse (parse.h) -> protected port? -> kernel socket? -> SYN?
 *
 * TC ingress (tc_handoff): hand connections whose ACK proves its cookie to
 * the local listener (kernel mode, or synwall's own in proxy mode).
 *
 * Nothing here is dropped for being a fragment or lacking DF. Every verdict
 * increments its own per-CPU counter (enum sw_counter in synwall.h).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "synwall.h"
#include "cookie.h"
#include "maps.h"
#include "parse.h"
#include "synack.h"
#include "tuples.h"

/* XDP -> TC: a segment to a protected port that XDP found a kernel socket
 * for, in 4 bytes of XDP metadata, so TC skips it without parsing it again
 * (TC checks every other segment itself: it cannot trust that a frame came
 * through XDP). Without metadata support TC does the full work. Must be
 * the last thing before returning: it moves ctx->data_meta. Not in
 * xdp_synwall_ext (`ext`), where TC does the full work. */
#define SW_META_PASS 0x53570000u	/* "SW", 0: belongs to a kernel socket */

/* 0 where the kernel refuses bpf_xdp_adjust_meta to XDP programs (some
 * builds of Linux 6.18 do; synwall probes before the load): no metadata,
 * TC does the full work, as under `ext`. The verifier knows the constant
 * and never looks at the call. */
const volatile __u8 xdp_meta = 1;

static __always_inline void set_meta(struct xdp_md *ctx, __u32 v, const int ext)
{
	void *data, *meta;

	if (ext || !xdp_meta || bpf_xdp_adjust_meta(ctx, -(int)sizeof(__u32)))
		return;
	data = (void *)(long)ctx->data;
	meta = (void *)(long)ctx->data_meta;
	if (meta + sizeof(__u32) > data)
		return;
	*(__u32 *)meta = v;
}

/* The fields of an ACK that its cookie check reads. */
struct sw_ack {
	__u32 seq; /* host order */
	__u32 ack;
	struct opt_walk opts; /* found: 1 timestamps, 0 none, -1 malformed */
};

/* seq and ack of an ACK; returns its option bytes' length (0..40), or 0
 * with opts.found = -1 for a data offset below the fixed header. */
static __always_inline __u32 ack_begin(const struct tcphdr *tcp, struct sw_ack *a)
{
	__u32 hdr_len = tcp->doff * 4; /* 0..60 */

	a->seq = bpf_ntohl(tcp->seq);
	a->ack = bpf_ntohl(tcp->ack_seq);
	if (hdr_len < sizeof(*tcp)) {
		a->opts.found = -1;
		return 0;
	}
	return hdr_len - sizeof(*tcp);
}

/* The options of an ACK from Linux with timestamps, read in the packet at
 * fixed offsets: NOP, NOP, timestamps, 12 bytes. One compare replaces the
 * copy of the options and the walk, whose result it gives; any other
 * layout goes through them. True when it matched. */
static __always_inline int ack_linux_opts(const struct tcphdr *tcp, void *data_end,
					  struct opt_walk *w)
{
	const __u8 *o = (const __u8 *)(tcp + 1);

	if ((void *)(o + 12) > data_end)
		return 0;
	if (load32(o) != bpf_htonl(TCPOPT_NOP << 24 | TCPOPT_NOP << 16 | TCPOPT_TIMESTAMP << 8 |
				   TCPOLEN_TIMESTAMP))
		return 0;
	w->tsval = bpf_ntohl(load32(o + 4));
	w->tsecr = bpf_ntohl(load32(o + 8));
	w->found = 1;
	return 1;
}

/*
 * Does an ACK's cookie prove one of our handshakes with the keys of secret
 * `secret` (0: the one that mints, 1: the rollover's other one)? Returns
 * SW_ACK_COOKIE_OK or the counter of the reason it does not (docs/cookie.md
 * §5). A global function, so the verifier checks it once on its own
 * instead of on every path that reaches it.
 */
__attribute__((noinline)) int sw_cookie_verdict(const struct pkt *p, const struct sw_ack *a,
						__u32 secret)
{
	struct cookie_flow fl = {};
	struct sw_key *key;
	__u32 cookie, slot;

	if (!p || !a)
		return SW_DROP_BAD_COOKIE;
	if (a->opts.found < 0)
		return SW_DROP_BAD_OPTIONS;
	cookie = a->ack - 1;
	slot = 2 * (secret & 1) + cookie_epoch_slot(cookie);
	key = bpf_map_lookup_elem(&keys, &slot);
	if (!key)
		return SW_DROP_BAD_COOKIE;
	pkt_cookie_flow(p, &fl);
	if (!cookie_check(key, &fl, a->seq - 1, cookie, a->opts.found == 1, a->opts.tsecr))
		return SW_DROP_BAD_COOKIE;
	return SW_ACK_COOKIE_OK;
}

/* The one cookie check XDP and TC both run: the minting secret first, the
 * rollover's other one only when that fails and a rollover is on, so a
 * rollover costs nothing but the failing ACKs' second MAC. */
static __always_inline int sw_ack_verdict(const struct pkt *p, const struct sw_ack *a)
{
	__u32 zero = 0, *count;
	int rc = sw_cookie_verdict(p, a, 0);

	if (rc != SW_DROP_BAD_COOKIE)
		return rc;
	count = bpf_map_lookup_elem(&secret_count, &zero);
	if (count && *count > 1)
		return sw_cookie_verdict(p, a, 1);
	return rc;
}

/*
 * Connections in the middle of their hand-off. A receive batch (GRO, NAPI)
 * goes through XDP and TC as a whole before TCP sees its first segment, so
 * the segments right behind a handshake ACK (the request, an upload's first
 * window) find no socket yet: XDP would drop them as bad cookies (their
 * sequence numbers have moved on; the first data segment's has not, as a
 * bare ACK takes none, and it passes the cookie again) and TC would hand
 * the connection off a second time, which the kernel drops as a
 * duplicate. Both would cost the
 * client a retransmission. So XDP records each verified ACK here and passes
 * the segments that follow it; TC records each hand-off and requeues the
 * segments that meet the listener behind it once (through the device's
 * backlog), by which time TCP has made the connection. Entries count for
 * FLOW_TTL_NS.
 *
 * A table of FLOW_SETS sets of two slots (a cache line), a connection's
 * set and tag given by its keyed tuple hash (tuples.h): a lookup and an
 * insert read and write one line, where the LRU hash this replaced cost a
 * verified ACK 44 % of its time (synwall-xdp-cost, --only "new
 * connection"). A new connection takes a free slot of its set, or the one
 * used less lately, so an entry goes when two newer connections have come
 * to its set: its follow-ups are then judged as segments with no hand-off
 * (XDP drops them under attack and the client resends them; what XDP
 * passes, in peacetime or in the moment between XDP and TC, TC leaves to
 * the listener, which resets the connection). An entry taken before its
 * hand-off, within the second it counts for, is counted (flow_evicted);
 * its follow-ups, if any come, count as drop_bad_cookie. A follow-up
 * needs its entry for the moment from its ACK to TCP's socket: at 10k new
 * connections a second, fewer than 1 in 10,000 entries go within 10 ms,
 * but about a third within the second a failed hand-off's follow-ups are
 * dropped for (computed, for connections hashed at random), where an
 * LRU of 65,536 entries would keep them. 16,384 slots:
 * 65,536 cost a new connection's ACK 300 ns against 190 (synwall-xdp-cost,
 * a line of a 2 MiB table at random). A flood of valid ACKs only
 * overwrites. No locks: a connection's segments go through one CPU's XDP
 * at a time, but a set is shared by every queue, so two CPUs may take the
 * same slot at once (one of the two connections loses its entry, rarely)
 * and a reader that meets a slot in the
 * middle of a write (TC on another CPU) finds at worst numbers that are
 * not this connection's latest (another's, or its own before a new ACK):
 * a follow-up then fails its acknowledgment check, and a deferral may
 * happen once more than needed; TC may also write `assigned` into a slot
 * another connection took since its lookup, the same once-more deferral.
 */
/* In an action: its connection is marked already (bpf/tuples.h), by a
 * path that had the tuple's hash and the clock at hand, which marked()
 * would compute again (a verified ACK, a follow-up); marked() takes it
 * off. */
#define MARKED 0x100

#define FLOW_TTL_NS 1000000000ull	/* 1 s */
#define FOLLOW_UP_WINDOW (1u << 20)	/* bytes a follow-up may lie past the ACK */
#define MAX_DEFERRALS 64		/* requeues per hand-off, a bound on loops */
#define SW_TC_INDEX_DEFERRED 0x5357	/* "SW" in tc_index: already requeued once */
#define FLOW_SETS (1u << 13)		/* 512 KiB */
/* A slot's times, on the coarse clock in units of 2^10 ns, 32 bits: they
 * wrap after 73 minutes, when an old slot may look recent again (its
 * connection long made: its segments meet their socket first). */
#define FLOW_UNIT_SHIFT 10
#define FLOW_TTL_UNITS ((__u32)(FLOW_TTL_NS >> FLOW_UNIT_SHIFT))

struct sw_flow {
	__u64 tag;		/* its connection's tuple_hash | 1; 0: free */
	__u32 verified;		/* XDP: its ACK's cookie validated (flow_time) */
	__u32 assigned;		/* TC: handed to the listener (0: not yet) */
	__u32 seq;		/* the ACK's sequence number */
	__u32 ack;		/* the ACK's acknowledgment number (our ISN + 1) */
	__u32 deferrals;	/* requeues since `assigned` */
	__u32 next;		/* way[0]'s only: the way its set's next
				 * connection takes (the one used less lately) */
};

struct sw_flow_set {
	struct sw_flow way[2];
};

struct sw_flows {
	struct sw_flow_set set[FLOW_SETS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sw_flows);
} flows SEC(".maps");

/* A flow time (never 0, so that `assigned` can say "not yet"). */
static __always_inline __u32 flow_time(__u64 coarse_ns)
{
	return (__u32)(coarse_ns >> FLOW_UNIT_SHIFT) | 1;
}

/* The connection's tag in `flows`. */
static __always_inline __u64 flow_tag(const struct pkt *p)
{
	return tuple_hash(p) | 1;
}

/* The set of the connection tagged `tag`. */
static __always_inline struct sw_flow_set *flow_set(__u64 tag)
{
	__u32 zero = 0;
	struct sw_flows *m = bpf_map_lookup_elem(&flows, &zero);

	return m ? &m->set[hash_index(tag, FLOW_SETS - 1)] : NULL;
}

/* The way of `s` that holds the connection tagged `tag`, or -1. */
static __always_inline int flow_way(const struct sw_flow_set *s, __u64 tag)
{
	if (s->way[0].tag == tag)
		return 0;
	if (s->way[1].tag == tag)
		return 1;
	return -1;
}

/* The connection's slot, or NULL. */
static __always_inline struct sw_flow *flow_find(__u64 tag)
{
	struct sw_flow_set *s = flow_set(tag);
	int w = s ? flow_way(s, tag) : -1;

	return w < 0 ? NULL : &s->way[w & 1];
}

/* The way of `s` a new connection takes: a free one, or the one used less
 * lately (no clock: the coarse one ties many connections). */
static __always_inline int flow_victim(const struct sw_flow_set *s)
{
	if (!s->way[0].tag)
		return 0;
	if (!s->way[1].tag)
		return 1;
	return s->way[0].next & 1;
}

/* Way `w` of `s` was just used: the other goes next. */
static __always_inline void flow_used(struct sw_flow_set *s, int w)
{
	s->way[0].next = !w;
}

/* Gives slot `f` to the connection tagged `tag`, verified at `t` and
 * handed off at `assigned` (0: not yet); counts flow_evicted when another
 * connection verified within FLOW_TTL_NS and not handed off by TC held it
 * (TC hands a connection off microseconds after its ACK, so an entry that
 * goes before is one whose follow-ups may still come; with the repair
 * engine, which TC does not see, any entry under a second old). The tag
 * last (the compiler keeps the order; x86 keeps the stores' order too,
 * where another CPU may read the slot meanwhile: see `flows`). */
static __always_inline void flow_take(struct sw_flow *f, __u64 tag, const struct sw_ack *a,
				      __u32 t, __u32 assigned)
{
	if (f->tag && f->tag != tag && !f->assigned && t - f->verified < FLOW_TTL_UNITS)
		count(SW_FLOW_EVICTED);
	f->verified = t;
	f->assigned = assigned;
	f->seq = a->seq;
	f->ack = a->ack;
	f->deferrals = 0;
	asm volatile("" ::: "memory");
	f->tag = tag;
}

/* When an ACK's cookie last proved one of our handshakes, on any CPU
 * (bpf_ktime_get_coarse_ns; written at most every VERIFIED_EVERY_NS, so that CPUs
 * do not fight over its line). An ACK that fails its cookie is looked up
 * in `flows` as a possible follow-up only within FLOW_TTL_NS of it: under a
 * flood of forged ACKs with no handshake completing, the lookup (a quarter
 * of such an ACK's cost) is skipped. */
#define VERIFIED_EVERY_NS 10000000ull /* 10 ms */
__u64 acks_verified_ns = 0;

static __always_inline void note_verified_ack(__u64 now)
{
	if ((__s64)(now - acks_verified_ns) > (__s64)VERIFIED_EVERY_NS)
		acks_verified_ns = now;
}

static __always_inline int acks_verified_lately(__u64 now)
{
	/* Signed: another CPU may have written a time after our read. */
	return (__s64)(now - acks_verified_ns) < (__s64)(FLOW_TTL_NS + VERIFIED_EVERY_NS);
}

/* A segment right behind a verified ACK of ours (pass_follow_up). */
static __always_inline int is_follow_up(const struct sw_flow *f, const struct sw_ack *a, __u64 now)
{
	return f && f->ack == a->ack && a->seq - f->seq < FOLLOW_UP_WINDOW &&
	       flow_time(now) - f->verified < FLOW_TTL_UNITS;
}

/* XDP: a segment of an existing kernel socket (established, time-wait or
 * request) is the kernel's; only a listener (or nothing) is ours. */
static __always_inline int has_kernel_socket(struct xdp_md *ctx, struct pkt *p)
{
	__u32 tuple_len = p->v6 ? sizeof(p->tuple.ipv6) : sizeof(p->tuple.ipv4);
	struct bpf_sock *sk = bpf_skc_lookup_tcp(ctx, &p->tuple, tuple_len, BPF_F_CURRENT_NETNS, 0);
	int listener;

	if (!sk)
		return 0;
	listener = sk->state == BPF_TCP_LISTEN;
	bpf_sk_release(sk);
	return !listener;
}

/* Sends the frame to this queue's worker (its AF_XDP socket); false when
 * the queue has none. synack = "auto" compares what went to a worker with
 * what it took, so every frame sent counts in `q`, the queue's load (NULL
 * in the other modes). */
static __always_inline int redirect_to_worker(struct xdp_md *ctx, struct sw_queue_load *q)
{
	if (bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS) != XDP_REDIRECT)
		return 0;
	if (q)
		q->redirected++; /* one writer: the queue's NAPI */
	return 1;
}

/* Whether this queue's worker may answer SYNs (bpf/maps.h ack_only_from). */
static __always_inline int syn_queue(struct xdp_md *ctx)
{
	return ctx->rx_queue_index < ack_only_from;
}

/* This queue's load, for synack = "auto" and "xdp". */
static __always_inline struct sw_queue_load *auto_queue_load(struct xdp_md *ctx)
{
	__u32 queue = ctx->rx_queue_index;

	/* synack = "xdp" too: while XDP answers do not leave, it works as auto. */
	return synack_mode != SYNACK_AFXDP ? bpf_map_lookup_elem(&queue_load, &queue) : NULL;
}

/* [handoff] engine = "repair": a verified ACK, or a segment right behind
 * one, goes to this queue's worker, which builds the connection's socket
 * (and feeds it what came before the socket existed). Counted as `rc`;
 * dropped when the queue has no worker socket. */
static __always_inline int to_worker(struct xdp_md *ctx, int rc)
{
	if (redirect_to_worker(ctx, auto_queue_load(ctx)))
		return verdict(rc, XDP_REDIRECT);
	return verdict(SW_HANDOFF_FAILED, XDP_DROP);
}

/*
 * SYNs this program left to the kernel (peacetime, a queue without a
 * worker, XDP answers that do not leave the interface) may get
 * the kernel's own SYN cookies; their ACKs must reach it. kernel_syn_ns
 * (bpf/maps.h) is when that last happened (written at most once a second,
 * so CPUs do not fight over its cache line); for the kernel's cookies'
 * lifetime after it,
 * an ACK that fails our cookie is checked against the kernel's with the
 * kernel's own helper. Before the first such SYN, or long after the last,
 * a forged ACK costs nothing more than our check.
 */
/* The kernel's SYN cookies live two minutes (net/ipv4/syncookies.c,
 * MAX_SYNCOOKIE_AGE), and its own check of them also needs a cookie sent
 * within that time (tcp_synq_no_recent_overflow). */
#define KERNEL_COOKIE_NS (120ULL * 1000000000ULL)

static __always_inline void note_kernel_syn(void)
{
	__u64 now = bpf_ktime_get_coarse_ns();

	if ((__s64)(now - kernel_syn_ns) > 1000000000LL)
		kernel_syn_ns = now;
}

/* Does this ACK carry a valid SYN cookie of the kernel's for the listener
 * it reaches (bpf_tcp_check_syncookie, Linux 5.2)? Asked only after the
 * kernel got SYNs from us lately. */
static __always_inline int kernel_cookie_ok(struct xdp_md *ctx, struct pkt *p, struct tcphdr *tcp)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *ip = data + (p->l3_off & L3_OFF_MASK);
	__u32 tuple_len = p->v6 ? sizeof(p->tuple.ipv6) : sizeof(p->tuple.ipv4);
	struct bpf_sock *sk;
	long rc = -1;

	__u64 last = kernel_syn_ns;

	/* Signed: another CPU may have noted a tick later than our clock's. */
	if (!last || (__s64)(bpf_ktime_get_coarse_ns() - last) >= (__s64)KERNEL_COOKIE_NS)
		return 0;
	if ((void *)(tcp + 1) > data_end)
		return 0;
	sk = bpf_skc_lookup_tcp(ctx, &p->tuple, tuple_len, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	if (sk->state == BPF_TCP_LISTEN) {
		if (p->v6 && ip + sizeof(struct ipv6hdr) <= data_end)
			rc = bpf_tcp_check_syncookie(sk, ip, sizeof(struct ipv6hdr), tcp, sizeof(*tcp));
		else if (!p->v6 && ip + sizeof(struct iphdr) <= data_end)
			rc = bpf_tcp_check_syncookie(sk, ip, sizeof(struct iphdr), tcp, sizeof(*tcp));
	}
	bpf_sk_release(sk);
	return rc == 0;
}

/* XDP: an ACK (no SYN, no RST) with no socket. A valid cookie passes it to
 * the TC hand-off and records the connection; a segment right behind a
 * verified ACK of the same connection (same acknowledgment, a little
 * further on in sequence) passes too; anything else is dropped. Not
 * inlined: its stack is not the SYN path's (the verifier allows 512 bytes
 * along any chain of calls). */
static __always_inline int ack_verdict(struct xdp_md *ctx, struct pkt *p, struct tcphdr *tcp,
				       const int ext)
{
	struct sw_flow_set *set;
	struct sw_ack a = {};
	struct sw_flow *f;
	__u64 tag, now;
	__u32 n;
	int rc;

	n = ack_begin(tcp, &a);
	if (n == 12 && ack_linux_opts(tcp, (void *)(long)ctx->data_end, &a.opts))
		;
	else if (n > 0) {
		if (bpf_xdp_load_bytes(ctx, (p->l4_off & L4_OFF_MASK) + sizeof(*tcp), a.opts.buf,
				       opt_read_len(n)))
			a.opts.found = -1;
		else
			opt_walk_run(&a.opts, n);
	}
	rc = sw_ack_verdict(p, &a);
	if (rc == SW_ACK_COOKIE_OK) {
		now = bpf_ktime_get_coarse_ns();
		note_verified_ack(now);
		tag = flow_tag(p);
		mark_hashed_tuple(tag, now); /* with what is at hand: see MARKED */
		set = flow_set(tag);
		if (set) {
			int w = flow_way(set, tag), v = w < 0 ? flow_victim(set) : w;

			f = &set->way[v & 1];
			if (w >= 0 && f->ack == a.ack)
				f->verified = flow_time(now); /* a resent ACK */
			else
				flow_take(f, tag, &a, flow_time(now), 0);
			flow_used(set, v);
		}
		if (handoff_repair)
			return to_worker(ctx, rc) | MARKED;
		return verdict(rc, XDP_PASS) | MARKED;
	}
	if (rc == SW_DROP_BAD_COOKIE) {
		now = bpf_ktime_get_coarse_ns();
		tag = acks_verified_lately(now) ? flow_tag(p) : 0;
		f = tag ? flow_find(tag) : NULL;
		if (is_follow_up(f, &a, now)) {
			mark_hashed_tuple(tag, now);
			return (handoff_repair ? to_worker(ctx, SW_PASS_FOLLOW_UP)
					       : verdict(SW_PASS_FOLLOW_UP, XDP_PASS)) |
			       MARKED;
		}
	}
	if (peacetime())
		return verdict(SW_PASS_PEACE_ACK, XDP_PASS);
	if (kernel_cookie_ok(ctx, p, tcp)) {
		set_meta(ctx, SW_META_PASS, ext); /* TC: the kernel's, not ours to check */
		return verdict(SW_PASS_KERNEL_ACK, XDP_PASS);
	}
	return verdict(rc, XDP_DROP);
}

/* An ACK, in a subprogram of each XDP program's own. */
static __noinline int xdp_ack(struct xdp_md *ctx, struct pkt *p, struct tcphdr *tcp)
{
	return ack_verdict(ctx, p, tcp, 0);
}

static __noinline int xdp_ack_ext(struct xdp_md *ctx, struct pkt *p, struct tcphdr *tcp)
{
	return ack_verdict(ctx, p, tcp, 1);
}

/* The SYN-ACK in place: resized as needed, or (`ext`) only when it has the
 * SYN's length. */
static __always_inline int synack(struct xdp_md *ctx, struct pkt *p, __u32 mode, const int ext)
{
	return ext ? sw_synack_same_len(ctx, p, mode) : sw_synack(ctx, p, mode);
}

/* synack = "auto": is this queue's worker behind by auto_backlog SYNs, or
 * was it within the last auto_hold_ns? `now`: the SYN's coarse clock (its
 * tick of a few ms is nothing to a hold of 100 ms, and it saves the SYN
 * a second clock read). */
static __always_inline int worker_backed_up(struct sw_queue_load *q, __u64 now)
{
	if (!q)
		return 0;
	if (!auto_hold_ns)
		return q->redirected - *(volatile __u64 *)&q->taken >= auto_backlog;
	if (now < q->xdp_until)
		return 1;
	if (q->redirected - *(volatile __u64 *)&q->taken < auto_backlog)
		return 0;
	q->xdp_until = now + auto_hold_ns; /* one writer: the queue's NAPI */
	return 1;
}

/* XDP: a SYN to a protected port. Answered here (synack = "xdp"; "auto"
 * where answers are known to leave, or while the queue's worker is backed
 * up) when sw_synack can;
 * otherwise it goes to this queue's AF_XDP socket, or to the kernel when
 * the queue has none. */

/* The first n (0..64) bits of a 64-bit word read in memory order. */
static __always_inline __u64 prefix_mask64(__u32 n)
{
	return n ? bpf_cpu_to_be64(~0ULL << (64 - n)) : 0;
}

/* The hash (keyed with hash_seed) of the source's prefix, its first v4_len
 * (IPv6: v6_len) bits, with the family and `kind` (which windows it counts
 * in). */
static __always_inline __u64 prefix_hash(const struct pkt *p, __u32 v4_len, __u32 v6_len,
					 __u32 kind)
{
	__u64 h = hash_seed, hi, lo;
	__u32 len;

	if (!p->v6) {
		__u32 a = p->tuple.ipv4.saddr;

		len = v4_len > 32 ? 32 : v4_len;
		a &= len ? bpf_htonl(~0U << (32 - len)) : 0;
		/* Two steps: after one, the set's bits would depend on the
		 * address's first 12 bits only. */
		h = seeded_mix(h, (__u64)a << 32 | kind << 16 | len << 8 | 4);
		return seeded_mix(h, 0);
	}
	len = v6_len > 128 ? 128 : v6_len;
	__builtin_memcpy(&hi, p->tuple.ipv6.saddr, 8);
	__builtin_memcpy(&lo, (const __u8 *)p->tuple.ipv6.saddr + 8, 8);
	hi &= prefix_mask64(len > 64 ? 64 : len);
	lo &= prefix_mask64(len > 64 ? len - 64 : 0);
	h = seeded_mix(h, hi);
	h = seeded_mix(h, lo);
	return seeded_mix(h, kind << 16 | len << 8 | 6);
}

/* Whole seconds since a window's start (bpf/maps.h), 0 to 2 (2: two or
 * more): 0 while it is this second, and for a start another CPU wrote
 * after we read the clock ("now", not 52 days ago). Compares, not a
 * division. */
static __always_inline __u32 window_age(const struct sw_guard_window *w, __u32 now)
{
	__u32 d = now - w->start;

	if (d < GUARD_SECOND || d >= -GUARD_SECOND)
		return 0;
	return d < 2 * GUARD_SECOND ? 1 : 2;
}

/* Whether a window's prefix holds it at `now` (bpf/maps.h): it reached
 * `hold` this second, or in the last one. */
static __always_inline int window_held(const struct sw_guard_window *w, __u32 now, __u32 hold)
{
	__u32 age = window_age(w, now);
	__u64 c = w->count;

	if (age == 0)
		return (c & GUARD_COUNT_MASK) >= hold || (c & GUARD_HELD_BIT);
	return age == 1 && (c & GUARD_COUNT_MASK) >= hold;
}

/* Counts one in its own prefix's window (or the per-CPU total's) at `now`;
 * true when that passes `cap` this second. A new second starts the count
 * again, and keeps whether the last one reached `hold` (two CPUs may both
 * start it: the cap is then a little loose, never tight). */
static __always_inline int way_full(struct sw_guard_window *w, __u32 now, __u32 cap, __u32 hold)
{
	__u32 age = window_age(w, now);

	if (age) {
		__u64 held = age == 1 && (w->count & GUARD_COUNT_MASK) >= hold;

		w->start = now;
		w->count = held ? GUARD_HELD_BIT : 0;
	}
	return (__sync_fetch_and_add(&w->count, 1) & GUARD_COUNT_MASK) >= cap;
}

/* The window of `s` a prefix without one takes: the least counted one
 * that nobody holds; NULL when every one is held. */
static __always_inline struct sw_guard_window *spare_way(struct sw_guard_set *s, __u32 now,
							 __u32 hold)
{
	struct sw_guard_window *spare = NULL;
	__u64 least = ~0ULL;
	int i;

#pragma unroll
	for (i = 0; i < GUARD_WAYS; i++) {
		struct sw_guard_window *w = &s->way[i];
		__u64 c = window_age(w, now) ? 0 : w->count & GUARD_COUNT_MASK;

		if (!window_held(w, now, hold) && c < least) {
			spare = w;
			least = c;
		}
	}
	return spare;
}

/* Counts one in the window of the prefix hashed to `h` in `map` (a table
 * of struct sw_guard_set); true when that passes `cap` this second. */
static __always_inline int prefix_full(void *map, __u64 h, __u64 now, __u32 cap)
{
	__u32 set, tag = (__u32)h | 1, t = now >> GUARD_UNIT_SHIFT;
	__u32 hold = cap < GUARD_HOLD ? cap : GUARD_HOLD;
	struct sw_guard_window *way;
	struct sw_guard_set *s;
	int i;

	set = hash_index(h, GUARD_SETS - 1);
	s = bpf_map_lookup_elem(map, &set);
	if (!s)
		return 0;
#pragma unroll
	for (i = 0; i < GUARD_WAYS; i++)
		if (s->way[i].tag == tag)
			return way_full(&s->way[i], t, cap, hold);
	way = spare_way(s, t, hold);
	if (!way) {
		count(SW_GUARD_UNCOUNTED); /* its set is held by busier prefixes */
		return 0;
	}
	/* The tag last (the compiler keeps the order, x86 stores keep it): a
	 * CPU that meets the tag finds its own count. */
	way->start = t;
	way->count = 1;
	asm volatile("" ::: "memory");
	way->tag = tag;
	return cap < 1;
}

/* A prefix's second window, for the SYNs XDP cannot check as the core
 * will (IP options, IPv6 extension headers, a payload): a flood of such
 * SYNs that the core then drops spends only this one, never the budget of
 * the prefix's ordinary SYNs. Its hash's `kind`. */
#define REFLECT_UNCHECKED 1

/* The reflection guard: true when this SYN's SYN-ACK would pass a cap
 * (called only with a cap on); `unchecked` for a SYN of the second window.
 * The prefix first: a SYN its prefix refuses does not spend the total.
 * Not inlined: its locals would otherwise join xdp_synwall's stack
 * frame, which with sw_synack's must stay within 512 bytes. */
static __noinline int reflection_capped(const struct pkt *p, int unchecked, __u64 now)
{
	__u32 prefix_cap = reflect_prefix_cap, total_cap = reflect_total_cap, zero = 0;
	struct sw_guard_window *w;

	if (!p)
		return 0;
	if (prefix_cap &&
	    prefix_full(&reflect_prefix,
			prefix_hash(p, reflect_v4_len, reflect_v6_len,
				    unchecked ? REFLECT_UNCHECKED : 0),
			now, prefix_cap))
		return 1;
	if (!total_cap)
		return 0;
	w = bpf_map_lookup_elem(&reflect_total, &zero);
	return w && way_full(w, now >> GUARD_UNIT_SHIFT, total_cap, total_cap);
}

static __always_inline int reflection_on(void)
{
	return reflect_prefix_cap || reflect_total_cap;
}

/* The per-source SYN limit ([attack] syns_per_source; called only with it
 * on, under attack): at most that many SYNs per second from one /32 (IPv6
 * /64), for floods from real addresses. Not inlined, as reflection_capped. */
static __noinline int source_capped(const struct pkt *p, __u64 now)
{
	__u32 cap = source_syn_cap; /* read once: a reload may turn it off */

	if (!p || !cap)
		return 0;
	return prefix_full(&source_windows, prefix_hash(p, 32, 64, 0), now, cap);
}

/* The reflection guard for a SYN bound for the worker, which sw_synack
 * left to it for `rc` (-1: not looked at yet): true when the
 * worker's answer would pass a cap. Only a SYN the worker's core answers
 * spends budget: one it drops for its checksum, options, flags or source
 * does not, so bad SYNs cannot use up a prefix's SYN-ACKs. The shapes
 * sw_synack leaves unchecked spend the prefix's second window. */
static __always_inline int worker_capped(struct xdp_md *ctx, struct pkt *p, int rc,
					 __u64 now, const int ext)
{
	if (rc == -1)
		rc = synack(ctx, p, SYNACK_CHECK, ext);
	if (rc == SW_SYN_WORKER_IP_EXT || rc == SW_SYN_WORKER_PAYLOAD)
		return reflection_capped(p, 1, now);
	if (rc >= 0 && rc != SW_SYN_WORKER_NO_ROOM)
		return 0;
	return reflection_capped(p, 0, now);
}

/* While XDP answers do not leave: is it time for this CPU's next probe?
 * A probe's client loses its SYN-ACK (and waits a second for its SYN's
 * retransmission), so probes are few: one per XDP_TX_PROBE_NS per CPU,
 * whatever the flood's rate. */
static __always_inline int probe_due(__u64 now)
{
	__u32 zero = 0;
	__u64 *last = bpf_map_lookup_elem(&probe_at, &zero);

	if (!last)
		return 0;
	if (now - *last < XDP_TX_PROBE_NS)
		return 0;
	*last = now;
	return 1;
}

/* A segment of an existing kernel socket is the kernel's; TC is told so.
 * A SYN (a retransmission to a request socket, a TIME-WAIT reuse) is looked
 * up only when synwall would answer it itself: the lookup is the dearest
 * step of the SYN path, and a SYN bound for the kernel anyway needs none. */
static __always_inline int of_kernel_socket(struct xdp_md *ctx, struct pkt *p, const int ext)
{
	if (!has_kernel_socket(ctx, p))
		return 0;
	set_meta(ctx, SW_META_PASS, ext);
	return 1;
}

/* The same for a SYN: looked up only when its connection may have a
 * kernel socket at all (bpf/tuples.h). */
static __always_inline int syn_of_kernel_socket(struct xdp_md *ctx, struct pkt *p, __u64 now,
						const int ext)
{
	return tuple_may_have_socket(p, now) && of_kernel_socket(ctx, p, ext);
}

/* A SYN left to the kernel (noted for kernel_cookie_ok). */
static __always_inline int syn_to_kernel(enum sw_counter c)
{
	note_kernel_syn();
	return verdict(c, XDP_PASS);
}

/* A SYN while XDP answers do not leave the interface (xdp_tx_ok clear):
 * the worker answers it, through the kernel's transmit path; what the worker
 * cannot take goes to the kernel, never into the hole, but for a probe now
 * and then (probe_due), answered by XDP_TX still, whose fate in the
 * driver's counters tells synwall when answers leave again. The kernel's
 * share gets no reflection guard, as the kernel alone has none: its window
 * lookup would cost more than the kernel can spare at the flood rates that
 * bring synwall here. */
static __always_inline int syn_without_xdp_tx(struct xdp_md *ctx, struct pkt *p,
					      struct sw_queue_load *q, __u64 now, const int ext)
{
	int worker;

	/* A queue that cannot send probes nothing: its every SYN would be a
	 * probe at a low rate, lost each time (the other queues probe). */
	if (!syn_queue(ctx))
		return syn_to_kernel(SW_SYN_KERNEL);
	worker = !worker_backed_up(q, now);
	if (!worker && !probe_due(now))
		return syn_to_kernel(SW_SYN_KERNEL);
	if (syn_of_kernel_socket(ctx, p, now, ext))
		return verdict(SW_PASS_SOCKET, XDP_PASS);
	if (worker) {
		if (reflection_on() && worker_capped(ctx, p, -1, now, ext))
			return verdict(SW_DROP_REFLECTION_CAP, XDP_DROP);
		if (redirect_to_worker(ctx, q))
			return verdict(SW_SYN_REDIRECT, XDP_REDIRECT);
		return syn_to_kernel(SW_SYN_NO_XSK);
	}
	if (synack(ctx, p, SYNACK_WRITE, ext) < 0)
		return verdict(SW_SYNACK_XDP, XDP_TX);
	return syn_to_kernel(SW_SYN_KERNEL);
}

/* XDP: a SYN (no ACK, no RST) to a protected port. */
static __always_inline int xdp_syn(struct xdp_md *ctx, struct pkt *p, const int ext)
{
	struct sw_queue_load *q;
	int rc, guard, here;
	__u64 now;

	if (peacetime())
		return syn_to_kernel(SW_PASS_PEACE);
	/* One read of the clock for the SYN (a helper call costs as much as
	 * a tenth of an answer): the coarse one, whose tick is plenty for
	 * windows of a second and marks of a second. */
	now = bpf_ktime_get_coarse_ns();
	/* The caps' checks are calls; a cap that is off costs no call. */
	if (source_syn_cap && under_attack && source_capped(p, now))
		return verdict(SW_DROP_SOURCE_CAP, XDP_DROP);
	q = auto_queue_load(ctx);
	if (xdp_tx_ok == XDP_TX_OFF && synack_mode != SYNACK_AFXDP)
		return syn_without_xdp_tx(ctx, p, q, now, ext);
	if (syn_of_kernel_socket(ctx, p, now, ext))
		return verdict(SW_PASS_SOCKET, XDP_PASS);
	guard = reflection_on();
	rc = -1; /* not looked at */
	/* "auto" answers here first where answers are known to leave
	 * (XDP_TX_LEAVING), and otherwise when the worker is backed up. A
	 * queue whose worker cannot send (ack_only_from) is answered here
	 * as a backed-up worker's is (but for "afxdp"), not as syn_backlog. */
	here = synack_mode == SYNACK_XDP ||
	       (synack_mode == SYNACK_AUTO && xdp_tx_ok == XDP_TX_LEAVING);
	if (here || worker_backed_up(q, now) || (synack_mode == SYNACK_AUTO && !syn_queue(ctx))) {
		if (!here && synack_mode == SYNACK_AUTO && syn_queue(ctx))
			count(SW_SYN_BACKLOG);
		rc = synack(ctx, p, SYNACK_WRITE, ext);
		if (rc < 0) {
			/* Only a SYN answered spends the guard's budget: p
			 * still holds the SYN's addresses, and a capped answer
			 * is dropped as its SYN would have been. */
			if (guard && reflection_capped(p, 0, now))
				return verdict(SW_DROP_REFLECTION_CAP, XDP_DROP);
			return verdict(SW_SYNACK_XDP, XDP_TX);
		}
		count(rc);
	}
	if (!syn_queue(ctx))
		return syn_to_kernel(SW_SYN_NO_XSK);
	if (guard && worker_capped(ctx, p, rc, now, ext))
		return verdict(SW_DROP_REFLECTION_CAP, XDP_DROP);
	if (redirect_to_worker(ctx, q))
		return verdict(SW_SYN_REDIRECT, XDP_REDIRECT);
	return syn_to_kernel(SW_SYN_NO_XSK);
}

/* XDP: an IPv6 header chain longer than the walk, to a protected address
 * (its TCP header, if it has one, out of sight). The lists hold; under
 * attack it is dropped, as synwall cannot tell it from a SYN; in
 * peacetime it is the kernel's. */
static __always_inline int xdp_long_chain(struct pkt *p)
{
	int rc = source_list(p);

	if (rc == SW_PASS_ALLOWED)
		return verdict(rc, XDP_PASS);
	if (rc == SW_DROP_DENIED)
		return verdict(rc, XDP_DROP);
	if (peacetime())
		return verdict(SW_PASS_LONG_CHAIN, XDP_PASS);
	return verdict(SW_DROP_LONG_CHAIN, XDP_DROP);
}

/* XDP: a later fragment of a TCP datagram (no TCP header): the kernel's,
 * but for a denied source, whose fragments would only fill the kernel's
 * reassembly memory. */
static __always_inline int xdp_later_fragment(struct pkt *p)
{
	if (source_list(p) == SW_DROP_DENIED)
		return verdict(SW_DROP_DENIED, XDP_DROP);
	return verdict(SW_PASS_FRAGMENT, XDP_PASS);
}

/* XDP: the first fragment of a segment to a protected port, its TCP header
 * whole (parse saw to that). A SYN in fragments comes from no TCP stack
 * (a SYN is never bigger than a minimum MTU): under attack it is dropped,
 * in peacetime the kernel reassembles and answers it. The rest of a first
 * fragment is the kernel's, and so are later fragments: without their
 * first one the kernel never completes the datagram. */
static __always_inline int xdp_first_fragment(const struct tcphdr *tcp)
{
	if (!tcp->syn || tcp->ack || tcp->rst)
		return verdict(SW_PASS_FRAGMENT, XDP_PASS);
	if (peacetime())
		return syn_to_kernel(SW_PASS_FRAGMENT_SYN);
	return verdict(SW_DROP_FRAGMENT, XDP_DROP);
}

/* XDP: a segment to a protected port, its TCP header whole. */
static __always_inline int xdp_protected(struct xdp_md *ctx, struct pkt *p, struct tcphdr *tcp,
					 const int ext)
{
	int rc = source_list(p);

	if (rc == SW_PASS_ALLOWED)
		return verdict(rc, XDP_PASS);
	if (rc == SW_DROP_DENIED)
		return verdict(rc, XDP_DROP);
	if (p->frag)
		return xdp_first_fragment(tcp);
	if (tcp->syn && !tcp->ack && !tcp->rst)
		return xdp_syn(ctx, p, ext);
	if (of_kernel_socket(ctx, p, ext))
		return verdict(SW_PASS_SOCKET, XDP_PASS);
	if (tcp->rst)
		return verdict(SW_PASS_RST, XDP_PASS);
	if (tcp->syn || !tcp->ack) /* a SYN-ACK to a server port (reflection, as the
				    * core drops it), or no flag a scan would not set */
		return verdict(SW_DROP_BAD_FLAGS, XDP_DROP);
	return ext ? xdp_ack_ext(ctx, p, tcp) : xdp_ack(ctx, p, tcp);
}

/* `action` for a segment to a protected port, whose connection is marked
 * (bpf/tuples.h) when it reaches a kernel socket or makes one: whatever
 * passes, and what goes to a worker but a SYN (the repair engine's ACKs
 * and what follows them). Not a SYN passed in peacetime: a peacetime
 * flood would mark every bucket, and the kernel's request sockets are
 * marked by the sweep synwall runs as an attack starts. The frame is as
 * it came for both actions (only XDP_TX rewrites it), so its flags are
 * read again here. Not inlined: xdp_synwall's stack and sw_synack's (with
 * its option walk's callback) must stay within 512 bytes, which Linux 6.1
 * counts in steps of 32. */
static __noinline int marked(struct xdp_md *ctx, const struct pkt *p, int action)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct tcphdr *tcp = data + (p->l4_off & L4_OFF_MASK);

	if (action & MARKED)
		return action & ~MARKED;
	if (action != XDP_PASS && action != XDP_REDIRECT)
		return action;
	/* synwall_xdp saw the whole header; a pass is marked regardless. */
	if ((void *)(tcp + 1) <= data_end && tcp->syn && !tcp->ack &&
	    (action == XDP_REDIRECT || peacetime()))
		return action;
	note_kernel_tuple(p);
	return action;
}

/* attach = "libxdp" with synwall's heartbeat stopped: everything is the
 * kernel's, and what goes to a protected port is marked as it passes. Not
 * inlined: its parse would join xdp_synwall's stack. */
static __noinline int stale_pass(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pkt p = {};

	if (parse(data, data_end, &p) == -1) {
		note_kernel_tuple(&p);
		note_kernel_syn(); /* the kernel may send its own cookies */
	}
	return verdict(SW_PASS_STALE, XDP_PASS);
}

static __always_inline int synwall_xdp(struct xdp_md *ctx, const int ext)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pkt p = {};
	struct tcphdr *tcp;
	int rc;

	count(SW_RX);
	if (heartbeat_stale())
		return stale_pass(ctx);
	rc = parse(data, data_end, &p);
	if (rc == SW_DROP_TRUNCATED_TCP || rc == SW_DROP_FRAGMENT)
		return verdict(rc, XDP_DROP);
	if (rc == SW_DROP_LONG_CHAIN)
		return xdp_long_chain(&p);
	if (rc == SW_PASS_FRAGMENT)
		return xdp_later_fragment(&p);
	if (rc >= 0)
		return verdict(rc, XDP_PASS);
	tcp = data + (p.l4_off & L4_OFF_MASK);
	if ((void *)(tcp + 1) > data_end)
		return verdict(SW_DROP_TRUNCATED_TCP, XDP_DROP);
	return marked(ctx, &p, xdp_protected(ctx, &p, tcp, ext));
}

/* The XDP program, attached alone (a BPF link). */
SEC("xdp")
int xdp_synwall(struct xdp_md *ctx)
{
	return synwall_xdp(ctx, 0);
}

/* The same, as a program of libxdp's dispatcher (attach = "libxdp"). Since
 * Linux 6.13 (and 6.12.x stable), an extension may move packet data only
 * where the function it replaces does, and the dispatchers of libxdp before
 * 1.5.5 (Debian 12's 1.3.1, the 1.4.3 synwall links) do not: so this one
 * has no call that does. No XDP metadata for TC, which then does the full
 * work, and SYN-ACKs from XDP only of the SYN's own length (Linux's SYN
 * with timestamps, SACK and window scaling has it); the others go to the
 * workers. */
SEC("xdp")
int xdp_synwall_ext(struct xdp_md *ctx)
{
	return synwall_xdp(ctx, 1);
}

/*
 * Kernel-mode hand-off (TC ingress): an ACK with a valid cookie towards a
 * local listener becomes a request socket carrying the options the cookie
 * recorded, and the kernel completes the connection into the listener's
 * accept queue (bpf_sk_assign_tcp_reqsk, Linux 6.9). XDP has already
 * dropped bad cookies; the check is repeated here because TC cannot trust
 * that every frame came through XDP (metadata may be missing).
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

/* The listener a segment meets, or NULL (a socket of its own, or none).
 * On success *skc holds the reference the caller releases. */
static __always_inline struct tcp_sock *listener_of(struct __sk_buff *skb, struct pkt *p,
						    struct bpf_sock **skc)
{
	__u32 tuple_len = p->v6 ? sizeof(p->tuple.ipv6) : sizeof(p->tuple.ipv4);
	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, &p->tuple, tuple_len, BPF_F_CURRENT_NETNS, 0);
	struct tcp_sock *tp;

	if (!sk)
		return NULL;
	if (sk->state != BPF_TCP_LISTEN) {
		bpf_sk_release(sk);
		return NULL;
	}
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp) {
		bpf_sk_release(sk);
		return NULL;
	}
	*skc = sk;
	return tp;
}

/* This connection was handed off a moment ago, in this receive batch most
 * likely: TCP has not made the socket yet. True when the segment should be
 * requeued once, behind the batch, where it finds the new socket (or, if
 * the hand-off failed, comes back here and is checked as itself). */
static __always_inline int should_defer(struct __sk_buff *skb, struct sw_flow *f, __u64 now)
{
	int requeued = skb->tc_index == SW_TC_INDEX_DEFERRED;

	if (requeued)
		skb->tc_index = 0;
	if (!f || requeued || !f->assigned || flow_time(now) - f->assigned >= FLOW_TTL_UNITS ||
	    f->deferrals >= MAX_DEFERRALS)
		return 0;
	f->deferrals++;
	skb->tc_index = SW_TC_INDEX_DEFERRED;
	return 1;
}

/* The request-socket attributes a valid cookie carries (docs/cookie.md §3).
 * The kernel refuses an IPv6 request socket whose MSS is below IPv6's
 * minimum (1280 - 60; its own cookies never encode less), so an IPv6
 * client's smaller MSS is raised to that, which every IPv6 path carries. */
static __always_inline void req_attrs(__u32 cookie, const struct opt_walk *w, int v6,
				      struct bpf_tcp_req_attrs *attrs)
{
	__u32 ws = cookie_wscale(cookie);

	attrs->mss = mss_table[cookie_mss_index(cookie)];
	if (v6 && attrs->mss < DEFAULT_MSS_V6)
		attrs->mss = DEFAULT_MSS_V6;
	if (ws != WSCALE_NONE) {
		attrs->wscale_ok = 1;
		attrs->snd_wscale = ws > WSCALE_MAX ? WSCALE_MAX : ws;
		attrs->rcv_wscale = our_wscale;
	}
	attrs->sack_ok = cookie_sack(cookie);
	attrs->ecn_ok = cookie_ecn(cookie);
	if (w->found == 1) {
		attrs->tstamp_ok = 1;
		attrs->rcv_tsval = w->tsval;
		attrs->rcv_tsecr = w->tsecr;
	}
}

/* Remembers a hand-off, so the segments right behind it are deferred. */
static __always_inline void record_handoff(__u64 tag, struct sw_flow *f, const struct sw_ack *a,
					   __u64 now)
{
	struct sw_flow_set *s;
	__u32 t = flow_time(now);

	if (f) {
		f->assigned = t;
		f->deferrals = 0;
	} else if ((s = flow_set(tag))) {
		int w = flow_victim(s);

		flow_take(&s->way[w & 1], tag, a, t, t);
		flow_used(s, w);
	}
}

__attribute__((noinline)) int sw_handoff(struct __sk_buff *skb, struct pkt *p)
{
	struct bpf_tcp_req_attrs attrs = {};
	struct bpf_sock *skc = NULL;
	struct sw_ack a = {};
	struct tcp_sock *tp;
	struct sw_flow *f;
	struct tcphdr th;
	__u64 now, tag;
	__u32 n;
	int ret;

	if (!p)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, p->l4_off & L4_OFF_MASK, &th, sizeof(th)))
		return TC_ACT_OK;
	if (th.syn || th.rst || !th.ack)
		return TC_ACT_OK;
	tp = listener_of(skb, p, &skc);
	if (!tp || !skc)
		return TC_ACT_OK;

	tag = flow_tag(p);
	f = flow_find(tag);
	now = bpf_ktime_get_coarse_ns();
	if (should_defer(skb, f, now)) {
		bpf_sk_release(skc);
		count(SW_HANDOFF_DEFERRED);
		return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
	}

	n = ack_begin(&th, &a);
	if (n > 0) {
		if (bpf_skb_load_bytes(skb, (p->l4_off & L4_OFF_MASK) + sizeof(th), a.opts.buf,
				       opt_read_len(n)))
			a.opts.found = -1;
		else
			opt_walk_run(&a.opts, n);
	}
	if (sw_ack_verdict(p, &a) != SW_ACK_COOKIE_OK) {
		bpf_sk_release(skc);
		/* Behind an ACK of ours whose hand-off did not complete (a
		 * full accept queue): dropped, so the client resends it; the
		 * listener would answer it with a reset. */
		if (is_follow_up(f, &a, now))
			return verdict(SW_HANDOFF_FOLLOW_UP_DROP, TC_ACT_SHOT);
		/* Anything else XDP let through without our cookie is the
		 * kernel's to judge: XDP passes such ACKs only where the kernel
		 * answered the SYN (peacetime, an allowed source, a queue
		 * without a worker, a stale heartbeat) and may have sent its
		 * own SYN cookie, which it alone can check. */
		return verdict(SW_HANDOFF_NOT_OURS, TC_ACT_OK);
	}

	req_attrs(a.ack - 1, &a.opts, p->v6, &attrs);
	ret = bpf_sk_assign_tcp_reqsk(skb, (struct sock *)tp, &attrs, sizeof(attrs));
	bpf_sk_release(skc);
	if (ret) {
		count(SW_HANDOFF_FAILED);
		return TC_ACT_OK;
	}
	count(SW_HANDOFF_OK);
	record_handoff(tag, f, &a, now);
	return TC_ACT_OK;
}

SEC("tcx/ingress")
int tc_handoff(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	void *meta = (void *)(long)skb->data_meta;
	struct pkt p = {};

	if (!bpf_ksym_exists(bpf_sk_assign_tcp_reqsk))
		return TC_ACT_OK;
	/* XDP already found this segment's kernel socket. */
	if (meta + sizeof(__u32) <= data && *(__u32 *)meta == SW_META_PASS)
		return TC_ACT_OK;
	/* A first fragment is never a hand-off: XDP passes no fragmented
	 * ACK for one. */
	if (parse(data, data_end, &p) >= 0 || p.frag)
		return TC_ACT_OK;
	return sw_handoff(skb, &p);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
