"""Planning hooks: tracepoint formats from the real tracefs, syscall kprobes
served by sys_enter_* tracepoints, and clear refusals for what this kernel lacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.policy import PolicyError, load_policy
from services.enforcer.plan import INT, KERNEL_STRING, UINT, USER_STRING, plan_hooks
from services.enforcer.tracefs import TracepointUnavailableError, parse_format, read_format
from services.sensor.mounts import TRACEFS, ensure_mounted

TETRAGON = Path(__file__).resolve().parents[1] / "schemas" / "policies" / "tetragon"
NO_KPROBES = {"kprobes": "absent", "bpf_lsm": "absent", "uprobes": "absent"}


@pytest.fixture(scope="module", autouse=True)
def tracefs() -> None:
    """tracefs mounted, as the sensor makes sure it is."""
    ensure_mounted("tracefs", TRACEFS)


def policy(spec: str, name: str = "p") -> object:
    return load_policy(
        f"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\n"
        f"metadata: {{name: {name}}}\nspec:\n{spec}"
    )


def test_format_of_a_syscall_tracepoint() -> None:
    """sys_enter_openat: the id, the common fields first, then the syscall's arguments."""
    fmt = read_format("syscalls", "sys_enter_openat")
    names = [f.name for f in fmt.fields]
    assert names[:5] == [
        "common_type",
        "common_flags",
        "common_preempt_count",
        "common_pid",
        "__syscall_nr",
    ]
    assert names[5:] == ["dfd", "filename", "flags", "mode"]
    assert fmt.field(6).c_type == "const char *" and fmt.field(6).is_pointer
    assert fmt.id == int((TRACEFS / "events/syscalls/sys_enter_openat/id").read_text())


def test_format_parses_arrays_and_data_loc() -> None:
    """__data_loc strings and fixed arrays keep their C types."""
    text = (
        "name: x\nID: 7\nformat:\n"
        "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
        "\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n"
        "\tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;\n"
    )
    fmt = parse_format("a", "b", text)
    assert fmt.id == 7
    assert [(f.name, f.c_type) for f in fmt.fields] == [
        ("common_type", "unsigned short"),
        ("filename", "__data_loc char[]"),
        ("comm", "char[16]"),
    ]
    assert fmt.fields[1].is_data_loc


def test_missing_tracepoint_is_named() -> None:
    """A tracepoint the kernel lacks is an error naming it."""
    with pytest.raises(TracepointUnavailableError, match="no_such:event"):
        read_format("no_such", "event")


def test_syscall_kprobe_becomes_sys_enter_tracepoint() -> None:
    """kprobe sys_openat (syscall) is served by sys_enter_openat; arg 1 is `filename`."""
    p = policy(
        "  kprobes:\n  - call: sys_openat\n    syscall: true\n    return: true\n"
        "    returnArg: {index: 0, type: int}\n"
        "    args:\n    - {index: 0, type: int}\n    - {index: 1, type: string}\n"
    )
    [hook] = plan_hooks("p", p.spec, NO_KPROBES)
    assert (hook.event_kind, hook.function_name) == ("process_kprobe", "__x64_sys_openat")
    assert hook.tracepoint.event == "sys_enter_openat"
    assert [(a.field.name, a.read) for a in hook.args] == [("dfd", INT), ("filename", USER_STRING)]
    assert hook.exit_tracepoint is not None and hook.exit_tracepoint.event == "sys_exit_openat"


def test_tracepoint_args_by_format_index() -> None:
    """Tracepoint args are format fields, common_* counted; types come from the format."""
    p = policy(
        "  tracepoints:\n  - subsystem: sched\n    event: sched_process_exec\n"
        "    args:\n    - {index: 4}\n    - {index: 5}\n"
    )
    [hook] = plan_hooks("p", p.spec, NO_KPROBES)
    assert hook.event_kind == "process_tracepoint"
    assert [(a.field.name, a.read) for a in hook.args] == [
        ("filename", KERNEL_STRING),
        ("pid", INT),
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            "  kprobes:\n  - call: fd_install\n    syscall: false\n",
            "spec.kprobes[0]: kprobe on a kernel function needs kprobes, which this "
            "kernel does not offer (kprobes: absent)",
            id="kernel-function",
        ),
        pytest.param(
            "  lsmhooks:\n  - hook: file_open\n",
            "spec.lsmhooks[0]: lsmhooks hooks need bpf_lsm",
            id="lsm",
        ),
        pytest.param(
            "  tracepoints:\n  - {subsystem: nope, event: nothing}\n",
            "tracepoint nope:nothing is not available: no such tracepoint",
            id="missing",
        ),
        pytest.param(
            "  kprobes:\n  - call: sys_openat\n    args:\n    - {index: 1, type: file}\n",
            "spec.kprobes[0].args[0].type: type 'file' cannot be read from field "
            "'filename' (const char *) of a tracepoint: 'file' is a kernel object a "
            "tracepoint does not carry; this field is a user pointer: use 'string'",
            id="type-mismatch",
        ),
        pytest.param(
            "  kprobes:\n  - call: sys_openat\n    args:\n    - {index: 7, type: int}\n",
            "spec.kprobes[0].args[0].index: index 7 names no argument",
            id="bad-index",
        ),
    ],
)
def test_refusals_name_the_hook_and_reason(spec: str, message: str) -> None:
    """What cannot be served is refused, with the path and the reason, never ignored."""
    with pytest.raises(PolicyError) as err:
        plan_hooks("p", policy(spec).spec, NO_KPROBES)
    assert message in str(err.value)


def test_every_problem_is_reported_at_once() -> None:
    """Two bad hooks give two problems, not the first one only."""
    p = policy(
        "  lsmhooks:\n  - hook: file_open\n  tracepoints:\n  - {subsystem: nope, event: nothing}\n"
    )
    with pytest.raises(PolicyError) as err:
        plan_hooks("p", p.spec, NO_KPROBES)
    assert len(err.value.problems) == 2


@pytest.mark.parametrize(
    ("name", "tracepoints"),
    [
        pytest.param("sys_setuid.yaml", ["sys_enter_setuid"], id="setuid"),
        pytest.param("sys_pivot_root.yaml", ["sys_enter_pivot_root"], id="pivot_root"),
        pytest.param("write.yaml", ["sys_enter_write"], id="write"),
        pytest.param("raw_syscalls.yaml", ["sys_enter"], id="raw_syscalls"),
        pytest.param("symlink-override.yaml", ["sys_enter_symlinkat"], id="symlinkat"),
    ],
)
def test_tetragon_examples_on_syscalls_and_tracepoints_plan(
    name: str, tracepoints: list[str]
) -> None:
    """Tetragon's own example policies whose hooks are syscalls or tracepoints plan unchanged."""
    p = load_policy((TETRAGON / name).read_text())
    hooks = plan_hooks(p.metadata.name, p.spec, NO_KPROBES)
    assert [h.tracepoint.event for h in hooks] == tracepoints
    assert all(a.read in {INT, UINT, USER_STRING, KERNEL_STRING} for h in hooks for a in h.args)
