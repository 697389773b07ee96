/* SPDX-License-Identifier: GPL-2.0 */
/* The open-storm benchmark's reference (benchmarks/open_storm.py, target A):
 * the least any in-kernel filter of openat's path by prefix must do, and
 * nothing else. One program on sys_enter_openat reads the path from user
 * memory, looks it up in an LPM trie of prefixes and counts the miss per CPU.
 * Its overhead is the floor under the generic hook engine's on this kernel:
 * what the engine adds above it is what its generality (any tracepoint,
 * slots, selectors, process filters) costs. Never loaded by the sensor.
 *
 * Built with OCELLUS_BENCH_DISPATCH_ONLY, the program only counts: what the
 * kernel's path to a program costs a syscall before it does anything (the
 * floor under the floor). Built with OCELLUS_BENCH_RAW, the same filter on
 * the raw tracepoint raw_syscalls:sys_enter, which every syscall of the
 * node runs (benchmarks/syscall_dispatch.py: why the sensor does not hook
 * syscalls there). x86_64 only: the raw form reads openat's number and its
 * path register itself. */

struct reference_key {
	__u32 prefixlen;     /* bits of data */
	char  data[252];
};

BPF_LPM_TRIE(reference_prefixes, struct reference_key, __u8, 64);
BPF_PERCPU_ARRAY(reference_scratch, struct reference_key, 1);
BPF_PERCPU_ARRAY(reference_counts, __u64, 2);  /* 0: filtered, 1: matched */

static __always_inline int reference_filter(const char *filename)
{
	__u32 zero = 0, which = 0;
#ifdef OCELLUS_BENCH_DISPATCH_ONLY
	__u64 *ran = reference_counts.lookup(&zero);
	if (ran)
		*ran += 1;
	return 0;
#endif
	struct reference_key *k = reference_scratch.lookup(&zero);

	if (!k)
		return 0;
	long n = bpf_probe_read_user_str(k->data, sizeof(k->data), filename);
	if (n <= 0)
		n = 1;
	k->prefixlen = 8 * (n & 255);
	if (reference_prefixes.lookup(k))
		which = 1;
	__u64 *count = reference_counts.lookup(&which);
	if (count)
		*count += 1;
	return 0;
}

#ifdef OCELLUS_BENCH_RAW
#define X86_64_NR_OPENAT 257
#define THREAD_INFO_STATUS 16  /* task_struct starts with thread_info: flags, syscall_work, status */
#define TS_COMPAT 2            /* an ia32 syscall: its number is not a 64-bit one */
#define PT_REGS_SI 104         /* openat's second arg */

RAW_TRACEPOINT_PROBE(sys_enter)
{
	if (ctx->args[1] != X86_64_NR_OPENAT)
		return 0;
	/* Direct loads through the kernel's own types, no helper read: the
	 * cheapest a raw form can be. */
	void *task = (void *)bpf_get_current_task_btf();
	if (*(volatile __u32 *)(task + THREAD_INFO_STATUS) & TS_COMPAT)
		return 0;
	void *regs = (void *)bpf_task_pt_regs((struct task_struct *)task);
	return reference_filter((const char *)*(volatile __u64 *)(regs + PT_REGS_SI));
}
#else
TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
	return reference_filter(args->filename);
}
#endif
