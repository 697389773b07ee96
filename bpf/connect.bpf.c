/* SPDX-License-Identifier: GPL-2.0 */
/* Network deny: cgroup connect4/connect6 programs, attached by the sensor to
 * the cgroup v2 root (services/sensor/connect_guard.py), so they run for
 * every connect() of the node (TCP and UDP, io_uring's too) before any
 * packet is built. A connect an Override selector matches is refused: the
 * program returns 0 and the caller's connect() fails with the rule's errno
 * (bpf_set_retval; the kernel's default for a refusal is EPERM). The same
 * guard, as sendmsg4/sendmsg6 programs, serves the rules of sys_sendto hooks
 * (OCELLUS_CR_SENDMSG): a UDP datagram sent to an address without connect()
 * (sendto, sendmsg, sendmmsg) is refused the same way, before it is built.
 *
 * What a rule matches is its selector's own hook_config slot (the one the
 * generic engine evaluates on syscalls:sys_enter_connect): its filters on
 * the sockaddr arg (address, port, family) and their val_match entries,
 * under the slot's current generation. The slot's action says the mode: in
 * enforce mode OVERRIDE (deny here; the tracepoint slot posts nothing), in
 * monitor mode POST (the tracepoint slot posts, with every arg; this
 * program lets the connect through and posts nothing). A scoped policy
 * (podSelector, containerSelector, TracingPolicyNamespaced, hostSelector,
 * reactions) denies where the slot's scope says, read as proc_stage reads it
 * (lib/proc_select.h): the connecting task's cgroup in the scope's set, or
 * not in it for a scope that takes in the host. The enforcer accepts
 * Override selectors with sockaddr filters only (connect_rules.py): process
 * selectors (matchBinaries, matchPIDs, matchNamespaces) and filters on other
 * args are not evaluated here.
 *
 * Included at the end of process.bpf.c, which declares the maps (and their
 * accessors: hook_config_get, val_match_has, hook_stats_get, scope_has,
 * connect_rule_get), the ring buffer and emit(), and defines the programs:
 * BCC takes programs and rewrites map operations in the main file only. */
#include "lib/policy.h"

#define CONNECT_ITEM (sizeof(struct ocellus_hook_item) + OCELLUS_HOOK_SOCKADDR_MAX)
#define OCELLUS_AF_INET6 10

/* The peer of a connect, as the generic engine sees a sockaddr. */
struct connect_peer {
	__u16 family;        /* the sockaddr's (AF_INET6 for an IPv4-mapped address) */
	__u16 port;          /* host order */
	__u32 alen;          /* 4 (IPv4, or an IPv4-mapped IPv6 address) or 16 */
	__u8  addr[16];
	__u8  sa[OCELLUS_HOOK_SOCKADDR_MAX]; /* the sockaddr, as connect() was given it */
	__u32 salen;
};

/* A denied connect's record: the hook's args in order; the sockaddr arg is
 * the peer, the others (fd, addrlen) are not visible here: fault items. */
struct connect_record {
	struct ocellus_hook_fixed fixed;
	__u8 data[OCELLUS_HOOK_ARGS * CONNECT_ITEM];
};

/* v6: a constant, so that each program reads only the context fields its
 * attach type allows (user_ip4 in connect4, user_ip6 in connect6). */
static __always_inline void connect_peer_read(struct bpf_sock_addr *ctx, struct connect_peer *p,
					      const int v6)
{
	__u32 port = ctx->user_port;  /* network order, in the low 16 bits' bytes */

	p->family = ctx->user_family;
	p->port = bpf_ntohs((__u16)port);
	__builtin_memcpy(&p->sa[2], &port, 2);
	if (!v6) {
		__u32 a = ctx->user_ip4;
		__builtin_memcpy(p->addr, &a, 4);
		p->alen = 4;
		if (ctx->family == OCELLUS_AF_INET6) {
			/* An IPv6 socket's datagram to ::ffff:a.b.c.d: the kernel hands
			 * it to sendmsg4 as IPv4; the caller and the tracepoint saw
			 * the IPv6 sockaddr, so it is reported (and Family matched) as
			 * that. */
			p->family = OCELLUS_AF_INET6;
			p->sa[18] = 0xff;  /* ::ffff: */
			p->sa[19] = 0xff;
			__builtin_memcpy(&p->sa[20], &a, 4);
			p->salen = 28;
		} else {
			__builtin_memcpy(&p->sa[4], &a, 4);
			p->salen = 16;
		}
		p->sa[0] = p->family & 0xff;
		p->sa[1] = p->family >> 8;
		return;
	}
	p->sa[0] = p->family & 0xff;
	p->sa[1] = p->family >> 8;
	__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1];
	__u32 a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
	__builtin_memcpy(&p->sa[8], &a0, 4);
	__builtin_memcpy(&p->sa[12], &a1, 4);
	__builtin_memcpy(&p->sa[16], &a2, 4);
	__builtin_memcpy(&p->sa[20], &a3, 4);
	p->salen = 28;
	/* ::ffff:a.b.c.d is an IPv4 peer on an IPv6 socket: matched as IPv4,
	 * as the generic engine does */
	if (a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff)) {
		__builtin_memcpy(p->addr, &a3, 4);
		p->alen = 4;
		return;
	}
	__builtin_memcpy(p->addr, &a0, 4);
	__builtin_memcpy(p->addr + 4, &a1, 4);
	__builtin_memcpy(p->addr + 8, &a2, 4);
	__builtin_memcpy(p->addr + 12, &a3, 4);
	p->alen = 16;
}

/* One filter of the slot, as generic.bpf.c's val_filter answers it for a
 * sockaddr arg: 1 match, 0 no match, -1 not a filter this program can
 * evaluate (the enforcer refuses those: never reached). */
static __always_inline int connect_filter(struct ocellus_hook_config *c,
					  struct ocellus_hook_filter *f, __u32 fi,
					  struct connect_peer *p)
{
	struct ocellus_val_key k = {};
	__u32 a = f->arg;

	if (a >= OCELLUS_HOOK_ARGS || c->args[a].read != OCELLUS_READ_SOCKADDR)
		return -1;
	k.hook_id = c->hook_id;
	k.selector = c->selector;
	k.filter = fi;
	k.gen = c->gen;
	if (f->op == OCELLUS_FOP_VAL_SET &&
	    (f->part == OCELLUS_PART_FAMILY || f->part == OCELLUS_PART_PORT)) {
		__u64 v = f->part == OCELLUS_PART_FAMILY ? p->family : p->port;
		if (!(f->flags & OCELLUS_FF_UNSIGNED))
			v ^= 1ULL << 63;
		v = __builtin_bswap64(v);
		__builtin_memcpy(k.data, &v, 8);
		k.kind = OCELLUS_VK_INT;
		k.prefixlen = OCELLUS_VAL_KEY_FIXED_BITS + 64;
	} else if (f->op == OCELLUS_FOP_ADDR && f->part == OCELLUS_PART_ADDR) {
		__builtin_memcpy(k.data, p->addr, 16);
		if (p->alen == 4) {
			k.kind = OCELLUS_VK_IP4;
			k.prefixlen = OCELLUS_VAL_KEY_FIXED_BITS + 32;
		} else {
			k.kind = OCELLUS_VK_IP6;
			k.prefixlen = OCELLUS_VAL_KEY_FIXED_BITS + 128;
		}
	} else {
		return -1;
	}
	return val_match_has(&k);
}

/* The slot's filters, ANDed (a selector without filters is refused). */
static __always_inline int connect_slot_matches(struct ocellus_hook_config *c,
						struct connect_peer *p)
{
	if (!c->nfilters)
		return 0;
	for (__u32 fi = 0; fi < OCELLUS_HOOK_FILTERS; fi++) {
		if (fi >= c->nfilters)
			break;
		struct ocellus_hook_filter *f = &c->filters[fi];
		int hit = connect_filter(c, f, fi, p);
		if (hit < 0)
			return 0;
		if (f->flags & OCELLUS_FF_NOT)
			hit = !hit;
		if (!hit)
			return 0;
	}
	return 1;
}

static __always_inline void connect_post(struct ocellus_hook_config *c, __u32 slot,
					 struct connect_peer *p, struct ocellus_hook_stats *st)
{
	struct connect_record rec = {};
	struct ocellus_hook_fixed *fx = &rec.fixed;
	__u32 pos = 0;

	fill_header(&fx->hdr, OCELLUS_OP_HOOK);
	fx->hdr.flags = 0;
	fx->hdr.ppid = 0;  /* the enricher knows the parent */
	fx->hook_id = c->hook_id;
	fx->slot = slot;
	fx->selector = c->selector;
	fx->action = OCELLUS_ACTION_OVERRIDE;
	fx->nargs = c->nargs;
	for (__u32 i = 0; i < OCELLUS_HOOK_ARGS; i++) {
		if (i >= c->nargs)
			break;
		if (pos > sizeof(rec.data) - CONNECT_ITEM)
			break;  /* never: an item takes at most CONNECT_ITEM bytes */
		struct ocellus_hook_item *item = (void *)&rec.data[pos];
		__u32 len = 0;
		item->read = c->args[i].read;
		if (item->read == OCELLUS_READ_SOCKADDR) {
			__builtin_memcpy(item + 1, p->sa, OCELLUS_HOOK_SOCKADDR_MAX);
			len = p->salen == 16 ? 16 : OCELLUS_HOOK_SOCKADDR_MAX;
		} else {
			item->flags = OCELLUS_AF_FAULT;
			fx->hdr.flags |= OCELLUS_F_ARGS_FAULT;
		}
		item->len = len;
		pos += sizeof(*item) + len;
	}
	if (pos > sizeof(rec.data))
		pos = sizeof(rec.data);  /* a bound the verifier can see */
	fx->args_len = pos;
	if (emit(&rec, sizeof(*fx) + pos) == 0 && st)
		st->posted += 1;
}

/* The slot's scope takes in the connecting task, as proc_stage decides it:
 * its cgroup (bpf_get_current_cgroup_id, the task's, as on the tracepoint)
 * is in the scope's set, or, with OCELLUS_PF_NOT, is not. */
static __always_inline int connect_in_scope(struct ocellus_hook_config *c)
{
	if (!(c->proc.scope_flags & OCELLUS_PF_ON))
		return 1;
	return !scope_has(c->proc.scope) != !(c->proc.scope_flags & OCELLUS_PF_NOT);
}

/* 1: let the connect (sendmsg: the datagram) through; 0: refuse it (the
 * caller gets the rule's errno). sendmsg: a constant, the rules of sys_sendto
 * hooks instead of sys_connect's. */
static __always_inline int connect_guard(struct bpf_sock_addr *ctx, const int v6,
					 const int sendmsg)
{
	struct connect_peer p = {};

	connect_peer_read(ctx, &p, v6);
	for (__u32 i = 0; i < OCELLUS_CONNECT_RULES; i++) {
		struct ocellus_connect_rule *r = connect_rule_get(i);
		if (!r || !r->hook_id || !(r->flags & OCELLUS_CR_SENDMSG) != !sendmsg)
			continue;
		/* The rule's selector, in whichever slot of the tracepoint it is now. */
		for (__u32 slot = 0; slot < OCELLUS_HOOK_SLOTS; slot++) {
			struct ocellus_hook_key key = { .tp_id = r->tp_id, .slot = slot };
			struct ocellus_hook_config *c = hook_config_get(&key);
			if (!c || c->hook_id != r->hook_id || c->selector != r->selector)
				continue;
			if (c->action != OCELLUS_ACTION_OVERRIDE || !connect_slot_matches(c, &p) ||
			    !connect_in_scope(c))
				break;  /* monitor mode (POST), not this peer, or out of scope */
			struct ocellus_hook_stats *st = hook_stats_get(c->hook_id);
			if (st)
				st->denied += 1;
			if (r->error < 0 && r->error >= -4095)
				bpf_set_retval(r->error);
			if (r->flags & OCELLUS_CR_POST)
				connect_post(c, slot, &p, st);
			return 0;
		}
	}
	return 1;
}
