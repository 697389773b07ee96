"""Child processes of the exec-storm bench: the storm driver, tracers, the consumer."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

from services.common.natsserver import die_with_parent

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")

# fork + execve + waitpid in a loop, timed around the loop only. In C so that
# the driver's own cost is tiny and the same under every configuration.
DRIVER_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
    if (argc != 3) { fprintf(stderr, "usage: %s N MARKER-PREFIX\n", argv[0]); return 2; }
    long n = atol(argv[1]), failed = 0;
    /* argv strings on the stack, not in .rodata: a forked child has no page
     * table entries yet for file-backed pages, and a tracer reading argv at
     * sys_enter_execve cannot fault them in (it would see no arguments). */
    char prog[] = "/bin/true", marker[256];
    char *args[] = { prog, marker, NULL };
    char *envp[] = { NULL };
    struct timespec t0, t1;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) {
        snprintf(marker, sizeof(marker), "%s%ld", argv[2], i);
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return 1; }
        if (pid == 0) { execve(args[0], args, envp); _exit(127); }
        int st;
        if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            failed++;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    /* CPU of the driver and all its reaped children, BPF programs included:
     * the tracers' in-kernel tax, apart from any wait for a busy CPU. */
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    long long cpu_us = 0;
    struct timeval *tv[] = { &self.ru_utime, &self.ru_stime, &kids.ru_utime, &kids.ru_stime };
    for (int k = 0; k < 4; k++)
        cpu_us += tv[k]->tv_sec * 1000000LL + tv[k]->tv_usec;
    printf("%lld %ld %lld\n", ns, failed, cpu_us);
    return 0;
}
"""


class Unavailable(Exception):
    """A configuration that cannot run here; the message is one line."""


def compile_c(workdir: Path, name: str, source: str) -> Path:
    """A benchmark's C driver, built at run time: ``workdir/name``."""
    src, exe = workdir / f"{name}.c", workdir / name
    src.write_text(source)
    subprocess.run(["cc", "-O2", "-Wall", "-o", str(exe), str(src)], check=True)
    return exe


def compile_driver(workdir: Path) -> Path:
    return compile_c(workdir, "storm", DRIVER_C)


def storm(driver: Path, n: int, prefix: str) -> dict[str, float]:
    """Run n fork+execs: execs per second, and the workload's CPU per exec."""
    out = subprocess.run([str(driver), str(n), prefix], check=True, capture_output=True,
                         text=True, env={}).stdout.split()  # fmt: skip
    elapsed_ns, failed, cpu_us = int(out[0]), int(out[1]), int(out[2])
    if failed:
        raise RuntimeError(f"{failed} of {n} execs of /bin/true failed")
    return {"execs_per_s": n / (elapsed_ns / 1e9), "workload_cpu_us_per_exec": cpu_us / n}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all threads), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    fields = stat[stat.rfind(b")") + 2 :].split()  # comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat


def last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    except OSError:
        return "(no output)"
    lines = [ln for ln in lines if ln]
    if not lines:
        return "(no output)"
    # A JSON log line (the sensor's): its event and reason.
    with contextlib.suppress(ValueError, LookupError, TypeError, AttributeError):
        entry = json.loads(lines[-1])
        return f"{entry['event']}: {entry.get('reason', '')}"[:200]
    return lines[-1][:200]


class Tracer:
    """A tracer as a child process, output to files (so nothing has to drain a
    pipe during the storm), ready once ``ready`` appears in ``ready_in``."""

    def __init__(self, name: str, argv: list[str], workdir: Path, *, ready: str,
                 ready_in: str = "stdout", stop_signal: int = signal.SIGINT,
                 env: dict[str, str] | None = None, timeout: float = 60.0) -> None:  # fmt: skip
        self.name, self.argv, self.ready, self.timeout = name, argv, ready, timeout
        self.stop_signal, self.env = stop_signal, env
        self.out = workdir / f"{name}.stdout"
        self.err = workdir / f"{name}.stderr"
        self.ready_path = self.out if ready_in == "stdout" else self.err
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        with self.out.open("wb") as out, self.err.open("wb") as err:
            # Own session: a Ctrl-C reaches only the bench, which stops us in
            # order; PDEATHSIG: nothing survives a killed bench.
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=REPO,
                env={**os.environ, **(self.env or {})}, start_new_session=True,
                preexec_fn=die_with_parent,
            )  # fmt: skip
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.ready in self.ready_path.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                raise Unavailable(last_line(self.err))
            time.sleep(0.05)
        raise Unavailable(f"not ready after {self.timeout:.0f}s: {last_line(self.err)}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(self.stop_signal)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Consumer:
    """benchmarks.consumer in a child process, driven over its stdin/stdout."""

    def __init__(self, url: str, prefix: str, expected: int) -> None:
        argv = [sys.executable, "-m", "benchmarks.consumer", url, prefix, str(expected)]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO, text=True,
            start_new_session=True, preexec_fn=die_with_parent,
        )  # fmt: skip

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"consumer exited with {self.proc.wait()}")
        return json.loads(line)  # type: ignore[no-any-return]

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def __enter__(self) -> Self:
        try:
            self._read()  # {"ready": true}
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # EOF: drain and exit
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
