"""The open-storm driver: N openat+close of one file, unpaced or at a set rate.

In C so that the driver's own cost is tiny and the same under every
configuration; compiled at run time like the exec-storm driver.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.procs import compile_c

# openat(AT_FDCWD, path) + close in a loop, timed around the loop only.
# RATE 0: as fast as it can; otherwise the i-th open is due at t0 + i/RATE
# and the driver sleeps (absolute deadlines, checked every 64 opens) while it
# is ahead, so a short stall is caught up and the mean rate is RATE.
# Output: start_ns end_ns failed cpu_us (CLOCK_MONOTONIC, as Python's
# time.monotonic(), so the bench can line it up with what a consumer saw).
DRIVER_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 4) { fprintf(stderr, "usage: %s N PATH RATE\n", argv[0]); return 2; }
    long n = atol(argv[1]), failed = 0;
    const char *path = argv[2];
    double rate = atof(argv[3]);
    long long t0 = now_ns();
    for (long i = 0; i < n; i++) {
        if (rate > 0 && (i & 63) == 0) {
            long long due = t0 + (long long)(i / rate * 1e9);
            if (due > now_ns()) {
                struct timespec ts = { due / 1000000000LL, due % 1000000000LL };
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            }
        }
        int fd = openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            failed++;
        else
            close(fd);
    }
    long long t1 = now_ns();
    /* The driver's CPU, the BPF programs it runs in the kernel included. */
    struct rusage self;
    getrusage(RUSAGE_SELF, &self);
    long long cpu_us = self.ru_utime.tv_sec * 1000000LL + self.ru_utime.tv_usec
                     + self.ru_stime.tv_sec * 1000000LL + self.ru_stime.tv_usec;
    printf("%lld %lld %ld %lld\n", t0, t1, failed, cpu_us);
    return 0;
}
"""


def compile_open_driver(workdir: Path) -> Path:
    return compile_c(workdir, "open_storm", DRIVER_C)


@dataclass(frozen=True)
class OpenStorm:
    """What one driver run reports."""

    n: int
    start: float  # CLOCK_MONOTONIC seconds
    end: float
    cpu_s: float

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def opens_per_s(self) -> float:
        return self.n / self.seconds

    @property
    def cpu_us_per_open(self) -> float:
        return self.cpu_s / self.n * 1e6


def launch(driver: Path, n: int, path: Path, rate: float = 0, cpu: int | None = None,
           ) -> subprocess.Popen[str]:  # fmt: skip
    """Start a storm (pinned to ``cpu`` if given); ``result`` collects it."""
    argv = [str(driver), str(n), str(path), f"{rate:g}"]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env={})


def result(proc: subprocess.Popen[str], n: int) -> OpenStorm:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"open driver exited with {proc.returncode}")
    t0, t1, failed, cpu_us = (int(x) for x in out.split())
    if failed:
        raise RuntimeError(f"{failed} of {n} opens failed")
    return OpenStorm(n, t0 / 1e9, t1 / 1e9, cpu_us / 1e6)


def open_storm(driver: Path, n: int, path: Path, rate: float = 0, cpu: int | None = None,
               ) -> OpenStorm:  # fmt: skip
    return result(launch(driver, n, path, rate, cpu), n)
