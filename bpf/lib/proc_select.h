/* SPDX-License-Identifier: GPL-2.0 */
/* Process selectors: matchBinaries, matchPIDs, matchNamespaces.
 *
 * At exec, the executable's path is matched once against every binary
 * value set in bin_match (one LPM lookup forward, one reversed) and the
 * answer is kept as bits in the process's proc_sel entry; clone copies the
 * entry to the child, adding the parent's bits to the child's inherited
 * ones (followChildren) and the parent to its ancestor chain (followForks).
 * A hook event then reads the entry once (proc_view_load) and each slot's
 * process filters are bit tests and short compares. Namespace inums are
 * read at the event (setns/unshare change them without an exec), only the
 * kinds a filter names.
 *
 * Kernel structs are read only at offsets from the running kernel's BTF
 * (-D OCELLUS_OFF_*, services/sensor/btf.py); host namespace inums and the
 * nsfs device come from the sensor (-D OCELLUS_HOST_NS_*, OCELLUS_NSFS_DEV).
 *
 * Included from process.bpf.c after the accessors it uses (proc_sel_get,
 * proc_sel_put, proc_sel_del, proc_sel_blank, bin_bits, bin_state_get,
 * scope_has):
 * BCC rewrites map operations in the main file only. */
#ifndef OCELLUS_PROC_SELECT_H
#define OCELLUS_PROC_SELECT_H

#include "policy.h"
#include "proc_view.h"

/* The active pid namespace: task->thread_pid->numbers[level].ns. */
static __always_inline void *current_pid_ns(void)
{
	void *task = (void *)bpf_get_current_task();
	void *pid = NULL, *ns = NULL;
	__u32 level = 0;

	bpf_probe_read_kernel(&pid, sizeof(pid), task + OCELLUS_OFF_TASK_THREAD_PID);
	if (!pid)
		return NULL;
	bpf_probe_read_kernel(&level, sizeof(level), pid + OCELLUS_OFF_PID_LEVEL);
	bpf_probe_read_kernel(&ns, sizeof(ns), pid + OCELLUS_OFF_PID_NUMBERS +
			      (level & 63) * OCELLUS_SIZEOF_UPID + OCELLUS_OFF_UPID_NS);
	return ns;
}

static __always_inline __u32 inum_at(void *ns, __u32 off)
{
	__u32 inum = 0;

	if (ns)
		bpf_probe_read_kernel(&inum, sizeof(inum), ns + off);
	return inum;
}

/* The current process's tgid in its own pid namespace (0 if unknown). */
static __always_inline __u32 current_nstgid(void)
{
	struct bpf_pidns_info info = {};
	__u32 inum = inum_at(current_pid_ns(), OCELLUS_OFF_INUM_PID);

	if (!inum || bpf_get_ns_current_pid_tgid(OCELLUS_NSFS_DEV, inum, &info, sizeof(info)))
		return 0;
	return info.tgid;
}

/* The current task's namespace of one kind: its inum, 0 if unreadable. */
static __always_inline __u32 current_ns_inum(__u32 kind)
{
	void *task = (void *)bpf_get_current_task();
	void *p = NULL;
	__u32 member, off;

	if (kind == OCELLUS_NS_PID)
		return inum_at(current_pid_ns(), OCELLUS_OFF_INUM_PID);
	if (kind == OCELLUS_NS_USER) {
		bpf_probe_read_kernel(&p, sizeof(p), task + OCELLUS_OFF_TASK_CRED);
		if (!p)
			return 0;
		bpf_probe_read_kernel(&p, sizeof(p), p + OCELLUS_OFF_CRED_USER_NS);
		return inum_at(p, OCELLUS_OFF_INUM_USER);
	}
	switch (kind) {
	case OCELLUS_NS_UTS: member = OCELLUS_OFF_NSPROXY_UTS; off = OCELLUS_OFF_INUM_UTS; break;
	case OCELLUS_NS_IPC: member = OCELLUS_OFF_NSPROXY_IPC; off = OCELLUS_OFF_INUM_IPC; break;
	case OCELLUS_NS_MNT: member = OCELLUS_OFF_NSPROXY_MNT; off = OCELLUS_OFF_INUM_MNT; break;
	case OCELLUS_NS_PID_FOR_CHILDREN:
		member = OCELLUS_OFF_NSPROXY_PID_FOR_CHILDREN; off = OCELLUS_OFF_INUM_PID; break;
	case OCELLUS_NS_NET: member = OCELLUS_OFF_NSPROXY_NET; off = OCELLUS_OFF_INUM_NET; break;
	case OCELLUS_NS_TIME: member = OCELLUS_OFF_NSPROXY_TIME; off = OCELLUS_OFF_INUM_TIME; break;
	case OCELLUS_NS_TIME_FOR_CHILDREN:
		member = OCELLUS_OFF_NSPROXY_TIME_FOR_CHILDREN; off = OCELLUS_OFF_INUM_TIME; break;
	case OCELLUS_NS_CGROUP:
		member = OCELLUS_OFF_NSPROXY_CGROUP; off = OCELLUS_OFF_INUM_CGROUP; break;
	default:
		return 0;
	}
	bpf_probe_read_kernel(&p, sizeof(p), task + OCELLUS_OFF_TASK_NSPROXY);
	if (!p)
		return 0;  /* an exiting task has dropped its nsproxy */
	bpf_probe_read_kernel(&p, sizeof(p), p + member);
	return inum_at(p, off);
}

/* matchNamespaces' host_ns (value 0): the namespaces of kthreadd, as the
 * sensor read them at start. */
static __always_inline __u32 host_ns_inum(__u32 kind)
{
	switch (kind) {
	case OCELLUS_NS_UTS: return OCELLUS_HOST_NS_UTS;
	case OCELLUS_NS_IPC: return OCELLUS_HOST_NS_IPC;
	case OCELLUS_NS_MNT: return OCELLUS_HOST_NS_MNT;
	case OCELLUS_NS_PID:
	case OCELLUS_NS_PID_FOR_CHILDREN: return OCELLUS_HOST_NS_PID;
	case OCELLUS_NS_NET: return OCELLUS_HOST_NS_NET;
	case OCELLUS_NS_TIME:
	case OCELLUS_NS_TIME_FOR_CHILDREN: return OCELLUS_HOST_NS_TIME;
	case OCELLUS_NS_CGROUP: return OCELLUS_HOST_NS_CGROUP;
	case OCELLUS_NS_USER: return OCELLUS_HOST_NS_USER;
	}
	return 0;
}

/* The bits of the sets whose meaning is unchanged since `epoch`. */
static __always_inline __u64 bin_keep(struct ocellus_bin_state *bs, __u32 now, __u32 epoch)
{
	if (now - epoch >= OCELLUS_BIN_EPOCHS)
		return 0;
	return bs->keep[epoch & (OCELLUS_BIN_EPOCHS - 1)];
}

/* The process's bits under the current epoch (`force`: even if its epoch is
 * current, as after an exec). */
static __always_inline void proc_sel_refresh(struct proc_sel *e, int force)
{
	struct ocellus_bin_state *bs = bin_state_get();

	if (!bs)
		return;
	__u32 now = bs->epoch;  /* before the lookups: user space bumps it after writing */
	if (e->epoch == now && !force)
		return;
	if (e->epoch != now)
		e->anc &= bin_keep(bs, now, e->epoch);
	e->match = bin_bits(&e->fwd) | bin_bits(&e->rev);
	e->epoch = now;
}

/* sched_process_exec: the new executable's path is path[0..len) (no NUL;
 * `data` is a map value, `off` masked by the caller). */
static __always_inline void proc_sel_exec(char *data, __u32 off, __u32 mask, __u32 len)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct proc_sel *e = proc_sel_get(tgid);

	if (!e) {
		/* Older than the sensor and not seeded: known from now on. */
		struct proc_sel *blank = proc_sel_blank();
		if (!blank || proc_sel_put(tgid, blank))
			return;
		e = proc_sel_get(tgid);
		if (!e)
			return;
	}
	/* followChildren follows execs too (as Tetragon, which keeps its bitset
	 * across exec): the image being replaced joins the inherited sets. */
	proc_sel_refresh(e, 0);
	e->anc |= e->match;
	__u32 n = len < OCELLUS_BIN_KEY_DATA ? len : OCELLUS_BIN_KEY_DATA;
	bpf_probe_read_kernel(e->fwd.data, OCELLUS_BIN_KEY_DATA, &data[off & mask]);
	if (len < OCELLUS_BIN_KEY_DATA) {
		/* With its NUL, so that In entries (which end with it) match only
		 * the whole path; a longer path matches Prefix entries only. */
		e->fwd.data[len & 255] = 0;
		e->fwd.prefixlen = 8 * (2 + len);
	} else {
		e->fwd.prefixlen = 8 * (1 + OCELLUS_BIN_KEY_DATA);
	}
	e->fwd.dir = 0;
	for (__u32 j = 0; j < OCELLUS_BIN_KEY_DATA; j++) {
		if (j >= n)
			break;
		/* Masked in an asm the compiler cannot see through: else it walks a
		 * pointer whose bound the verifier loses (proc_sel has a tail). */
		__u64 k = j;
		asm volatile("%[k] &= 255" : [k] "+r"(k));
		e->rev.data[k] = data[(off + len - 1 - j) & mask];
	}
	e->rev.dir = 1;
	e->rev.prefixlen = 8 * (1 + n);
	proc_sel_refresh(e, 1);
}

/* task_newtask of a process (not a thread), in the parent. */
static __always_inline void proc_sel_clone(__u32 child, int clone_parent)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct proc_sel *p = proc_sel_get(tgid);

	if (!p)
		return;  /* an unknown parent: the child is unknown too */
	if (!p->nstgid)
		p->nstgid = current_nstgid();
	if (proc_sel_put(child, p))
		return;
	struct proc_sel *c = proc_sel_get(child);
	if (!c)
		return;
	c->nstgid = 0;  /* the child may be in a new pid namespace: read when needed */
	if (clone_parent)
		return;  /* CLONE_PARENT: a sibling, with the parent's ancestors */
	c->anc = p->anc | p->match;
	for (__u32 i = OCELLUS_PROC_ANCESTORS - 1; i > 0; i--) {
		c->anc_pids[i] = p->anc_pids[i - 1];
		c->anc_nspids[i] = p->anc_nspids[i - 1];
	}
	c->anc_pids[0] = tgid;
	c->anc_nspids[0] = p->nstgid;
}

/* The current process into s->proc, once per event. */
static __always_inline void proc_view_load(struct proc_view *v)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct proc_sel *e = proc_sel_get(tgid);

	v->ns_loaded = 0;
	v->pids[0] = tgid;
	if (!e) {
		v->state = PV_UNKNOWN;
		v->nspids[0] = 0;
		for (__u32 i = 1; i < PV_CHAIN; i++) {
			v->pids[i] = 0;
			v->nspids[i] = 0;
		}
		return;
	}
	proc_sel_refresh(e, 0);
	v->match = e->match;
	v->follow = e->match | e->anc;
	v->nspids[0] = e->nstgid;
	for (__u32 i = 0; i < OCELLUS_PROC_ANCESTORS; i++) {
		v->pids[i + 1] = e->anc_pids[i];
		v->nspids[i + 1] = e->anc_nspids[i];
	}
	v->state = PV_KNOWN;
}

/* matchPIDs: the process (followForks: or one of its ancestors) is one of
 * the values. isNamespacePID compares the pids each saw in its own pid
 * namespace. */
static __always_inline int pid_filter(struct proc_view *v, struct ocellus_proc_filter *f)
{
	int nspid = f->pid_flags & OCELLUS_PF_NSPID;
	__u32 chain = f->pid_flags & OCELLUS_PF_FOLLOW ? PV_CHAIN : 1;

	if (nspid && !v->nspids[0]) {
		__u32 tgid = v->pids[0];
		struct proc_sel *e = proc_sel_get(tgid);
		v->nspids[0] = current_nstgid();
		if (e)
			e->nstgid = v->nspids[0];  /* fixed for the life of the process */
	}
	v->hit = 0;
	for (__u32 c = 0; c < PV_CHAIN; c++) {
		if (c >= chain)
			break;
		__u32 pid = nspid ? v->nspids[c] : v->pids[c];
		if (!pid)
			break;  /* the end of what is known of the chain */
		for (__u32 j = 0; j < OCELLUS_HOOK_PIDS; j++) {
			if (j >= f->npids)
				break;
			if (f->pids[j] == pid)
				v->hit = 1;
		}
	}
	__u32 hit = *(volatile __u32 *)&v->hit;
	return f->pid_flags & OCELLUS_PF_NOT ? !hit : hit;
}

/* matchNamespaces: one filter, its values ORed (NotIn: none of them). */
static __always_inline int ns_filter(struct proc_view *v, struct ocellus_ns_filter *f)
{
	__u32 kind = f->kind & (PV_NS_SLOTS - 1);

	if (!(v->ns_loaded & (1u << kind))) {
		v->ns[kind] = current_ns_inum(kind);
		v->ns_loaded |= 1u << kind;
	}
	__u32 inum = v->ns[kind];
	v->hit = 0;
	for (__u32 j = 0; j < OCELLUS_HOOK_NS_VALUES; j++) {
		if (j >= f->nvals)
			break;
		__u32 want = f->vals[j] ? f->vals[j] : host_ns_inum(kind);
		if (inum && want == inum)
			v->hit = 1;
	}
	__u32 hit = *(volatile __u32 *)&v->hit;
	return f->flags & OCELLUS_PF_NOT ? !hit : hit;
}

/* A slot's process filters, ANDed; 1 when it has none. A process the
 * sensor knows nothing of (no proc_sel entry) matches no matchBinaries
 * filter, In or NotIn, as in Tetragon. */
static __always_inline int proc_filters_match(struct proc_view *v, struct ocellus_proc_filter *f)
{
	if (!(f->bin_flags | f->pid_flags | f->nns))
		return 1;
	if (v->state == PV_UNLOADED)
		proc_view_load(v);
	if (f->bin_flags & OCELLUS_PF_ON) {
		if (v->state != PV_KNOWN)
			return 0;
		__u64 bits = f->bin_flags & OCELLUS_PF_FOLLOW ? v->follow : v->match;
		int hit = (bits >> (f->bin_bit & (OCELLUS_BIN_SETS - 1))) & 1;
		if (f->bin_flags & OCELLUS_PF_NOT)
			hit = !hit;
		if (!hit)
			return 0;
	}
	if ((f->pid_flags & OCELLUS_PF_ON) && !pid_filter(v, f))
		return 0;
	for (__u32 i = 0; i < OCELLUS_HOOK_NS_FILTERS; i++) {
		if (i >= f->nns)
			break;
		if (!ns_filter(v, &f->ns[i]))
			return 0;
	}
	return 1;
}

/* The process filters of the slots that have any (`proc`, from hook_slots),
 * before the slots run: s->proc.ok, which the other slots in `used` have
 * set from the start. Its own loop, ahead of the slots', because the
 * verifier walks code in the slot loop once per state the earlier slots
 * leave, and the pid and namespace loops there took it past its
 * 1M-instruction limit; here the states are few. The price is a second
 * hook_config lookup of each such slot that runs (s->slot_hook spares it
 * for the others). */
static __always_inline void proc_stage(struct hook_scratch *s, __u32 tp_id, __u32 used, __u32 proc)
{
	s->proc.state = PV_UNLOADED;
	s->proc.ok = used & ~proc;
	if (!(used & proc))
		return;
	for (__u32 slot = 0; slot < OCELLUS_HOOK_SLOTS; slot++) {
		struct ocellus_hook_key key = { .tp_id = tp_id, .slot = slot };
		s->slot_hook[slot] = 0;
		if (!(used & proc & (1u << slot)))
			continue;
		struct ocellus_hook_config *c = hook_config_get(&key);
		if (!c)
			continue;
		s->slot_hook[slot] = c->hook_id;  /* for generic_tp's slot loop */
		s->slot_gen[slot] = c->gen;
		/* The policy's scope: one lookup of the current cgroup in its set. */
		if ((c->proc.scope_flags & OCELLUS_PF_ON) &&
		    !scope_has(c->proc.scope) == !(c->proc.scope_flags & OCELLUS_PF_NOT))
			continue;
		if (proc_filters_match(&s->proc, &c->proc))
			s->proc.ok |= 1u << slot;
	}
}

/* Whether a config has process filters or a scope (hook_slots' `proc`). */
static __always_inline int proc_filtered(struct ocellus_proc_filter *f)
{
	return (f->bin_flags | f->pid_flags | f->nns | f->scope_flags) != 0;
}

#endif /* OCELLUS_PROC_SELECT_H */
