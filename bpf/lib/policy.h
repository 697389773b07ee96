/* SPDX-License-Identifier: Apache-2.0 */
/* The generic hook engine's boundary: the maps user space writes to
 * configure a tracepoint hook (hook_config, str_match), the counters it
 * reads (hook_stats) and the record the program emits (OCELLUS_OP_HOOK).
 * One definition, mirrored by services/sensor/hook_records.py and checked
 * by tests/sensor/test_layout.py. Every enum value below is wire format
 * (the enforcer writes these maps from another process): never renumber,
 * never reuse. */
#ifndef OCELLUS_POLICY_H
#define OCELLUS_POLICY_H

#include "events.h"

#define OCELLUS_HOOK_SLOTS 4        /* (hook, selector) pairs per tracepoint */
#define OCELLUS_HOOK_ARGS 6         /* a syscall has at most 6 arguments */
#define OCELLUS_HOOK_FILTERS 5      /* matchArgs per selector (as Tetragon) */
#define OCELLUS_HOOK_VALUES 8       /* integer values per filter (InRange: 4 pairs) */
#define OCELLUS_HOOK_STR_MAX 256    /* bytes read of a string arg, NUL included */
#define OCELLUS_HOOK_SOCKADDR_MAX 28 /* sizeof(struct sockaddr_in6) */
/* An LPM trie key holds at most 256 bytes after prefixlen; 8 go to the
 * fixed part (hook_id .. gen), so string values are matched on their
 * first 248 bytes. */
#define OCELLUS_STR_KEY_DATA 248
#define OCELLUS_STR_KEY_FIXED_BITS 64

/* How an arg is read: services/enforcer/plan.py's INT .. ADDRESS. */
enum ocellus_read {
	OCELLUS_READ_INT = 1,           /* 1/2/4/8 bytes at ctx+offset, sign-extended to s64 */
	OCELLUS_READ_UINT = 2,          /* zero-extended to u64 */
	OCELLUS_READ_USER_STRING = 3,   /* a user pointer at ctx+offset */
	OCELLUS_READ_KERNEL_STRING = 4, /* a __data_loc field: ctx + (u16)loc */
	OCELLUS_READ_SOCKADDR = 5,      /* a user struct sockaddr pointer, up to 28 bytes */
	OCELLUS_READ_ADDRESS = 6,       /* a __u8[4] or __u8[16] field, raw bytes */
};

/* Filter operators. Negated operators are the positive one with
 * OCELLUS_FF_NOT: a positive operator ORs its values, so its negation
 * ANDs the negated values (Tetragon's semantics), i.e. NOT(any). */
enum ocellus_filter_op {
	OCELLUS_FOP_EQUAL = 1,       /* any vals[i] == arg */
	OCELLUS_FOP_MASK = 2,        /* any (arg & vals[i]) != 0 */
	OCELLUS_FOP_GT = 3,          /* any arg > vals[i] */
	OCELLUS_FOP_LT = 4,          /* any arg < vals[i] */
	OCELLUS_FOP_RANGE = 5,       /* any vals[2i] <= arg <= vals[2i+1] */
	OCELLUS_FOP_STR_EQUAL = 6,   /* str_match entry: value + NUL */
	OCELLUS_FOP_STR_PREFIX = 7,  /* str_match entry: value */
	OCELLUS_FOP_STR_POSTFIX = 8, /* str_match entry: value reversed, reverse = 1 (not in slice 1) */
};
#define OCELLUS_FF_NOT (1 << 0)      /* negate the result */
#define OCELLUS_FF_UNSIGNED (1 << 1) /* compare as u64 (GT, LT, RANGE) */

/* What a matching slot does; reported in the record as well. */
enum ocellus_action {
	OCELLUS_ACTION_POST = 1,
	OCELLUS_ACTION_NOPOST = 2,
	OCELLUS_ACTION_SIGKILL = 3,
	OCELLUS_ACTION_SIGNAL = 4,
};
#define OCELLUS_HF_POST (1 << 0)     /* ocellus_hook_config.flags: emit a record */

struct ocellus_hook_key {
	__u32 tp_id;         /* the tracepoint's tracefs id (the attachment's BPF cookie) */
	__u32 slot;          /* 0 .. OCELLUS_HOOK_SLOTS-1 */
};

struct ocellus_hook_arg {
	__u16 offset;        /* of the field in the tracepoint record */
	__u8  size;          /* of the field */
	__u8  read;          /* enum ocellus_read */
};

struct ocellus_hook_filter {
	__u8  arg;           /* index into ocellus_hook_config.args */
	__u8  op;            /* enum ocellus_filter_op */
	__u8  flags;         /* OCELLUS_FF_* */
	__u8  nvals;         /* integer ops: values used in vals */
	__u32 _pad;
	__s64 vals[OCELLUS_HOOK_VALUES];
};

/* hook_config value: one (hook, selector) pair on one tracepoint. */
struct ocellus_hook_config {
	__u32 hook_id;       /* user space's, never reused while loaded */
	__u8  selector;      /* which of the hook's selectors (str_match keys) */
	__u8  nargs;
	__u8  nfilters;
	__u8  action;        /* enum ocellus_action, as reported */
	__u8  flags;         /* OCELLUS_HF_* */
	__u8  gen;           /* str_match generation in use (see str_match key) */
	__u16 _pad;
	__u32 signal;        /* bpf_send_signal() on a match; 0: none */
	struct ocellus_hook_arg args[OCELLUS_HOOK_ARGS];
	struct ocellus_hook_filter filters[OCELLUS_HOOK_FILTERS];
};

/* str_match key (LPM trie; the value is a __u8, 1). prefixlen counts bits
 * from hook_id on: OCELLUS_STR_KEY_FIXED_BITS + 8 * bytes of data. A value
 * is written under the generation the config does not use yet, then the
 * config flips `gen` in one update, then the old entries go: a changed
 * value never leaves a moment with no entry. */
struct ocellus_str_key {
	__u32 prefixlen;
	__u32 hook_id;
	__u8  selector;
	__u8  filter;        /* index into ocellus_hook_config.filters */
	__u8  reverse;       /* 1: Postfix (data reversed) */
	__u8  gen;
	char  data[OCELLUS_STR_KEY_DATA];
};

/* hook_stats value (per-CPU hash by hook_id, created by user space). */
struct ocellus_hook_stats {
	__u64 matched;       /* events a selector of the hook matched */
	__u64 posted;        /* records written for it */
	__u64 signalled;     /* signals sent (Sigkill, Signal) */
	__u64 filtered;      /* events no selector of the hook matched */
};

/* OCELLUS_OP_HOOK record: the fixed part, then args_len bytes of nargs
 * items, each an ocellus_hook_item followed by `len` bytes of data (no
 * alignment): INT/UINT 8 bytes little-endian, strings without their NUL,
 * a sockaddr as read, an address as its 4 or 16 bytes.
 * hdr.flags: OCELLUS_F_ARGS_TRUNCATED (a string arg may be cut),
 * OCELLUS_F_ARGS_FAULT (an arg could not be read). */
struct ocellus_hook_fixed {
	struct ocellus_header hdr;
	__u32 hook_id;
	__u8  slot;
	__u8  selector;
	__u8  action;        /* enum ocellus_action */
	__u8  nargs;
	__u16 args_len;
	__u16 _pad;
	__u32 _pad2;
};

struct ocellus_hook_item {
	__u8  read;          /* enum ocellus_read */
	__u8  flags;         /* OCELLUS_AF_* */
	__u16 len;
};
#define OCELLUS_AF_TRUNCATED (1 << 0) /* the string filled the read buffer */
#define OCELLUS_AF_FAULT (1 << 1)     /* the read failed: len is 0 */

#endif /* OCELLUS_POLICY_H */
