/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * docs/cookie.md in BPF C: the cookie's bit layout and its MAC. Shares its
 * test vectors with the Rust implementation (tests/vectors/cookie.json,
 * run through BPF_PROG_TEST_RUN by tests/bpf_cookie.rs).
 *
 * Keys: user space keeps keys[e & 1] = K(e) for the two accepted epochs
 * (BPF has no UTC clock; docs/cookie.md §2), so a cookie's epoch-parity
 * bit picks its key.
 */
#ifndef SYNWALL_COOKIE_H
#define SYNWALL_COOKIE_H

#include <linux/types.h>

#define COOKIE_VERSION 1 /* docs/cookie.md §4: INFO's top byte */

/* The cookie (our ISN), docs/cookie.md §3 and §5:
 *   bits 31..10  22 MAC bits
 *   bit  9       epoch parity
 *   bits 8..6    MSS index into mss_table
 *   bits 5..2    the client's window scale, WSCALE_NONE without the option
 *   bit  1       SACK-permitted
 *   bit  0       ECN */
#define ATTR_BITS 10
#define ATTR_MASK ((1u << ATTR_BITS) - 1)
#define COOKIE_EPOCH_SHIFT 9
#define COOKIE_MSS_SHIFT 6
#define COOKIE_MSS_MASK 0x7
#define COOKIE_WSCALE_SHIFT 2
#define COOKIE_WSCALE_MASK 0xf
#define COOKIE_SACK_BIT (1u << 1)
#define COOKIE_ECN_BIT (1u << 0)
#define ISN_MAC_MASK 0x3fffffULL /* the 22 MAC bits of H */
#define INFO_TS_BIT (1u << ATTR_BITS) /* INFO's T: timestamps negotiated */
#define WSCALE_NONE 15
#define WSCALE_MAX 14 /* RFC 7323 §2.3 */

static __always_inline __u32 cookie_epoch_slot(__u32 cookie)
{
	return (cookie >> COOKIE_EPOCH_SHIFT) & 1;
}

static __always_inline __u32 cookie_mss_index(__u32 cookie)
{
	return (cookie >> COOKIE_MSS_SHIFT) & COOKIE_MSS_MASK;
}

/* The client's window-scale shift, or WSCALE_NONE. */
static __always_inline __u32 cookie_wscale(__u32 cookie)
{
	return (cookie >> COOKIE_WSCALE_SHIFT) & COOKIE_WSCALE_MASK;
}

static __always_inline int cookie_sack(__u32 cookie)
{
	return !!(cookie & COOKIE_SACK_BIT);
}

static __always_inline int cookie_ecn(__u32 cookie)
{
	return !!(cookie & COOKIE_ECN_BIT);
}

/* One epoch key: the two little-endian SipHash key words. */
struct sw_key {
	__u64 k0;
	__u64 k1;
};

/* SipHash-2-4 initialisation constants ("somepseudorandomlygeneratedbytes"). */
#define SIP_C0 0x736f6d6570736575ULL
#define SIP_C1 0x646f72616e646f6dULL
#define SIP_C2 0x6c7967656e657261ULL
#define SIP_C3 0x7465646279746573ULL

#define ROTL(x, b) (__u64)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
	do {                                                                                       \
		v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                          \
		v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                             \
		v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                             \
		v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                          \
	} while (0)

/* SipHash-2-4 (64-bit output) of `len` bytes held little-endian in
 * words[], where len is 20 (IPv4) or 44 (IPv6): 2 or 5 full words, then a
 * 4-byte tail. */
static __always_inline __u64 siphash24(const struct sw_key *k, const __u64 *w, int full, __u32 tail,
				       __u64 len)
{
	__u64 v0 = k->k0 ^ SIP_C0;
	__u64 v1 = k->k1 ^ SIP_C1;
	__u64 v2 = k->k0 ^ SIP_C2;
	__u64 v3 = k->k1 ^ SIP_C3;
	__u64 b = (len << 56) | tail;
	int i;

#pragma unroll
	for (i = 0; i < 5; i++) {
		if (i < full) {
			v3 ^= w[i];
			SIPROUND;
			SIPROUND;
			v0 ^= w[i];
		}
	}
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* Message bytes read as SipHash reads them: little-endian, whatever the
 * host's byte order. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define LE32(v) (v)
#define LE64(v) (v)
#else
#define LE32(v) __builtin_bswap32(v)
#define LE64(v) __builtin_bswap64(v)
#endif

static __always_inline __u32 le32_at(const __u8 *p)
{
	__u32 v;

	__builtin_memcpy(&v, p, 4);
	return LE32(v);
}

static __always_inline __u64 le64_at(const __u8 *p)
{
	__u64 v;

	__builtin_memcpy(&v, p, 8);
	return LE64(v);
}

/* The connection a cookie belongs to, as docs/cookie.md §4's message M
 * needs it: addresses and ports in network order as on the wire. */
struct cookie_flow {
	const __u8 *saddr; /* the client's */
	const __u8 *daddr; /* ours */
	int addr_len;	   /* 4 or 16 */
	__be16 sport;
	__be16 dport;
};

/* H = SipHash-2-4-64(K, M) for the client's ISN and the 10 attribute bits
 * (docs/cookie.md §4). M is built as SipHash's 64-bit words directly:
 * IPv4 client(4) server(4) | ports(4) ISN(4) | INFO(4), 20 bytes; IPv6
 * client(16) server(16) | ports(4) ISN(4) | INFO(4), 44 bytes. ISN and
 * INFO are big-endian in M, so read little-endian they are byte-swapped. */
static __always_inline __u64 cookie_mac(const struct sw_key *key, const struct cookie_flow *fl,
					__u32 client_isn, __u32 attrs, int has_ts)
{
	__u32 info = (COOKIE_VERSION << 24) | (has_ts ? INFO_TS_BIT : 0) | (attrs & ATTR_MASK);
	__u8 ports[4];
	__u64 w[5] = {}, tail_word;

	__builtin_memcpy(ports, &fl->sport, 2);
	__builtin_memcpy(ports + 2, &fl->dport, 2);
	tail_word = (__u64)le32_at(ports) | (__u64)__builtin_bswap32(client_isn) << 32;
	if (fl->addr_len == 4) {
		w[0] = (__u64)le32_at(fl->saddr) | (__u64)le32_at(fl->daddr) << 32;
		w[1] = tail_word;
		return siphash24(key, w, 2, __builtin_bswap32(info), 20);
	}
	w[0] = le64_at(fl->saddr);
	w[1] = le64_at(fl->saddr + 8);
	w[2] = le64_at(fl->daddr);
	w[3] = le64_at(fl->daddr + 8);
	w[4] = tail_word;
	return siphash24(key, w, 5, __builtin_bswap32(info), 44);
}

/*
 * Checks an ACK's cookie (docs/cookie.md §5): client_isn = seq - 1,
 * cookie = ack_seq - 1 (host order); has_ts/tsecr from the ACK's
 * timestamps option. Returns 1 if valid.
 */
static __always_inline int cookie_check(const struct sw_key *key, const struct cookie_flow *fl,
					__u32 client_isn, __u32 cookie, int has_ts, __u32 tsecr)
{
	__u64 h = cookie_mac(key, fl, client_isn, cookie & ATTR_MASK, has_ts);

	if ((cookie >> ATTR_BITS) != (h & ISN_MAC_MASK))
		return 0;
	if (has_ts && tsecr != (__u32)(h >> 32))
		return 0;
	return 1;
}

#endif
