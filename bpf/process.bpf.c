/* SPDX-License-Identifier: GPL-2.0 */
/* Process lifecycle: exec (with argv), clone of processes, exit with status.
 * Tracepoints only. The one kernel struct path read (task->mm->arg_*) uses
 * offsets from the running kernel's BTF, never from the (mismatched) headers.
 * Parents come from task_newtask, never from task_struct. */
#include "lib/events.h"

/* Knobs, set by the sensor with -D. */
#ifndef OCELLUS_RINGBUF_PAGES
#define OCELLUS_RINGBUF_PAGES 512          /* 2 MiB */
#endif
#ifndef OCELLUS_WAKEUP_BYTES
#define OCELLUS_WAKEUP_BYTES (128 * 1024)  /* bytes per CPU between forced wakeups */
#endif
#ifndef OCELLUS_ARGS_MAX
#define OCELLUS_ARGS_MAX 4096              /* all arguments; power of two */
#endif
#ifndef OCELLUS_FILENAME_MAX
#define OCELLUS_FILENAME_MAX 512
#endif
#ifndef OCELLUS_PROCS_MAX
#define OCELLUS_PROCS_MAX 65536
#endif
#ifndef OCELLUS_PENDING_MAX
#define OCELLUS_PENDING_MAX 4096           /* threads inside a `return: true` hooked syscall */
#endif
#ifndef OCELLUS_RATE_LIMIT_MAX
#define OCELLUS_RATE_LIMIT_MAX 16384       /* Post rateLimit windows open at once (LRU) */
#endif

#define CLONE_THREAD_FLAG 0x00010000
#define CLONE_PARENT_FLAG 0x00008000
#define SIG_KILL 9

/* The filename follows the arguments. Offsets are masked to
 * 2 * OCELLUS_ARGS_MAX - 1 so that the verifier can bound them; the room
 * below makes every masked offset safe. */
#define ARGS_MASK (2 * OCELLUS_ARGS_MAX - 1)
#define FILENAME_MASK (OCELLUS_FILENAME_MAX - 1)
#define EXEC_DATA_SIZE (2 * OCELLUS_ARGS_MAX + OCELLUS_FILENAME_MAX)

struct exec_record {
	struct ocellus_exec_fixed fixed;
	char data[EXEC_DATA_SIZE];
};

/* What we know of a live process, by thread-group id. */
struct proc_state {
	__u32 ppid;
	__u32 exit_code;
	__u32 signal;
	__u32 last_signal; /* last fatal-by-default signal sent to it */
	__u16 flags;       /* OCELLUS_F_NO_PARENT */
	__u8  status_set;  /* exit_code or signal recorded */
	__u8  _pad;
};

#ifndef OCELLUS_CGROUP_PATH_MAX
#define OCELLUS_CGROUP_PATH_MAX 512        /* power of two */
#endif

struct cgroup_record {
	struct ocellus_cgroup fixed;
	char path[OCELLUS_CGROUP_PATH_MAX];
};

BPF_RINGBUF_OUTPUT(events, OCELLUS_RINGBUF_PAGES);
BPF_PERCPU_ARRAY(stats, __u64, OCELLUS_STAT_MAX);
BPF_PERCPU_ARRAY(since_wakeup, __u32, 1);
BPF_PERCPU_ARRAY(exec_scratch, struct exec_record, 1);
BPF_PERCPU_ARRAY(cgroup_scratch, struct cgroup_record, 1);
BPF_TABLE("lru_hash", __u32, struct proc_state, procs, OCELLUS_PROCS_MAX);

static __always_inline void count(int idx)
{
	__u64 *v = stats.lookup(&idx);
	if (v)
		*v += 1;
}

/* Batched wakeups: the reader drains on a timer and is woken early only
 * after OCELLUS_WAKEUP_BYTES written by a CPU, so a burst cannot fill the
 * ring between two timer ticks. A wakeup per record costs ~13.5 us in the
 * kernel, and small batches cost more still in the reader.
 * (BCC 0.26 cannot hand the ring to bpf_ringbuf_query, hence a counter.) */
static __always_inline __u64 wakeup_flags(__u32 size)
{
	__u32 zero = 0;
	__u32 *n = since_wakeup.lookup(&zero);

	if (n && (*n += size) >= OCELLUS_WAKEUP_BYTES) {
		*n = 0;
		return BPF_RB_FORCE_WAKEUP;
	}
	return BPF_RB_NO_WAKEUP;
}

/* Returns 0 when the record was written, -1 when the ring was full. */
static __always_inline int emit(void *rec, __u32 size)
{
	if (events.ringbuf_output(rec, size, wakeup_flags(size)) < 0) {
		count(OCELLUS_STAT_RINGBUF_FULL);
		return -1;
	}
	count(OCELLUS_STAT_RECORDS);
	return 0;
}

static __always_inline void fill_header(struct ocellus_header *h, __u8 op)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	h->op = op;
	h->version = OCELLUS_RECORD_VERSION;
	h->pid = pid_tgid >> 32;
	h->tid = (__u32)pid_tgid;
	h->ktime_ns = bpf_ktime_get_boot_ns();
	h->cgroup_id = bpf_get_current_cgroup_id();
	h->uid = (__u32)uid_gid;
	h->gid = uid_gid >> 32;
	bpf_get_current_comm(&h->comm, sizeof(h->comm));
}

static __always_inline void set_parent(struct ocellus_header *h)
{
	__u32 pid = h->pid;
	struct proc_state *ps = procs.lookup(&pid);

	if (ps && !(ps->flags & OCELLUS_F_NO_PARENT)) {
		h->ppid = ps->ppid;
	} else {
		h->ppid = 0;
		h->flags |= OCELLUS_F_NO_PARENT;
	}
}

/* The new program's arguments, as the kernel laid them out on its stack:
 * mm->arg_start..arg_end, NUL-separated. Read at sched_process_exec, when
 * those pages are sure to be present; at sys_enter_execve the caller's argv
 * may sit in pages a fresh child has not faulted in yet, which a BPF read
 * cannot fault in. Offsets come from the kernel's BTF (see btf.py). */
static __always_inline void read_args(struct exec_record *rec)
{
	void *task = (void *)bpf_get_current_task();
	void *mm = NULL;
	unsigned long start = 0, end = 0;

	rec->fixed.args_len = 0;
	rec->fixed.argc = 0;
	rec->fixed.hdr.flags = 0;
	bpf_probe_read_kernel(&mm, sizeof(mm), task + OCELLUS_OFF_TASK_MM);
	if (!mm)
		goto fault;
	bpf_probe_read_kernel(&start, sizeof(start), mm + OCELLUS_OFF_MM_ARG_START);
	bpf_probe_read_kernel(&end, sizeof(end), mm + OCELLUS_OFF_MM_ARG_END);
	if (end <= start)
		goto fault;
	unsigned long len = end - start;
	if (len > OCELLUS_ARGS_MAX) {
		len = OCELLUS_ARGS_MAX;
		rec->fixed.hdr.flags |= OCELLUS_F_ARGS_TRUNCATED;
	}
	len &= ARGS_MASK;  /* a bound the verifier can see */
	if (!len || bpf_probe_read_user(rec->data, len, (void *)start) < 0)
		goto fault;
	rec->fixed.args_len = len;
	return;
fault:
	rec->fixed.hdr.flags |= OCELLUS_F_ARGS_FAULT;
	count(OCELLUS_STAT_EXEC_NO_ARGS);
}

/* `return: true` hooks' records waiting for sys_exit_* (hook_return.bpf.c):
 * defined with the hook engine at the end of this file. */
static __always_inline void hook_pending_forget(__u64 pid_tgid);
static __always_inline void hook_pending_rekey(__u64 from, __u64 to);
/* Process selectors (lib/proc_select.h): defined with the hook engine. */
static __always_inline void proc_sel_exec(char *data, __u32 off, __u32 mask, __u32 len);
static __always_inline void proc_sel_clone(__u32 child, int clone_parent);
static __always_inline void proc_sel_del(__u32 tgid);

TRACEPOINT_PROBE(sched, sched_process_exec)
{
	__u32 zero = 0;
	struct exec_record *rec = exec_scratch.lookup(&zero);

	/* A non-leader thread's execve returns as the leader (same tgid). */
	if (args->old_pid != args->pid)
		hook_pending_rekey(((__u64)args->pid << 32) | (__u32)args->old_pid,
				   bpf_get_current_pid_tgid());
	if (!rec)
		return 0;
	read_args(rec);
	__u16 flags = rec->fixed.hdr.flags;
	fill_header(&rec->fixed.hdr, OCELLUS_OP_EXEC);
	rec->fixed.hdr.flags = flags;
	set_parent(&rec->fixed.hdr);

	__u32 args_len = rec->fixed.args_len & ARGS_MASK;
	unsigned short loc = args->data_loc_filename & 0xFFFF;
	long n = bpf_probe_read_kernel_str(&rec->data[args_len], OCELLUS_FILENAME_MAX,
					   (char *)args + loc);
	__u32 filename_len = (n > 0 ? n - 1 : 0) & FILENAME_MASK;  /* drop the NUL */
	if (filename_len >= OCELLUS_FILENAME_MAX - 1)
		rec->fixed.hdr.flags |= OCELLUS_F_FILENAME_TRUNCATED;
	rec->fixed.filename_len = filename_len;
	proc_sel_exec(rec->data, args_len, ARGS_MASK, filename_len);

	emit(rec, sizeof(rec->fixed) + args_len + filename_len);
	return 0;
}

TRACEPOINT_PROBE(task, task_newtask)
{
	if (args->clone_flags & CLONE_THREAD_FLAG) {
		count(OCELLUS_STAT_THREADS);
		return 0;
	}
	struct ocellus_clone rec = {};
	fill_header(&rec.hdr, OCELLUS_OP_CLONE);
	rec.parent_tid = rec.hdr.tid;
	rec.clone_flags = args->clone_flags;

	/* task_newtask runs in the parent, so the parent is the caller, unless
	 * CLONE_PARENT hands the child to the caller's own parent. */
	struct proc_state child = {};
	child.ppid = rec.hdr.pid;
	if (args->clone_flags & CLONE_PARENT_FLAG) {
		set_parent(&rec.hdr);
		child.ppid = rec.hdr.ppid;
		child.flags = rec.hdr.flags & OCELLUS_F_NO_PARENT;
	}
	rec.hdr.ppid = child.ppid;
	rec.hdr.pid = args->pid;
	rec.hdr.tid = args->pid;
	procs.update(&rec.hdr.pid, &child);
	proc_sel_clone(args->pid, args->clone_flags & CLONE_PARENT_FLAG);
	emit(&rec, sizeof(rec));
	return 0;
}

static __always_inline struct proc_state *proc_of_current(void)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct proc_state *ps = procs.lookup(&pid);

	if (!ps) {
		/* Older than the sensor and not seeded: remember it anyway. */
		struct proc_state fresh = { .flags = OCELLUS_F_NO_PARENT };
		procs.update(&pid, &fresh);
		ps = procs.lookup(&pid);
	}
	return ps;
}

TRACEPOINT_PROBE(syscalls, sys_enter_exit_group)
{
	struct proc_state *ps = proc_of_current();

	if (ps && !ps->status_set) {
		ps->exit_code = args->error_code & 0xff;
		ps->status_set = 1;
	}
	return 0;
}

/* A fatal signal is dequeued: the default action of everything but the
 * ignore/stop/continue signals is to kill, and SIGKILL always does. */
static __always_inline int fatal_by_default(int sig)
{
	switch (sig) {
	case 17: case 18: case 19: case 20: case 21: case 22: case 23: case 28:
		return 0;   /* CHLD CONT STOP TSTP TTIN TTOU URG WINCH */
	default:
		return sig > 0 && sig <= 64;
	}
}

/* When a signal with a fatal default action is sent to a process that does
 * not handle it, the kernel turns it into a group-wide SIGKILL at once, so
 * signal_deliver only ever sees SIGKILL. The signal that was sent is seen
 * here, in the sender. */
TRACEPOINT_PROBE(signal, signal_generate)
{
	__u32 target = args->pid;

	if (args->result != 0 || !fatal_by_default(args->sig))  /* 0: delivered */
		return 0;
	struct proc_state *ps = procs.lookup(&target);
	if (ps)
		ps->last_signal = args->sig;
	return 0;
}

TRACEPOINT_PROBE(signal, signal_deliver)
{
	int sig = args->sig;
	struct proc_state *ps;

	if (sig != SIG_KILL && (args->sa_handler != 0 || !fatal_by_default(sig))) {
		/* Handled or harmless: it was not the cause of any death. */
		ps = procs.lookup(&(__u32){bpf_get_current_pid_tgid() >> 32});
		if (ps && ps->last_signal == sig)
			ps->last_signal = 0;
		return 0;
	}
	ps = proc_of_current();
	if (ps && !ps->status_set) {
		ps->signal = (sig == SIG_KILL && ps->last_signal) ? ps->last_signal : sig;
		ps->status_set = 1;
	}
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	/* Every thread: one that ends inside a hooked syscall never returns. */
	hook_pending_forget(bpf_get_current_pid_tgid());
	if (!args->group_dead)
		return 0;
	struct ocellus_exit rec = {};
	fill_header(&rec.hdr, OCELLUS_OP_EXIT);
	__u32 pid = rec.hdr.pid;
	proc_sel_del(pid);
	struct proc_state *ps = procs.lookup(&pid);
	if (ps) {
		rec.hdr.ppid = ps->ppid;
		rec.hdr.flags = ps->flags & OCELLUS_F_NO_PARENT;
		rec.exit_code = ps->exit_code;
		rec.signal = ps->signal;
		if (!ps->status_set)
			rec.hdr.flags |= OCELLUS_F_NO_STATUS;
		procs.delete(&pid);
	} else {
		rec.hdr.flags = OCELLUS_F_NO_PARENT | OCELLUS_F_NO_STATUS;
	}
	emit(&rec, sizeof(rec));
	return 0;
}

/* cgroup v2 (hierarchy 0) only: the enricher maps cgroup ids to containers. */
static __always_inline int emit_cgroup(__u8 op, int root, int level, __u64 id,
				       unsigned short path_loc, void *args)
{
	__u32 zero = 0;
	struct cgroup_record *rec;

	if (root != 0)
		return 0;
	rec = cgroup_scratch.lookup(&zero);
	if (!rec)
		return 0;
	fill_header(&rec->fixed.hdr, op);
	rec->fixed.hdr.flags = 0;
	rec->fixed.hdr.ppid = 0;
	rec->fixed.id = id;
	rec->fixed.level = level;
	long n = bpf_probe_read_kernel_str(rec->path, sizeof(rec->path), (char *)args + path_loc);
	__u32 len = (n > 0 ? n - 1 : 0) & (OCELLUS_CGROUP_PATH_MAX - 1);
	if (n >= OCELLUS_CGROUP_PATH_MAX)
		rec->fixed.hdr.flags |= OCELLUS_F_FILENAME_TRUNCATED;
	rec->fixed.path_len = len;
	emit(rec, sizeof(rec->fixed) + len);
	return 0;
}

TRACEPOINT_PROBE(cgroup, cgroup_mkdir)
{
	return emit_cgroup(OCELLUS_OP_CGROUP_MKDIR, args->root, args->level, args->id,
			   args->data_loc_path & 0xFFFF, args);
}

TRACEPOINT_PROBE(cgroup, cgroup_rmdir)
{
	return emit_cgroup(OCELLUS_OP_CGROUP_RMDIR, args->root, args->level, args->id,
			   args->data_loc_path & 0xFFFF, args);
}

/* The generic hook engine (generic.bpf.c) shares this object's ring buffer,
 * counters and record header. BCC takes programs, generates TRACEPOINT_PROBE
 * argument structs and rewrites map operations in the main file only: the
 * engine's maps, the accessors it uses and its entry point are here, its
 * logic in generic.bpf.c. */
#include "lib/policy.h"
#include "lib/hook_scratch.h"

/* The policy maps are pinned in bpffs (OCELLUS_PIN_DIR, a directory per
 * node and layout of lib/policy.h): the enforcer writes them from its own
 * process, and they outlive a sensor restart, so enforcement resumes as soon
 * as the program is attached again. Sizes come from user space
 * (services/sensor/hook_records.py POLICY_MAPS), which checks existing pins
 * against them before loading: BCC reuses a pinned map whatever its layout. */
#ifndef OCELLUS_PIN_DIR
#error "OCELLUS_PIN_DIR must name the bpffs directory of the policy maps"
#endif
BPF_TABLE_PINNED("hash", struct ocellus_hook_key, struct ocellus_hook_config, hook_config,
		 OCELLUS_HOOK_CONFIGS_MAX, OCELLUS_PIN_DIR "/hook_config");
_Static_assert(OCELLUS_HOOK_TPS_MAX == OCELLUS_TP_IDS, "hook_slots holds every tracepoint id");
BPF_TABLE_PINNED("array", __u32, struct ocellus_tp_slots, hook_slots,
		 OCELLUS_HOOK_TPS_MAX, OCELLUS_PIN_DIR "/hook_slots");
BPF_TABLE_PINNED("lpm_trie", struct ocellus_str_key, __u8, str_match,
		 OCELLUS_STR_MATCH_MAX, OCELLUS_PIN_DIR "/str_match", BPF_F_NO_PREALLOC);
/* The string prefilter of a tracepoint (struct ocellus_prefilter): its word,
 * stored whole by the enforcer through mmap, and its values. */
_Static_assert(sizeof(struct ocellus_prefilter) == sizeof(__u64), "one 8-byte store");
_Static_assert(OCELLUS_HOOK_PREFILTER_MAX == OCELLUS_TP_IDS, "a word per tracepoint id");
BPF_TABLE_PINNED("array", __u32, __u64, hook_prefilter,
		 OCELLUS_HOOK_PREFILTER_MAX, OCELLUS_PIN_DIR "/hook_prefilter", BPF_F_MMAPABLE);
BPF_TABLE_PINNED("lpm_trie", struct ocellus_str_key, __u8, str_prefilter,
		 OCELLUS_STR_PREFILTER_MAX, OCELLUS_PIN_DIR "/str_prefilter", BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct ocellus_val_key, __u8, val_match,
		 OCELLUS_VAL_MATCH_MAX, OCELLUS_PIN_DIR "/val_match", BPF_F_NO_PREALLOC);
/* Indexed by hook id modulo OCELLUS_HOOKS_MAX (the enforcer gives no two
 * live hooks the same index): an array, whose lookup the verifier inlines,
 * for the counter every filtered event adds to. */
_Static_assert((OCELLUS_HOOKS_MAX & (OCELLUS_HOOKS_MAX - 1)) == 0, "hook_stats: a power of two");
BPF_TABLE_PINNED("percpu_array", __u32, struct ocellus_hook_stats, hook_stats,
		 OCELLUS_HOOKS_MAX, OCELLUS_PIN_DIR "/hook_stats");
BPF_PERCPU_ARRAY(hook_scratch, struct hook_scratch, 1);
/* Not pinned: only the programs of this object read it, and what waits in
 * it does not outlive them. Allocated per entry (a record is ~2.4 KB). */
BPF_F_TABLE("hash", struct hook_pending_key, struct hook_record, hook_pending,
	    OCELLUS_PENDING_MAX, BPF_F_NO_PREALLOC);

/* Post rateLimit windows (generic.bpf.c rate_limited): not pinned, like
 * hook_pending; least recently used keys go first when it is full. */
BPF_TABLE("lru_hash", struct ocellus_rate_key, __u64, rate_limit, OCELLUS_RATE_LIMIT_MAX);

static __always_inline __u64 *rate_limit_get(struct ocellus_rate_key *k)
{
	return rate_limit.lookup(k);
}

static __always_inline void rate_limit_set(struct ocellus_rate_key *k, __u64 now)
{
	rate_limit.update(k, &now);
}

static __always_inline struct ocellus_hook_config *hook_config_get(struct ocellus_hook_key *k)
{
	return hook_config.lookup(k);
}

static __always_inline struct ocellus_tp_slots *hook_slots_get(__u32 tp_id)
{
	return hook_slots.lookup(&tp_id);  /* an array: inlined by the verifier */
}

static __always_inline int str_match_has(struct ocellus_str_key *k)
{
	return str_match.lookup(k) != NULL;
}

/* The tracepoint's prefilter word, read with one load (0: off). */
static __always_inline __u64 hook_prefilter_word(__u32 tp_id)
{
	__u64 *word = hook_prefilter.lookup(&tp_id);  /* an array: inlined */
	return word ? *(volatile __u64 *)word : 0;
}

static __always_inline int str_prefilter_has(struct ocellus_str_key *k)
{
	return str_prefilter.lookup(k) != NULL;
}

static __always_inline struct ocellus_hook_stats *hook_stats_get(__u32 hook_id)
{
	__u32 index = hook_id & (OCELLUS_HOOKS_MAX - 1);
	return hook_stats.lookup(&index);
}

static __always_inline struct hook_scratch *hook_scratch_get(void)
{
	__u32 zero = 0;
	return hook_scratch.lookup(&zero);
}

static __always_inline int val_match_has(struct ocellus_val_key *k)
{
	return val_match.lookup(k) != NULL;
}

/* The record in scratch waits for the same thread's sys_exit_*. */
static __always_inline void hook_pending_keep(struct hook_scratch *s, __u32 slot)
{
	s->pkey.pid_tgid = bpf_get_current_pid_tgid();
	s->pkey.slot = slot;
	s->pkey._pad = 0;
	if (hook_pending.update(&s->pkey, &s->rec) < 0)
		count(OCELLUS_STAT_RETURN_LOST);
}

static __always_inline struct hook_record *hook_pending_get(__u64 pid_tgid, __u32 slot)
{
	struct hook_pending_key k = { .pid_tgid = pid_tgid, .slot = slot };
	return hook_pending.lookup(&k);
}

static __always_inline void hook_pending_delete(__u64 pid_tgid, __u32 slot)
{
	struct hook_pending_key k = { .pid_tgid = pid_tgid, .slot = slot };
	hook_pending.delete(&k);
}

static __always_inline void hook_pending_forget(__u64 pid_tgid)
{
	for (__u32 slot = 0; slot < OCELLUS_HOOK_SLOTS; slot++)
		hook_pending_delete(pid_tgid, slot);
}

static __always_inline void hook_pending_rekey(__u64 from, __u64 to)
{
	for (__u32 slot = 0; slot < OCELLUS_HOOK_SLOTS; slot++) {
		struct hook_record *p = hook_pending_get(from, slot);
		if (!p)
			continue;
		struct hook_pending_key k = { .pid_tgid = to, .slot = slot };
		if (hook_pending.update(&k, p) < 0)
			count(OCELLUS_STAT_RETURN_LOST);
		hook_pending_delete(from, slot);
	}
}

/* Process selectors: bin_match and bin_state are policy maps (the
 * enforcer writes them); proc_sel is this object's own, like procs: it
 * describes live processes, so it must not outlive the programs that keep
 * it (a pid reused while no sensor ran would inherit a stranger's entry).
 * Allocated per entry: memory follows the number of live processes. */
BPF_TABLE_PINNED("lpm_trie", struct ocellus_bin_key, struct ocellus_bin_value, bin_match,
		 OCELLUS_BIN_MATCH_MAX, OCELLUS_PIN_DIR "/bin_match", BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("array", __u32, struct ocellus_bin_state, bin_state,
		 OCELLUS_BIN_STATE_MAX, OCELLUS_PIN_DIR "/bin_state");
BPF_F_TABLE("hash", __u32, struct proc_sel, proc_sel, OCELLUS_PROCS_MAX, BPF_F_NO_PREALLOC);
BPF_PERCPU_ARRAY(proc_sel_scratch, struct proc_sel, 1);

static __always_inline struct proc_sel *proc_sel_get(__u32 tgid)
{
	return proc_sel.lookup(&tgid);
}

static __always_inline int proc_sel_put(__u32 tgid, struct proc_sel *v)
{
	return proc_sel.update(&tgid, v);
}

static __always_inline void proc_sel_del(__u32 tgid)
{
	proc_sel.delete(&tgid);
}

/* A zeroed entry to create one from (too big for the stack). */
static __always_inline struct proc_sel *proc_sel_blank(void)
{
	__u32 zero = 0;
	struct proc_sel *b = proc_sel_scratch.lookup(&zero);

	if (b)
		__builtin_memset(b, 0, sizeof(*b));
	return b;
}

static __always_inline __u64 bin_bits(struct ocellus_bin_key *k)
{
	struct ocellus_bin_value *v = bin_match.lookup(k);
	return v ? v->bits : 0;
}

static __always_inline struct ocellus_bin_state *bin_state_get(void)
{
	__u32 zero = 0;
	return bin_state.lookup(&zero);
}

/* Scoping (podSelector, containerSelector, ...): a policy map; the enforcer
 * keeps each scope's cgroup set current (lib/policy.h ocellus_scope_key). */
BPF_TABLE_PINNED("hash", struct ocellus_scope_key, __u8, scope_cgroups,
		 OCELLUS_SCOPE_CGROUPS_MAX, OCELLUS_PIN_DIR "/scope_cgroups", BPF_F_NO_PREALLOC);

static __always_inline int scope_has(__u32 scope)
{
	struct ocellus_scope_key k = { .scope = scope, .cgroup_id = bpf_get_current_cgroup_id() };
	return scope_cgroups.lookup(&k) != NULL;
}

#include "lib/proc_select.h"
#include "generic.bpf.c"
#include "hook_return.bpf.c"

int ocellus_generic_tp(void *ctx)
{
	return generic_tp(ctx);
}

/* The engine behind ocellus_generic_args_tp: slot 0, set by the sensor. */
BPF_PROG_ARRAY(generic_engine, 1);

/* Attached instead of ocellus_generic_tp to every tracepoint whose record
 * holds OCELLUS_DIRECT_WORDS words past its first 16 bytes (the args of a
 * sys_enter_* of two args or more): it copies them with direct loads (the
 * engine, one program for records of any size, reads its fields with a
 * helper, ~35 ns each), runs the prefilter, and only for an event that
 * passes it runs the engine, a tail call. The kernel refuses to attach it
 * to a shorter record: the sensor attaches the engine there. */
int ocellus_generic_args_tp(void *ctx)
{
	struct hook_scratch *s = hook_scratch_get();

	if (!s)
		return 0;
	for (__u32 i = 0; i < OCELLUS_DIRECT_WORDS; i++)
		s->direct[i] = *(__u64 *)(ctx + OCELLUS_DIRECT_FROM + 8 * i);
	s->direct_ok = 1;
	__u32 tp_id = bpf_get_attach_cookie(ctx);
	if (event_start(s, ctx, tp_id)) {
		s->entry_tp = tp_id;
		generic_engine.call(ctx, 0);  /* the engine clears both */
		s->entry_tp = 0;  /* no engine ran: what is in scratch is no one's */
	}
	s->direct_ok = 0;
	return 0;
}

int ocellus_generic_exit_tp(void *ctx)
{
	return generic_exit_tp(ctx);
}

/* Network deny (connect.bpf.c): cgroup connect4/connect6 and sendmsg4/sendmsg6
 * programs, loaded and attached to the cgroup v2 root by
 * services/sensor/connect_guard.py.
 * connect_rules is a policy map (the enforcer writes it). */
BPF_TABLE_PINNED("array", __u32, struct ocellus_connect_rule, connect_rules,
		 OCELLUS_CONNECT_RULES_MAX, OCELLUS_PIN_DIR "/connect_rules");

static __always_inline struct ocellus_connect_rule *connect_rule_get(__u32 i)
{
	return connect_rules.lookup(&i);
}

#include "connect.bpf.c"

int ocellus_connect4(struct bpf_sock_addr *ctx)
{
	return connect_guard(ctx, 0, 0);
}

int ocellus_connect6(struct bpf_sock_addr *ctx)
{
	return connect_guard(ctx, 1, 0);
}

int ocellus_sendmsg4(struct bpf_sock_addr *ctx)
{
	return connect_guard(ctx, 0, 1);
}

int ocellus_sendmsg6(struct bpf_sock_addr *ctx)
{
	return connect_guard(ctx, 1, 1);
}
