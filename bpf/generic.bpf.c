/* SPDX-License-Identifier: GPL-2.0 */
/* The generic hook engine: ONE program, ocellus_generic_tp, run at every
 * tracepoint a policy hooks and configured by maps only (layouts in
 * lib/policy.h): attached itself, or tail-called by its entry
 * ocellus_generic_args_tp where the record holds a syscall's first args
 * (process.bpf.c). Adding a hook attaches one of the two to one more
 * tracepoint; changing a selector rewrites map entries: nothing is ever
 * compiled or loaded again, and the program ids stay the same.
 *
 * Per event: the tracepoint's string prefilter (event_start) may rule it
 * out at once; else the tracepoint (its attach cookie) picks, through
 * hook_slots, the slots that have a config (up to OCELLUS_HOOK_SLOTS);
 * each reads its args out of the tracepoint record at the offsets
 * tracefs gave, ANDs its filters, and the first matching slot of a hook
 * decides (selectors are ORed, first match wins, as in Tetragon). Slots of
 * other hooks on the same tracepoint are evaluated independently.
 *
 * Included at the end of process.bpf.c, whose ring buffer (`events`),
 * counters, fill_header() and emit() it shares, and which declares its
 * maps and their accessors (hook_config_get, ...): BCC rewrites map
 * operations in the main file only. */
#include "lib/policy.h"
#include "lib/hook_scratch.h"

static __always_inline __s64 read_int(void *src, __u8 size, int is_signed)
{
	switch (size) {
	case 1: { __u8 v = 0; bpf_probe_read_kernel(&v, 1, src); return is_signed ? (__s8)v : v; }
	case 2: { __u16 v = 0; bpf_probe_read_kernel(&v, 2, src); return is_signed ? (__s16)v : v; }
	/* Both arms __s64: `c ? (__s32)v : v` is unsigned int, and -100 would read 4294967196. */
	case 4: { __u32 v = 0; bpf_probe_read_kernel(&v, 4, src); return is_signed ? (__s64)(__s32)v : (__s64)v; }
	default: { __s64 v = 0; bpf_probe_read_kernel(&v, 8, src); return v; }
	}
}

/* Which of s->direct holds the 8-byte field `a` (OCELLUS_DIRECT_WORDS: none,
 * or not copied for this event: read it from the record). */
static __always_inline __u32 direct_word(struct hook_scratch *s, struct ocellus_hook_arg *a)
{
	__u32 rel = (__u32)a->offset - OCELLUS_DIRECT_FROM;  /* below: wraps, too far */

	if (!*(volatile __u32 *)&s->direct_ok || a->size != 8 || (rel & 7) ||
	    rel >= 8 * OCELLUS_DIRECT_WORDS)
		return OCELLUS_DIRECT_WORDS;
	return rel >> 3;
}

/* A user pointer field of the record. */
static __always_inline void *record_ptr(struct hook_scratch *s, struct ocellus_hook_arg *a,
					void *src)
{
	__u32 word = direct_word(s, a);
	void *ptr = NULL;

	if (word < OCELLUS_DIRECT_WORDS)
		return (void *)s->direct[word];
	bpf_probe_read_kernel(&ptr, sizeof(ptr), src);
	return ptr;
}

/* A string read's result: its length without the NUL, or a fault. */
static __always_inline void string_read(struct hook_scratch *s, long n)
{
	s->aflags = n >= OCELLUS_HOOK_STR_MAX ? OCELLUS_AF_TRUNCATED : 0;
	if (n <= 0) {
		s->aflags |= n < 0 ? OCELLUS_AF_FAULT : 0;
		n = 1;
	}
	s->alen = n - 1;
}

/* An arg into s->arg[i] (an integer: into s->ival[i]), unless this event
 * read the same field the same way there already: a hook's selectors are
 * slots sharing its args, and each slot reads only what its filters and, on
 * a match, its record need. Each read kind leaves its result in map memory
 * (alen, aflags) and the common tail reads it back: then every kind's path
 * ends with the same registers and the verifier merges them (with the
 * results in registers, each kind is a state of its own: 6 kinds ^ 6 args). */
static __always_inline void load_arg(struct hook_scratch *s, void *ctx,
				     struct ocellus_hook_arg *a, __u32 i)
{
	__u32 k = i & HOOK_ARG_MASK;
	__u32 tag = HOOK_ARG_TAG(a);
	char *out = s->arg[k].key.data;
	void *src = ctx + a->offset;  /* u16: inside the tracepoint record */
	void *ptr = NULL;

	__u32 word = direct_word(s, a);

	if (a->read == OCELLUS_READ_INT || a->read == OCELLUS_READ_UINT) {
		/* a helper call cheaper than the cache's checks */
		if (word < OCELLUS_DIRECT_WORDS)
			s->ival[k] = s->direct[word];  /* 8 bytes: no extension */
		else
			s->ival[k] = read_int(src, a->size, a->read == OCELLUS_READ_INT);
		return;
	}
	if ((s->loaded & (1u << k)) && s->arg_tag[k] == tag)
		return;
	s->alen = 0;
	s->aflags = OCELLUS_AF_FAULT;
	switch (a->read) {
	case OCELLUS_READ_USER_STRING:
		string_read(s, bpf_probe_read_user_str(out, OCELLUS_HOOK_STR_MAX, record_ptr(s, a, src)));
		break;
	case OCELLUS_READ_KERNEL_STRING: {
		__u32 loc = 0;
		bpf_probe_read_kernel(&loc, sizeof(loc), src);
		string_read(s, bpf_probe_read_kernel_str(out, OCELLUS_HOOK_STR_MAX,
							 ctx + (loc & 0xFFFF)));
		break;
	}
	case OCELLUS_READ_SOCKADDR:
		/* sockaddr_in6 is 28 bytes, sockaddr_in 16: a 16-byte one at the
		 * end of a page would fault at 28, so fall back. */
		ptr = record_ptr(s, a, src);
		if (bpf_probe_read_user(out, OCELLUS_HOOK_SOCKADDR_MAX, ptr) == 0) {
			s->alen = OCELLUS_HOOK_SOCKADDR_MAX;
			s->aflags = 0;
		} else if (bpf_probe_read_user(out, 16, ptr) == 0) {
			s->alen = 16;
			s->aflags = 0;
		}
		break;
	case OCELLUS_READ_ADDRESS:
		if (a->size == 16 && bpf_probe_read_kernel(out, 16, src) == 0) {
			s->alen = 16;
			s->aflags = 0;
		} else if (a->size == 4 && bpf_probe_read_kernel(out, 4, src) == 0) {
			s->alen = 4;
			s->aflags = 0;
		}
		break;
	}
	s->arg_len[k] = *(volatile __u32 *)&s->alen & 255;  /* a string: at most 255 */
	s->arg_flags[k] = *(volatile __u32 *)&s->aflags;
	s->arg_tag[k] = tag;
	s->loaded |= 1u << k;
}

/* One arg as an item at rec.data[s->pos] (read if no filter needed it);
 * advances s->pos past it. Lengths and flags come back from map memory,
 * the same registers whatever the kind (see load_arg). */
static __always_inline void write_arg(struct hook_scratch *s, void *ctx,
				      struct ocellus_hook_arg *a, __u32 i)
{
	__u32 k = i & HOOK_ARG_MASK;
	__u32 pos = s->pos;
	struct ocellus_hook_item *item = (void *)&s->rec.data[pos & HOOK_DATA_MASK];
	__u32 at = (pos + sizeof(*item)) & HOOK_DATA_MASK;
	char *out = &s->rec.data[at];

	load_arg(s, ctx, a, i);
	if (a->read == OCELLUS_READ_INT || a->read == OCELLUS_READ_UINT) {
		__builtin_memcpy(out, &s->ival[k], sizeof(__s64));
		s->alen = sizeof(__s64);
		s->aflags = 0;
	} else {
		s->alen = s->arg_len[k];
		s->aflags = s->arg_flags[k];
	}
	__u32 n = *(volatile __u32 *)&s->alen & 255;
	__u8 flags = *(volatile __u32 *)&s->aflags;
	if (a->read != OCELLUS_READ_INT && a->read != OCELLUS_READ_UINT)
		bpf_probe_read_kernel(out, n, s->arg[k].key.data);
	item->read = *(volatile __u8 *)&a->read;
	item->flags = flags;
	item->len = n;
	if (flags & OCELLUS_AF_TRUNCATED)
		s->rec.fixed.hdr.flags |= OCELLUS_F_ARGS_TRUNCATED;
	if (flags & OCELLUS_AF_FAULT)
		s->rec.fixed.hdr.flags |= OCELLUS_F_ARGS_FAULT;
	s->pos = pos + sizeof(*item) + n;
	/* Its first bytes are part of the rate_limit key (used with rate_ns
	 * only). Last, with the length read back from map memory: bounding the
	 * live `n` split the verifier's states at every arg (1M+ instructions). */
	__u32 m = *(volatile __u16 *)&item->len;
	if (m > OCELLUS_RATE_ARG_BYTES)
		m = OCELLUS_RATE_ARG_BYTES;
	bpf_probe_read_kernel(&s->rkey.data[k * OCELLUS_RATE_ARG_BYTES], m, out);
}

static __always_inline int cmp_one(__u8 op, int is_unsigned, __s64 v, __s64 x)
{
	switch (op) {
	case OCELLUS_FOP_EQUAL:
		return v == x;
	case OCELLUS_FOP_MASK:
		return (v & x) != 0;
	case OCELLUS_FOP_GT:
		return is_unsigned ? (__u64)v > (__u64)x : v > x;
	case OCELLUS_FOP_LT:
		return is_unsigned ? (__u64)v < (__u64)x : v < x;
	}
	return 0;
}

static __always_inline int int_filter(struct ocellus_hook_filter *f, __s64 v)
{
	int uns = f->flags & OCELLUS_FF_UNSIGNED;

	if (f->op == OCELLUS_FOP_RANGE) {
		for (int j = 0; j + 1 < OCELLUS_HOOK_VALUES; j += 2) {
			if (j + 1 >= f->nvals)
				break;
			__s64 lo = f->vals[j], hi = f->vals[j + 1];
			if (uns ? ((__u64)lo <= (__u64)v && (__u64)v <= (__u64)hi) : (lo <= v && v <= hi))
				return 1;
		}
		return 0;
	}
	for (int j = 0; j < OCELLUS_HOOK_VALUES; j++) {
		if (j >= f->nvals)
			break;
		if (cmp_one(f->op, uns, v, f->vals[j]))
			return 1;
	}
	return 0;
}

/* Postfix: for each length its values come in (f->vals, at most
 * OCELLUS_HOOK_VALUES), the arg's last that many bytes are looked up under
 * reverse = that length. The lengths keep the lookup exact: an LPM trie
 * answers "starts with", and the last 5 bytes of a path start with any
 * 1-byte value. A helper copies the bytes: a loop reversing them, inside
 * the slot and filter loops, blew the verifier's 1M-instruction budget.
 * A string cut at the read limit has no known end: it matches no Postfix
 * (NotPostfix matches). */
static __always_inline int str_postfix(struct hook_scratch *s, struct ocellus_hook_filter *f,
				       __u32 a, __u32 n)
{
	struct ocellus_str_key *k = &s->key;

	if (s->arg_flags[a] & (OCELLUS_AF_TRUNCATED | OCELLUS_AF_FAULT))
		return 0;
	for (__u32 j = 0; j < OCELLUS_HOOK_VALUES; j++) {
		if (j >= f->nvals)
			break;
		__u32 len = f->vals[j] & 255;  /* 1 .. OCELLUS_STR_KEY_DATA, user space says */
		if (len > n || len > OCELLUS_STR_KEY_DATA || len == 0)
			continue;
		k->reverse = len;
		k->prefixlen = OCELLUS_STR_KEY_FIXED_BITS + 8 * len;
		bpf_probe_read_kernel(k->data, len & 255, &s->arg[a].key.data[(n - len) & 255]);
		if (str_match_has(k))
			return 1;
	}
	return 0;
}

/* The key's data is a string of n bytes and its NUL (cut at the key's
 * room): what Equal entries (value + NUL) and Prefix entries (value) are
 * looked up with. The caller wrote the rest of the fixed part. */
static __always_inline void str_key_whole(struct ocellus_str_key *k, __u32 n)
{
	__u32 bytes = n + 1;

	if (bytes > OCELLUS_STR_KEY_DATA)
		bytes = OCELLUS_STR_KEY_DATA;
	k->reverse = 0;
	k->prefixlen = OCELLUS_STR_KEY_FIXED_BITS + 8 * bytes;
}

/* String operators are answered by the str_match LPM trie, looked up with
 * the arg plus its NUL, so that an Equal entry (stored with its NUL)
 * matches only the whole string and a Prefix entry any string it starts;
 * Postfix by str_postfix. The key is the arg's own buffer (load_arg read
 * the string into its data, NUL included; a failed read left zeros):
 * only its fixed part is written here. */
static __always_inline int str_filter(struct hook_scratch *s, struct ocellus_hook_config *c,
				      struct ocellus_hook_filter *f, __u32 fi)
{
	__u32 a = f->arg & HOOK_ARG_MASK;
	struct ocellus_str_key *k = f->op == OCELLUS_FOP_STR_POSTFIX ? &s->key : &s->arg[a].key;
	__u32 n = s->arg_len[a];

	k->hook_id = c->hook_id;
	k->selector = c->selector;
	k->filter = fi;
	k->gen = c->gen;
	if (f->op == OCELLUS_FOP_STR_POSTFIX)
		return str_postfix(s, f, a, n);
	str_key_whole(k, n);
	return str_match_has(k);
}

/* Set and CIDR operators (ports, protocols, families, InMap, addresses)
 * are answered by the val_match LPM trie: one lookup whatever the number
 * of values, ranges written as the prefixes that cover them. The part of
 * the arg looked at: the integer as read, an address field, or a field of
 * a struct sockaddr (family at 0, port at 2, IPv4 at 4, IPv6 at 8). */
static __always_inline int val_filter(struct hook_scratch *s, struct ocellus_hook_config *c,
				      struct ocellus_hook_filter *f, __u32 fi)
{
	struct ocellus_val_key *k = &s->vkey;
	__u32 a = f->arg & HOOK_ARG_MASK;
	__u8 *src = (__u8 *)s->arg[a].key.data;
	__u32 n = s->arg_len[a];
	__u64 v = s->ival[a];
	__u16 family = 0, port = 0;

	k->hook_id = c->hook_id;
	k->selector = c->selector;
	k->filter = fi;
	k->gen = c->gen;
	__builtin_memset(k->data, 0, sizeof(k->data));
	if (f->part != OCELLUS_PART_VALUE) {
		if (n < 4)
			return 0;  /* not read, or no family and port */
		family = src[0] | (__u16)src[1] << 8;
		port = (__u16)src[2] << 8 | src[3];  /* network order */
	}
	if (f->part == OCELLUS_PART_FAMILY)
		v = family;
	else if (f->part == OCELLUS_PART_PORT)
		v = port;
	if (f->op == OCELLUS_FOP_VAL_SET) {
		if (!(f->flags & OCELLUS_FF_UNSIGNED))
			v ^= 1ULL << 63;  /* signed order as unsigned: ranges stay contiguous */
		v = __builtin_bswap64(v);
		__builtin_memcpy(k->data, &v, 8);
		k->kind = OCELLUS_VK_INT;
		k->prefixlen = OCELLUS_VAL_KEY_FIXED_BITS + 64;
		return val_match_has(k);
	}
	/* OCELLUS_FOP_ADDR: where the address is, and how long. */
	if (f->part == OCELLUS_PART_ADDR) {
		if (family == 2 && n >= 8) {            /* AF_INET: sin_addr */
			src += 4;
			n = 4;
		} else if (family == 10 && n >= 24) {   /* AF_INET6: sin6_addr */
			src += 8;
			n = 16;
		} else {
			return 0;
		}
	}
	if (n == 16) {
		__u64 hi, lo;
		__builtin_memcpy(&hi, src, 8);
		__builtin_memcpy(&lo, src + 8, 8);
		/* ::ffff:a.b.c.d is an IPv4 peer on an IPv6 socket: match it as IPv4 */
		if (hi == 0 && (__u32)lo == 0xffff0000) {
			src += 12;
			n = 4;
		} else {
			__builtin_memcpy(k->data, &hi, 8);
			__builtin_memcpy(k->data + 8, &lo, 8);
			k->kind = OCELLUS_VK_IP6;
			k->prefixlen = OCELLUS_VAL_KEY_FIXED_BITS + 128;
			return val_match_has(k);
		}
	}
	if (n != 4)
		return 0;
	__builtin_memcpy(k->data, src, 4);
	k->kind = OCELLUS_VK_IP4;
	k->prefixlen = OCELLUS_VAL_KEY_FIXED_BITS + 32;
	return val_match_has(k);
}

/* The filters of a slot, ANDed, each reading the arg it looks at (once per
 * event: load_arg). Each filter's result goes through map memory (s->hit),
 * for the same reason as load_arg's. */
static __always_inline int slot_matches(void *ctx, struct hook_scratch *s,
					struct ocellus_hook_config *c)
{
	for (__u32 fi = 0; fi < OCELLUS_HOOK_FILTERS; fi++) {
		if (fi >= c->nfilters)
			break;
		struct ocellus_hook_filter *f = &c->filters[fi];
		load_arg(s, ctx, &c->args[f->arg & HOOK_ARG_MASK], f->arg);
		/* a matchReturnArgs filter's map entries are apart from matchArgs' */
		__u32 fk = fi | (c->flags & OCELLUS_HF_EXIT ? OCELLUS_FILTER_RETURN : 0);
		if (f->op >= OCELLUS_FOP_VAL_SET)
			s->hit = val_filter(s, c, f, fk);
		else if (f->op >= OCELLUS_FOP_STR_EQUAL)
			s->hit = str_filter(s, c, f, fk);
		else
			s->hit = int_filter(f, s->ival[f->arg & HOOK_ARG_MASK]);
		__u32 hit = *(volatile __u32 *)&s->hit;
		if (f->flags & OCELLUS_FF_NOT)
			hit = !hit;
		if (!hit)
			return 0;
	}
	return 1;
}

/* Post rateLimit: whether this record repeats one posted less than
 * c->rate_ns ago by the same thread, process or anyone (rate_scope), for the
 * same hook, selector and args (s->rkey.data, filled by write_arg). If not,
 * this record is the one the window starts with. */
static __always_inline int rate_limited(struct hook_scratch *s, struct ocellus_hook_config *c)
{
	struct ocellus_rate_key *k = &s->rkey;
	__u64 now = bpf_ktime_get_ns();
	__u64 id = bpf_get_current_pid_tgid();
	__u8 scope = c->rate_scope;

	k->hook_id = c->hook_id;
	k->selector = c->selector;
	k->scope = scope;
	k->_pad = 0;
	k->id = scope == OCELLUS_RATE_THREAD ? (__u32)id : scope == OCELLUS_RATE_PROCESS ? id >> 32 : 0;
	__u64 *last = rate_limit_get(k);
	if (last && now - *last < c->rate_ns)
		return 1;
	rate_limit_set(k, now);
	return 0;
}

/* Evaluates the slot's filters (reading the args they look at); on a match
 * posts (reading the rest of its args) and signals as configured. Returns
 * 1 on a match. */
static __always_inline int run_slot(void *ctx, struct hook_scratch *s,
				    struct ocellus_hook_config *c, __u32 slot)
{
	/* Process selectors first, before any arg is read: their answers are
	 * from proc_stage (lib/proc_select.h). */
	if (!(*(volatile __u32 *)&s->proc.ok & (1u << slot)))
		return 0;
	if (!slot_matches(ctx, s, c))
		return 0;

	__u32 hook_id = c->hook_id;
	struct ocellus_hook_stats *st = hook_stats_get(hook_id);
	if (st) {
		st->matched += 1;
		if (c->flags & OCELLUS_HF_MONITORED)
			st->monitored += 1;
	}
	if (c->flags & OCELLUS_HF_POST) {
		struct ocellus_hook_fixed *fx = &s->rec.fixed;
		s->pos = 0;
		fx->hdr.flags = 0;
		__builtin_memset(s->rkey.data, 0, sizeof(s->rkey.data));
		for (__u32 i = 0; i < OCELLUS_HOOK_ARGS; i++) {
			if (i >= c->nargs)
				break;
			write_arg(s, ctx, &c->args[i], i);
		}
		__u16 flags = fx->hdr.flags;
		fill_header(&fx->hdr, OCELLUS_OP_HOOK);
		fx->hdr.flags = flags;
		fx->hdr.ppid = 0;  /* the enricher knows the parent */
		fx->hook_id = hook_id;
		fx->slot = slot;
		fx->selector = c->selector;
		fx->action = c->action;
		fx->nargs = c->nargs;
		fx->kflags = 0;
		__u32 len = s->pos & HOOK_DATA_MASK;
		fx->args_len = len;
		if (c->rate_ns && rate_limited(s, c)) {
			if (st)
				st->ratelimited += 1;
		} else if (c->flags & OCELLUS_HF_RETURN)
			hook_pending_keep(s, slot);  /* posted by sys_exit_* (hook_return.bpf.c) */
		else if (emit(&s->rec, sizeof(*fx) + len) == 0 && st)
			st->posted += 1;
	}
	/* After the record: it must say what happened even to a process that
	 * never runs again. From sys_enter_* the process dies before the
	 * syscall returns to user space, but the syscall itself completes. */
	if (c->signal && bpf_send_signal(c->signal) == 0 && st)
		st->signalled += 1;
	return 1;
}

/* Counts one `filtered` per hook none of whose slots on this event
 * matched: `seen` are the slots evaluated (their hook ids in s->slot_hook),
 * `hits` those that matched. Most tracepoints carry one hook: one pass. */
static __always_inline void count_filtered(struct hook_scratch *s, __u32 seen, __u32 hits)
{
	__u32 rest = seen;

	for (__u32 slot = 0; slot < OCELLUS_HOOK_SLOTS; slot++) {
		if (!(rest & (1u << slot)))
			continue;
		__u32 id = s->slot_hook[slot], group = 0;
		for (__u32 j = 0; j < OCELLUS_HOOK_SLOTS; j++)
			if ((rest & (1u << j)) && s->slot_hook[j] == id)
				group |= 1u << j;
		rest &= ~group;
		if (group & hits)
			continue;
		struct ocellus_hook_stats *st = hook_stats_get(id);
		if (st)
			st->filtered += 1;
	}
}

/* Whether the tracepoint's string prefilter (struct ocellus_prefilter)
 * rules the event out: its string is in none of the values any slot
 * there requires. The read stays in s->arg[pre.arg] for the slots that
 * read the same field when it does not. */
static __always_inline int prefilter_rejects(struct hook_scratch *s, void *ctx, __u32 tp_id)
{
	union {
		__u64 word;
		struct ocellus_prefilter f;
	} pre = { .word = hook_prefilter_word(tp_id) };

	if (!pre.f.on)
		return 0;
	if (pre.f.read != OCELLUS_READ_USER_STRING && pre.f.read != OCELLUS_READ_KERNEL_STRING)
		return 0;
	struct ocellus_hook_arg a = { .offset = pre.f.offset, .size = pre.f.size, .read = pre.f.read };
	__u32 i = pre.f.arg & HOOK_ARG_MASK;
	struct ocellus_str_key *k = &s->arg[i].key;
	__u32 w = direct_word(s, &a);
	__u32 len;
	if (a.read == OCELLUS_READ_USER_STRING && w < OCELLUS_DIRECT_WORDS) {
		/* The common case (a path arg of a syscall), read without load_arg's
		 * bookkeeping: most events end here. Not kept as arg i's read: a
		 * slot that needs it reads it again, for the rare event that passes. */
		long n = bpf_probe_read_user_str(k->data, OCELLUS_HOOK_STR_MAX, (void *)s->direct[w]);
		len = n > 0 ? n - 1 : 0;  /* as string_read(): a fault reads as "" */
	} else {
		load_arg(s, ctx, &a, i);
		len = s->arg_len[i];
	}
	k->hook_id = tp_id;
	k->selector = 0;
	k->filter = 0;
	k->gen = pre.f.gen;
	str_key_whole(k, len);
	if (str_prefilter_has(k))
		return 0;
	/* A miss counts only under the word it was looked up under: one
	 * rewritten meanwhile (the old generation's values deleted while this
	 * event was held up) says nothing, and the slots decide. `seq` tells
	 * a rewrite that came back to the same generation. */
	return hook_prefilter_word(tp_id) == pre.word;
}

/* The slots of the tracepoint, in order (proc_stage has run): s->seen and
 * s->hits say which were evaluated and which matched. */
static __always_inline void run_slots(void *ctx, struct hook_scratch *s, __u32 tp_id,
				      __u32 used, __u32 proc)
{
	for (__u32 slot = 0; slot < OCELLUS_HOOK_SLOTS; slot++) {
		/* Written on every path: a key written on some only splits the
		 * verifier's states at the loop head. */
		struct ocellus_hook_key key = { .tp_id = tp_id, .slot = slot };
		__u32 bit = 1u << slot;
		if (!(used & bit))
			continue;
		/* A slot whose process filters (or scope) did not match needs no
		 * config lookup: proc_stage found its hook id (0: no config). */
		if (!(*(volatile __u32 *)&s->proc.ok & bit)) {
			if (s->slot_hook[slot])
				s->seen |= bit;
			continue;
		}
		struct ocellus_hook_config *c = hook_config_get(&key);
		if (!c)
			continue;
		/* Process filters proc_stage did not evaluate: hook_slots behind
		 * the config for a moment, or the slot rewritten since proc_stage
		 * read it (another hook, or a new generation). Not a match rather
		 * than run unfiltered. */
		__u32 id = c->hook_id;
		int skip = (proc & bit)
			? (s->slot_hook[slot] != id || s->slot_gen[slot] != c->gen)
			: proc_filtered(&c->proc);
		s->slot_hook[slot] = id;
		s->seen |= bit;
		if (skip)
			continue;
		__u32 hits = *(volatile __u32 *)&s->hits;
		int done = 0;
		if (hits)
			for (__u32 j = 0; j < OCELLUS_HOOK_SLOTS; j++)
				if (j < slot && (hits & (1u << j)) && s->slot_hook[j] == id)
					done = 1;
		if (done || run_slot(ctx, s, c, slot))
			s->hits |= bit;
	}
}

/* The start of an event, for the engine and its entry alike: the
 * tracepoint's slots, or NULL when nothing more is to be done (no slot, or
 * the prefilter ruled the event out and counted it). */
static __always_inline struct ocellus_tp_slots *event_start(struct hook_scratch *s, void *ctx,
							    __u32 tp_id)
{
	/* The slots this tracepoint has: most events of a hooked syscall are
	 * filtered, and a config lookup per empty slot was a third of it. */
	struct ocellus_tp_slots *ts = hook_slots_get(tp_id);

	if (!ts || !ts->used)
		return NULL;
	s->loaded = 0;  /* no arg read yet for this event */
	if (!prefilter_rejects(s, ctx, tp_id))
		return ts;
	/* No slot can match: a `filtered` for each hook there. */
	for (__u32 i = 0; i < OCELLUS_HOOK_SLOTS; i++) {
		__u32 id = ts->hooks[i];
		if (!id)
			break;
		struct ocellus_hook_stats *st = hook_stats_get(id);
		if (st)
			st->filtered += 1;
	}
	return NULL;
}

/* One event of the engine. */
static __always_inline void generic_event(void *ctx, struct hook_scratch *s)
{
	struct ocellus_tp_slots *ts;

	/* Which tracepoint fired: the one ocellus_generic_args_tp ran for (it
	 * copied the record's first args and ran event_start), or the cookie
	 * user space attached this program with (its tracefs id). common_type
	 * cannot be read: the kernel stores the pt_regs pointer over the first
	 * 8 bytes of the context. */
	__u32 tp_id = s->entry_tp;
	s->entry_tp = 0;
	if (tp_id) {
		ts = hook_slots_get(tp_id);
	} else {
		tp_id = bpf_get_attach_cookie(ctx);
		s->direct_ok = 0;
		ts = event_start(s, ctx, tp_id);
	}
	if (!ts)
		return;
	__u32 used = ts->used, proc = ts->proc;
	/* Bit per slot: evaluated (its hook id in s->slot_hook), and matched.
	 * A hook's later slots are skipped once one matched (first match
	 * wins); a hook none of whose slots matched counts one `filtered`.
	 * In map memory: as registers, each combination of bits was a state
	 * of its own to the verifier (past its 1M-instruction limit). */
	s->seen = 0;
	s->hits = 0;
	proc_stage(s, tp_id, used, proc);
	run_slots(ctx, s, tp_id, used, proc);
	__u32 seen = *(volatile __u32 *)&s->seen, hits = *(volatile __u32 *)&s->hits;
	if (seen & ~hits)
		count_filtered(s, seen, hits);
}

/* The body of ocellus_generic_tp (defined in process.bpf.c: BCC takes
 * programs from the main file only). */
static __always_inline int generic_tp(void *ctx)
{
	struct hook_scratch *s = hook_scratch_get();

	if (!s)
		return 0;
	generic_event(ctx, s);
	s->direct_ok = 0;  /* the copied words are this event's only */
	return 0;
}
