/* SPDX-License-Identifier: GPL-2.0 */
/* What the process selectors know of a process (kernel side only):
 * proc_sel, kept per thread group at exec and clone so that a hook event
 * needs one lookup, and proc_view, the current process for one event. */
#ifndef OCELLUS_PROC_VIEW_H
#define OCELLUS_PROC_VIEW_H

#include "policy.h"

/* proc_sel value (hash by tgid, allocated per entry, deleted at exit). */
struct proc_sel {
	__u32 epoch;         /* bin_state.epoch that `match` was computed under */
	__u32 nstgid;        /* tgid in its own pid namespace; 0: not known yet */
	__u64 match;         /* binary sets its executable is in */
	__u64 anc;           /* binary sets an ancestor's executable was in (followChildren) */
	__u32 anc_pids[OCELLUS_PROC_ANCESTORS];   /* parent, grandparent, ...; 0 ends */
	__u32 anc_nspids[OCELLUS_PROC_ANCESTORS]; /* the same, each in its own pid namespace */
	struct ocellus_bin_key fwd; /* the executable's path: In, Prefix */
	struct ocellus_bin_key rev; /* reversed: Postfix */
	__u32 _tail;         /* room for masked writes past rev.data */
};

#define PV_UNLOADED 0
#define PV_KNOWN 1
#define PV_UNKNOWN 2                  /* no proc_sel entry: binary and ancestry unknown */
#define PV_CHAIN (1 + OCELLUS_PROC_ANCESTORS)
#define PV_NS_SLOTS 16                /* OCELLUS_NS_KINDS rounded up to a power of two */

/* In hook_scratch: loaded by the first slot with a process filter, reset per event. */
struct proc_view {
	__u32 state;         /* PV_* */
	__u32 ns_loaded;     /* bit per enum ocellus_ns_kind read into ns[] */
	__u64 match;
	__u64 follow;        /* match | anc */
	__u32 pids[PV_CHAIN];   /* the process, then its ancestors */
	__u32 nspids[PV_CHAIN];
	__u32 ns[PV_NS_SLOTS];
	__u32 hit;           /* in map memory for the verifier (see hook_scratch.hit) */
	__u32 ok;            /* bit per slot: its process filters match */
};

#endif /* OCELLUS_PROC_VIEW_H */
