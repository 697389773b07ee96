/* SPDX-License-Identifier: GPL-2.0 */
/* The generic hook engine's per-CPU working memory (kernel side only). */
#ifndef OCELLUS_HOOK_SCRATCH_H
#define OCELLUS_HOOK_SCRATCH_H

#include "policy.h"
#include "proc_view.h"

/* Arg items are written at `pos` masked to HOOK_DATA_MASK so that the
 * verifier can bound every write; the room after the mask takes the
 * largest item. Six items of at most 4 + 256 bytes fit below the mask. */
#define HOOK_DATA_MASK 2047
#define HOOK_DATA_SIZE (HOOK_DATA_MASK + 1 + sizeof(struct ocellus_hook_item) + OCELLUS_HOOK_STR_MAX)
#define HOOK_ARG_MASK 7  /* OCELLUS_HOOK_ARGS rounded up to a power of two, minus one */
/* What identifies an arg's read: the same field read the same way. */
#define HOOK_ARG_TAG(a) ((__u32)(a)->offset | (__u32)(a)->read << 16 | (__u32)(a)->size << 24)
/* The record words ocellus_generic_args_tp copies (it attaches to records
 * of 32 bytes or more): a syscall's first two args, at 16 and 24 in
 * sys_enter_* records; whatever is there in others. */
#define OCELLUS_DIRECT_FROM 16
#define OCELLUS_DIRECT_WORDS 2

/* rate_limit key (LRU hash, kernel only; the value is the ktime of the last
 * record posted): as Tetragon, the first OCELLUS_RATE_ARG_BYTES bytes of each
 * arg as posted are part of the key, so a repeat is the same call with the
 * same args. */
#define OCELLUS_RATE_ARG_BYTES 40
struct ocellus_rate_key {
	__u32 hook_id;
	__u8  selector;
	__u8  scope;         /* enum ocellus_rate_scope */
	__u16 _pad;
	__u64 id;            /* the thread id, the process id (tgid), or 0: global */
	__u8  data[OCELLUS_HOOK_ARGS * OCELLUS_RATE_ARG_BYTES];
};

struct hook_record {
	struct ocellus_hook_fixed fixed;
	char data[HOOK_DATA_SIZE];
};

/* hook_pending key: a `return: true` hook's record waits here between
 * sys_enter_* and sys_exit_*. A thread is in one syscall at a time, so its
 * entries all belong to the syscall it is in; `slot` is the enter slot of
 * the selector that matched (several hooks may wait on one syscall). */
struct hook_pending_key {
	__u64 pid_tgid;
	__u32 slot;
	__u32 _pad;
};

/* An arg as the filters and the record use it, read at most once per
 * event (a hook's selectors are slots that share its args): a string, a
 * sockaddr or an address in the data of an LPM key, so that a string filter
 * looks the string up where it was read. A string read ends with its NUL,
 * which is where an Equal entry (value + NUL) has it; `tail` takes the bytes
 * of a 256-byte read past the key's 248. */
struct hook_arg_buf {
	struct ocellus_str_key key;
	char tail[OCELLUS_HOOK_STR_MAX - OCELLUS_STR_KEY_DATA];
};

/* Too big for the 512-byte stack; and values kept here are opaque to the
 * verifier, which keeps the number of states it explores small. */
struct hook_scratch {
	struct hook_record rec;
	/* Before key and the rest: a masked read of arg[7] stays in the value. */
	struct hook_arg_buf arg[HOOK_ARG_MASK + 1];
	struct ocellus_str_key key;
	struct ocellus_val_key vkey;
	/* In map memory: a key on the stack, written on one path only, split
	 * the verifier's states (+320k instructions). */
	struct hook_pending_key pkey;
	/* Written by write_arg at data[arg * 40] (arg masked to 7: room for 8). */
	struct ocellus_rate_key rkey;
	__u8 rkey_tail[(HOOK_ARG_MASK + 1 - OCELLUS_HOOK_ARGS) * OCELLUS_RATE_ARG_BYTES];
	__s64 ival[HOOK_ARG_MASK + 1];  /* each arg's integer value */
	__u32 arg_tag[HOOK_ARG_MASK + 1];   /* which field arg[i] holds: HOOK_ARG_TAG */
	__u32 arg_len[HOOK_ARG_MASK + 1];   /* its bytes (a string's without the NUL) */
	__u32 arg_flags[HOOK_ARG_MASK + 1]; /* its OCELLUS_AF_* */
	__u32 loaded;                       /* bit per arg[i] read during this event */
	/* The config whose process filters proc_stage evaluated, per slot it
	 * looked up (hook_id 0: none, or a slot without process filters): the
	 * slot loop looks the config up again and runs it only if it is still
	 * that one (the enforcer may have rewritten the slot in between). */
	__u32 slot_hook[OCELLUS_HOOK_SLOTS];
	__u8  slot_gen[OCELLUS_HOOK_SLOTS];
	/* Bytes of items written. In map memory, not a register: the verifier
	 * knows nothing of it, so the paths through each arg's read kind merge
	 * (in a register, every kind's length would be a state of its own:
	 * 6 kinds ^ 6 args). */
	__u32 pos;
	__u32 alen;                     /* the arg being read: its bytes, or < 0: fault */
	__u32 aflags;                   /* and its OCELLUS_AF_* */
	__u32 hit;                      /* the filter being evaluated matched (same reason) */
	/* Set by ocellus_generic_args_tp for the engine it tail-calls: the
	 * tracepoint (0: the engine was attached itself), and the record's
	 * words at OCELLUS_DIRECT_FROM.. (direct_ok: they are this event's;
	 * every program that reads args says whether). */
	__u32 entry_tp;
	__u32 direct_ok;
	__u64 direct[OCELLUS_DIRECT_WORDS];
	__u32 seen;                     /* bit per slot evaluated (generic_tp) */
	__u32 hits;                     /* bit per slot matched */
	struct proc_view proc;          /* the current process, for process selectors */
};

#endif /* OCELLUS_HOOK_SCRATCH_H */
