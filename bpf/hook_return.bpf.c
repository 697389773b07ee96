/* SPDX-License-Identifier: GPL-2.0 */
/* The exit side of `return: true` hooks: ocellus_generic_exit_tp, attached
 * to the sys_exit_* tracepoint of every syscall such a hook enters.
 *
 * On sys_enter_*, a matching slot of a return hook does not post: it keeps
 * its record (header and args) in hook_pending under (thread, enter slot).
 * Here, on the same thread's sys_exit_*, each waiting record meets the
 * exit config of its hook and selector (hook_config key: this tracepoint,
 * OCELLUS_SLOT_RETURN | enter slot): the return value is read as that
 * config's one arg, its filters are the selector's matchReturnArgs, and a
 * match posts ONE record: the args, then a return item (kflags
 * OCELLUS_HK_RETURN). Whatever the outcome the entry goes: a thread is in
 * one syscall at a time, so when one returns every entry it had is done.
 *
 * A thread that never returns (exit, exit_group; a thread killed inside a
 * syscall still returns) leaves its entries to sched_process_exit, which
 * deletes them; a non-leader thread whose execve succeeds returns under the
 * leader's id, and sched_process_exec moves its entries there.
 *
 * A program of its own, not a branch of ocellus_generic_tp: the verifier
 * budget of that one is spent on its slot and filter loops.
 * Included from process.bpf.c after generic.bpf.c (write_arg, slot_matches). */

static __always_inline void post_return(void *ctx, struct hook_scratch *s,
					struct ocellus_hook_config *c, struct hook_record *p)
{
	if (!slot_matches(ctx, s, c))
		return;
	s->pos = 0;
	write_arg(s, ctx, &c->args[0], 0);
	__u32 at = p->fixed.args_len & HOOK_DATA_MASK;
	__u32 item = sizeof(struct ocellus_hook_item) + sizeof(__s64);
	__builtin_memcpy(&p->data[at], s->rec.data, sizeof(struct ocellus_hook_item) + sizeof(__s64));
	p->fixed.args_len = at + item;
	p->fixed.kflags |= OCELLUS_HK_RETURN;
	struct ocellus_hook_stats *st = hook_stats_get(c->hook_id);
	if (emit(p, sizeof(p->fixed) + at + item) == 0 && st)
		st->posted += 1;
}

static __always_inline int generic_exit_tp(void *ctx)
{
	__u32 tp_id = bpf_get_attach_cookie(ctx);
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct hook_scratch *s = hook_scratch_get();

	if (!s)
		return 0;
	s->loaded = 0;  /* args in scratch are another event's */
	s->direct_ok = 0;  /* and so are the words ocellus_generic_args_tp copied */
	for (__u32 slot = 0; slot < OCELLUS_HOOK_SLOTS; slot++) {
		struct hook_record *p = hook_pending_get(pid_tgid, slot);
		if (!p)
			continue;
		struct ocellus_hook_key key = { .tp_id = tp_id, .slot = OCELLUS_SLOT_RETURN | slot };
		struct ocellus_hook_config *c = hook_config_get(&key);
		/* Another hook's entry (its exit side was not attached in time,
		 * or it was removed meanwhile) is stale: dropped unposted. */
		if (c && c->hook_id == p->fixed.hook_id && c->selector == p->fixed.selector)
			post_return(ctx, s, c, p);
		hook_pending_delete(pid_tgid, slot);
	}
	return 0;
}
