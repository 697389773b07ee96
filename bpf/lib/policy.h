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

#define OCELLUS_HOOK_SLOTS 5        /* (hook, selector) pairs per tracepoint */
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
/* val_match keys: the same fixed part, then 16 bytes of value. */
#define OCELLUS_VAL_KEY_DATA 16
#define OCELLUS_VAL_KEY_FIXED_BITS 64
/* ocellus_str_key.filter / ocellus_val_key.filter of a matchReturnArgs filter */
#define OCELLUS_FILTER_RETURN 0x80
/* hook_config key .slot of the exit side of a `return: true` hook: on the
 * sys_exit_* tracepoint, OR the slot its selector has on sys_enter_*. */
#define OCELLUS_SLOT_RETURN (1u << 16)

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
	OCELLUS_FOP_STR_POSTFIX = 8, /* str_match entry: value, reverse = its length; vals: the lengths */
	OCELLUS_FOP_VAL_SET = 9,     /* val_match INT entries: values and ranges (as prefixes) */
	OCELLUS_FOP_ADDR = 10,       /* val_match IP4/IP6 entries: CIDRs */
};

/* Which part of an arg a filter looks at (ocellus_hook_filter.part). */
enum ocellus_arg_part {
	OCELLUS_PART_VALUE = 0,      /* the arg as read (an integer, a string, an address field) */
	OCELLUS_PART_FAMILY = 1,     /* a sockaddr's sa_family */
	OCELLUS_PART_PORT = 2,       /* a sockaddr's port, host order */
	OCELLUS_PART_ADDR = 3,       /* a sockaddr's IPv4 or IPv6 address */
};

/* ocellus_val_key.kind */
enum ocellus_val_kind {
	OCELLUS_VK_INT = 1,          /* data[0..8]: u64 big-endian; a signed arg has its sign bit flipped */
	OCELLUS_VK_IP4 = 4,          /* data[0..4] (an IPv4-mapped IPv6 address is looked up as IPv4) */
	OCELLUS_VK_IP6 = 6,          /* data[0..16] */
};
#define OCELLUS_FF_NOT (1 << 0)      /* negate the result */
#define OCELLUS_FF_UNSIGNED (1 << 1) /* compare as u64 (GT, LT, RANGE) */

/* What a matching slot does; reported in the record as well. */
enum ocellus_action {
	OCELLUS_ACTION_POST = 1,
	OCELLUS_ACTION_NOPOST = 2,
	OCELLUS_ACTION_SIGKILL = 3,
	OCELLUS_ACTION_SIGNAL = 4,
	OCELLUS_ACTION_OVERRIDE = 5,     /* connect denied (connect.bpf.c; ocellus_connect_rule) */
};
#define OCELLUS_HF_POST (1 << 0)     /* ocellus_hook_config.flags: emit a record */
#define OCELLUS_HF_RETURN (1 << 1)   /* return: true: the record waits in hook_pending for sys_exit_* */
#define OCELLUS_HF_EXIT (1 << 2)     /* the sys_exit_* side of a return: true hook (matchReturnArgs) */
#define OCELLUS_HF_MONITORED (1 << 3) /* monitor mode: enforce mode would signal or deny; a match counts `monitored` */

/* Post's rateLimitScope (ocellus_hook_config.rate_scope): whose repeats a
 * rate-limited post suppresses. Tetragon's default is the thread. */
enum ocellus_rate_scope {
	OCELLUS_RATE_THREAD = 0,
	OCELLUS_RATE_PROCESS = 1,
	OCELLUS_RATE_GLOBAL = 2,
};

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
	__u8  part;          /* enum ocellus_arg_part */
	__u8  _pad[3];
	__s64 vals[OCELLUS_HOOK_VALUES];
};

/* Process selectors (matchBinaries, matchPIDs, matchNamespaces) of a slot,
 * evaluated before its args are read (lib/proc_select.h). */
#define OCELLUS_HOOK_PIDS 8          /* matchPIDs values per selector */
#define OCELLUS_HOOK_NS_FILTERS 4    /* matchNamespaces filters per selector */
#define OCELLUS_HOOK_NS_VALUES 4     /* namespace inums per filter */
#define OCELLUS_PROC_ANCESTORS 8     /* ancestors followForks looks at */
#define OCELLUS_BIN_SETS 64          /* matchBinaries value sets in use at once (bits) */
#define OCELLUS_BIN_EPOCHS 32        /* ocellus_bin_state.keep: epochs remembered */
#define OCELLUS_BIN_KEY_DATA 255     /* bytes of path in a bin_match key */

/* Namespace kinds of matchNamespaces (Tetragon's order). */
enum ocellus_ns_kind {
	OCELLUS_NS_UTS = 0,
	OCELLUS_NS_IPC = 1,
	OCELLUS_NS_MNT = 2,
	OCELLUS_NS_PID = 3,
	OCELLUS_NS_PID_FOR_CHILDREN = 4,
	OCELLUS_NS_NET = 5,
	OCELLUS_NS_TIME = 6,
	OCELLUS_NS_TIME_FOR_CHILDREN = 7,
	OCELLUS_NS_CGROUP = 8,
	OCELLUS_NS_USER = 9,
	OCELLUS_NS_KINDS = 10,
};
#define OCELLUS_PF_ON (1 << 0)       /* the filter is present */
#define OCELLUS_PF_NOT (1 << 1)      /* NotIn, NotPrefix, NotPostfix */
#define OCELLUS_PF_FOLLOW (1 << 2)   /* followChildren / followForks */
#define OCELLUS_PF_NSPID (1 << 3)    /* isNamespacePID */

struct ocellus_ns_filter {
	__u8  kind;          /* enum ocellus_ns_kind */
	__u8  flags;         /* OCELLUS_PF_NOT */
	__u8  nvals;
	__u8  _pad;
	__u32 vals[OCELLUS_HOOK_NS_VALUES]; /* inums; 0: the host's (the sensor knows it) */
};

struct ocellus_proc_filter {
	__u8  bin_bit;       /* the matchBinaries value set: a bit of ocellus_bin_value.bits */
	__u8  bin_flags;     /* OCELLUS_PF_ON | NOT | FOLLOW */
	__u8  pid_flags;     /* OCELLUS_PF_ON | NOT | FOLLOW | NSPID */
	__u8  npids;
	__u8  nns;
	__u8  scope_flags;   /* OCELLUS_PF_ON | NOT: the policy's scope (scope_cgroups) */
	__u16 scope;         /* scope id: ocellus_scope_key.scope */
	__u32 pids[OCELLUS_HOOK_PIDS];
	struct ocellus_ns_filter ns[OCELLUS_HOOK_NS_FILTERS];
};

/* bin_match key (LPM trie, global: shared by every hook). dir 0: the
 * executable's path and its NUL (In/NotIn entries end with the NUL,
 * Prefix entries do not); dir 1: the path reversed (Postfix entries).
 * prefixlen: 8 * (1 + bytes of data). */
struct ocellus_bin_key {
	__u32 prefixlen;
	__u8  dir;
	char  data[OCELLUS_BIN_KEY_DATA];
};

/* bin_match value. An LPM lookup finds the longest entry only, so each
 * entry's `bits` also holds the bits of every entry that is a prefix of it:
 * one lookup answers all sets. `own` is the entry's own sets (for user
 * space, which rebuilds `bits` from it). */
struct ocellus_bin_value {
	__u64 bits;
	__u64 own;
};

/* bin_state (array, one entry). A process's set bits are computed at exec
 * under `epoch`; user space bumps it when it gives a bit to a new set, and a
 * process seen under an older epoch has its bits computed again. keep[e %
 * OCELLUS_BIN_EPOCHS]: the bits whose meaning has not changed since epoch e
 * (what a process's inherited followChildren bits may keep). */
struct ocellus_bin_state {
	__u32 epoch;
	__u32 _pad;
	__u64 keep[OCELLUS_BIN_EPOCHS];
};

/* scope_cgroups key (hash; the value is a __u8 the kernel never reads: the
 * enforcer's note of why the entry is there, services/enforcer/scope_state.py;
 * only the key's presence counts): a policy scoped to
 * containers or pods (podSelector, containerSelector, TracingPolicyNamespaced,
 * hostSelector, reactions) applies where bpf_get_current_cgroup_id() is in its
 * scope's set; with OCELLUS_PF_NOT (the host included), where it is not (the
 * set then holds the containers left out). The enforcer keeps the sets current
 * as cgroups come and go (services/enforcer/scopes.py). */
struct ocellus_scope_key {
	__u32 scope;         /* ocellus_proc_filter.scope */
	__u32 _pad;
	__u64 cgroup_id;     /* the inode of the cgroup v2 directory */
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
	__u8  rate_scope;    /* enum ocellus_rate_scope (with rate_ns) */
	__u8  _pad;
	__u32 signal;        /* bpf_send_signal() on a match; 0: none */
	__u64 rate_ns;       /* Post rateLimit: at most one record per this many ns per
			      * (hook, selector, scope, args); 0: every match posts */
	struct ocellus_hook_arg args[OCELLUS_HOOK_ARGS];
	struct ocellus_hook_filter filters[OCELLUS_HOOK_FILTERS];
	struct ocellus_proc_filter proc;
};

/* hook_slots value (array indexed by tracepoint id): which slots of the
 * tracepoint have a config, so that an event looks up only those, and which
 * of them have process filters or a scope, so that only those are looked up
 * before the slot loop (lib/proc_select.h). The enforcer writes it around
 * its config writes: `used` after a new config, `proc` before a config that
 * gains process filters (the program also skips a slot whose config has
 * them if `proc` does not say so). Tracepoint ids are below 2^16
 * (TRACE_EVENT_TYPE_MAX). */
#define OCELLUS_TP_IDS 65536
struct ocellus_tp_slots {
	__u8  used;          /* bit i: hook_config {tp_id, i} exists */
	__u8  proc;          /* bit i: slot i has process filters or a scope */
	__u16 _pad;
	__u32 hooks[OCELLUS_HOOK_SLOTS]; /* the hook ids of the slots, each once, then 0s */
};

/* hook_prefilter value (an mmapable array indexed by tracepoint id, one
 * 8-byte word the enforcer stores whole, so an event never sees half of
 * one). When `on`, every used slot of the tracepoint ANDs a positive
 * string filter (Equal or Prefix) on the field read at (offset, size,
 * read), and str_prefilter holds the union of their values under
 * {hook_id: tracepoint id, gen}, encoded as in str_match: an event whose
 * string is in none of them matches no slot, and is counted `filtered` for
 * each hook there after one string read and one lookup, without a config.
 * The enforcer turns it off before it writes any config of the tracepoint
 * and on again once they are all written; values go in under the
 * generation the word does not name yet, as in str_match. */
struct ocellus_prefilter {
	__u16 offset;        /* of the field in the tracepoint record */
	__u8  size;
	__u8  read;          /* OCELLUS_READ_USER_STRING or OCELLUS_READ_KERNEL_STRING */
	__u8  on;
	__u8  gen;           /* str_prefilter entries in force: this generation */
	__u8  arg;           /* the arg index the hooks' slots read it as (its scratch buffer) */
	__u8  seq;           /* counts the enforcer's writes: no two words in a row are equal */
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
	__u8  reverse;       /* Postfix: the value's length (1..248); 0: Equal, Prefix */
	__u8  gen;
	char  data[OCELLUS_STR_KEY_DATA];
};

/* val_match key (LPM trie; the value is a __u8, 1): integer sets with
 * ranges (a range is written as the prefixes that cover it) and CIDRs.
 * prefixlen: OCELLUS_VAL_KEY_FIXED_BITS + bits of data; generations as in
 * str_match. */
struct ocellus_val_key {
	__u32 prefixlen;
	__u32 hook_id;
	__u8  selector;
	__u8  filter;        /* index into filters, | OCELLUS_FILTER_RETURN */
	__u8  gen;
	__u8  kind;          /* enum ocellus_val_kind */
	__u8  data[OCELLUS_VAL_KEY_DATA];
};

/* hook_stats value (per-CPU array, at hook id mod OCELLUS_HOOKS_MAX: the
 * enforcer gives no two live hooks one index, and zeroes a reused one). */
struct ocellus_hook_stats {
	__u64 matched;       /* events a selector of the hook matched */
	__u64 posted;        /* records written for it */
	__u64 signalled;     /* signals sent (Sigkill, Signal) */
	__u64 filtered;      /* events no selector of the hook matched */
	__u64 denied;        /* connects denied (Override: connect.bpf.c) */
	__u64 ratelimited;   /* records a Post rateLimit suppressed */
	__u64 monitored;     /* monitor mode: matches enforce mode would have signalled or denied */
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
	__u8  kflags;        /* OCELLUS_HK_* */
	__u8  _pad;
	__u32 _pad2;
};
/* kflags: a return item (ocellus_hook_item + 8 bytes, read INT or UINT)
 * follows the nargs arg items; args_len counts it. */
#define OCELLUS_HK_RETURN (1 << 0)

struct ocellus_hook_item {
	__u8  read;          /* enum ocellus_read */
	__u8  flags;         /* OCELLUS_AF_* */
	__u16 len;
};
#define OCELLUS_AF_TRUNCATED (1 << 0) /* the string filled the read buffer */
#define OCELLUS_AF_FAULT (1 << 1)     /* the read failed: len is 0 */

/* Network deny (connect.bpf.c): each Override selector of a sys_connect hook
 * is also a connect rule, evaluated by the cgroup connect4/connect6 programs
 * on every connect of the node. The rule names the selector's hook_config
 * slot (its filters, their val_match entries and its action: OVERRIDE in
 * enforce mode, POST in monitor mode) and says what connect() returns. */
#define OCELLUS_CONNECT_RULES 32     /* connect_rules entries (array) */
#define OCELLUS_CR_POST (1 << 0)     /* ocellus_connect_rule.flags: emit a record */
#define OCELLUS_CR_SENDMSG (1 << 1)  /* a sys_sendto hook's rule: for the sendmsg4/6 programs */

struct ocellus_connect_rule {
	__u32 hook_id;       /* 0: the entry is unused */
	__u32 tp_id;         /* the hook's tracepoint: hook_config key */
	__u8  selector;      /* which of the hook's selectors (ocellus_hook_config.selector) */
	__u8  flags;         /* OCELLUS_CR_* */
	__u16 _pad;
	__s32 error;         /* what connect() or sendto() returns: a negative errno (argError) */
};

#endif /* OCELLUS_POLICY_H */
