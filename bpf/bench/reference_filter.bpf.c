/* SPDX-License-Identifier: GPL-2.0 */
/* The open-storm benchmark's reference (benchmarks/open_storm.py, target A):
 * the least any in-kernel filter of openat's path by prefix must do, and
 * nothing else. One program on sys_enter_openat reads the path from user
 * memory, looks it up in an LPM trie of prefixes and counts the miss per CPU.
 * Its overhead is the floor under the generic hook engine's on this kernel:
 * what the engine adds above it is what its generality (any tracepoint,
 * slots, selectors, process filters) costs. Never loaded by the sensor. */

struct reference_key {
	__u32 prefixlen;     /* bits of data */
	char  data[252];
};

BPF_LPM_TRIE(reference_prefixes, struct reference_key, __u8, 64);
BPF_PERCPU_ARRAY(reference_scratch, struct reference_key, 1);
BPF_PERCPU_ARRAY(reference_counts, __u64, 2);  /* 0: filtered, 1: matched */

TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
	__u32 zero = 0, which = 0;
	struct reference_key *k = reference_scratch.lookup(&zero);

	if (!k)
		return 0;
	long n = bpf_probe_read_user_str(k->data, sizeof(k->data), args->filename);
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
