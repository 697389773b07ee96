/* SPDX-License-Identifier: Apache-2.0 */
/* What crosses the ring buffer: the one definition shared by the BPF
 * programs and (through services/sensor/records.py, checked by
 * tests/sensor/test_layout.py) the sensor. Plain C with __u* types so that
 * both BCC and the host compiler accept it. */
#ifndef OCELLUS_EVENTS_H
#define OCELLUS_EVENTS_H

#include <linux/types.h>

/* Bumped when any record layout below changes. */
#define OCELLUS_RECORD_VERSION 1

enum ocellus_op {            /* values are wire format: never renumber, never reuse */
	OCELLUS_OP_EXEC = 1,
	OCELLUS_OP_EXIT = 2,
	OCELLUS_OP_CLONE = 3,
	OCELLUS_OP_CGROUP_MKDIR = 4,
	OCELLUS_OP_CGROUP_RMDIR = 5,
	OCELLUS_OP_HOOK = 6,         /* a policy hook matched: lib/policy.h */
};

/* hdr.flags: why a field is missing or cut short. Never reuse a bit. */
#define OCELLUS_F_ARGS_TRUNCATED     (1 << 0) /* argv longer than the limits */
#define OCELLUS_F_FILENAME_TRUNCATED (1 << 1)
#define OCELLUS_F_NO_ARGS            (1 << 2) /* argv not captured (exec began before attach) */
#define OCELLUS_F_NO_PARENT          (1 << 3) /* ppid unknown */
#define OCELLUS_F_NO_STATUS          (1 << 4) /* exit code and signal unknown */
#define OCELLUS_F_ARGS_FAULT         (1 << 5) /* argv memory could not be read */

/* Indexes of the per-CPU counter map `stats`. Wire format too. */
enum ocellus_stat {
	OCELLUS_STAT_RINGBUF_FULL = 0, /* records lost: ring buffer full */
	OCELLUS_STAT_RECORDS = 1,      /* records written to the ring buffer */
	OCELLUS_STAT_THREADS = 2,      /* thread clones seen (not emitted) */
	OCELLUS_STAT_EXEC_NO_ARGS = 3, /* execs whose argv was not captured */
	OCELLUS_STAT_RETURN_LOST = 4,  /* return: true records not kept for sys_exit_* (map full) */
	OCELLUS_STAT_MAX = 5,
};

#define OCELLUS_COMM_LEN 16

struct ocellus_header {
	__u8  op;            /* enum ocellus_op */
	__u8  version;       /* OCELLUS_RECORD_VERSION */
	__u16 flags;         /* OCELLUS_F_* */
	__u32 pid;           /* thread-group id */
	__u32 tid;
	__u32 ppid;          /* parent thread-group id, 0 if unknown */
	__u64 ktime_ns;      /* CLOCK_BOOTTIME */
	__u64 cgroup_id;     /* cgroup v2 inode */
	__u32 uid;
	__u32 gid;
	char  comm[OCELLUS_COMM_LEN];
};

/* Variable-length: `data` holds args_len bytes of NUL-terminated arguments,
 * then filename_len bytes of the executed path (no NUL). Only
 * filename_len + args_len bytes of `data` are sent. */
struct ocellus_exec_fixed {
	struct ocellus_header hdr;
	__u16 args_len;
	__u16 filename_len;
	__u16 argc;          /* arguments kept */
	__u16 _pad;
};

struct ocellus_exit {
	struct ocellus_header hdr;
	__u32 exit_code;     /* exit_group() status, valid unless signal != 0 */
	__u32 signal;        /* fatal signal, 0 if none */
};

struct ocellus_clone {
	struct ocellus_header hdr;  /* pid/tid: the child; ppid: its parent */
	__u32 parent_tid;           /* the thread that called clone */
	__u32 _pad;
	__u64 clone_flags;
};

/* A cgroup v2 directory appeared or went away (containers start and stop).
 * Followed by path_len bytes of path, relative to the cgroup2 root. */
struct ocellus_cgroup {
	struct ocellus_header hdr;  /* the task that made or removed it */
	__u64 id;                   /* the cgroup's id: its inode, as cgroup_id reports it */
	__u32 level;
	__u16 path_len;
	__u16 _pad;
};

#endif /* OCELLUS_EVENTS_H */
