"""The C/Python boundary: bpf/lib/events.h as the C compiler lays it out must
match the ctypes mirrors and enum values the sensor decodes with."""

from __future__ import annotations

import ctypes as ct
import shutil
import subprocess
from pathlib import Path

import pytest

from schemas.raw import KernelStat, Op, RecordFlag
from services.sensor import connect_records as cr
from services.sensor import hook_records as hr
from services.sensor import proc_records as pr
from services.sensor import records

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"

STRUCTS = {
    "ocellus_header": records.Header,
    "ocellus_exec_fixed": records.ExecFixed,
    "ocellus_exit": records.Exit,
    "ocellus_clone": records.Clone,
    "ocellus_cgroup": records.Cgroup,
    "ocellus_hook_fixed": records.HookFixed,
    "ocellus_hook_key": hr.HookKey,
    "ocellus_hook_arg": hr.HookArg,
    "ocellus_hook_filter": hr.HookFilter,
    "ocellus_hook_config": hr.HookConfig,
    "ocellus_tp_slots": hr.TpSlots,
    "ocellus_prefilter": hr.Prefilter,
    "ocellus_str_key": hr.StrKey,
    "ocellus_val_key": hr.ValKey,
    "ocellus_hook_stats": hr.HookStats,
    "ocellus_ns_filter": pr.NsFilter,
    "ocellus_proc_filter": pr.ProcFilter,
    "ocellus_bin_key": pr.BinKey,
    "ocellus_bin_value": pr.BinValue,
    "ocellus_bin_state": pr.BinState,
    "ocellus_hook_item": hr.HookItem,
    "ocellus_connect_rule": cr.ConnectRule,
    "ocellus_scope_key": hr.ScopeKey,
}
CONSTANTS = {
    "OCELLUS_RECORD_VERSION": records.RECORD_VERSION,
    "OCELLUS_COMM_LEN": records.COMM_LEN,
    **{f"OCELLUS_OP_{op.name}": op.value for op in Op},
    **{f"OCELLUS_F_{flag.name}": flag.value for flag in RecordFlag},
    **{f"OCELLUS_STAT_{stat.name}": stat.value for stat in KernelStat},
    "OCELLUS_STAT_MAX": len(KernelStat),
    "OCELLUS_HOOK_SLOTS": hr.HOOK_SLOTS,
    "OCELLUS_TP_IDS": hr.TP_IDS,
    "OCELLUS_HOOK_ARGS": hr.HOOK_ARGS,
    "OCELLUS_HOOK_FILTERS": hr.HOOK_FILTERS,
    "OCELLUS_HOOK_VALUES": hr.HOOK_VALUES,
    "OCELLUS_HOOK_STR_MAX": hr.HOOK_STR_MAX,
    "OCELLUS_HOOK_SOCKADDR_MAX": hr.HOOK_SOCKADDR_MAX,
    "OCELLUS_STR_KEY_DATA": hr.STR_KEY_DATA,
    "OCELLUS_STR_KEY_FIXED_BITS": hr.STR_KEY_FIXED_BITS,
    "OCELLUS_HF_POST": hr.HF_POST,
    "OCELLUS_HF_RETURN": hr.HF_RETURN,
    "OCELLUS_HF_EXIT": hr.HF_EXIT,
    "OCELLUS_HF_MONITORED": hr.HF_MONITORED,
    **{f"OCELLUS_RATE_{k.name}": k.value for k in hr.RateScope},
    "OCELLUS_HK_RETURN": hr.HK_RETURN,
    "OCELLUS_VAL_KEY_DATA": hr.VAL_KEY_DATA,
    "OCELLUS_VAL_KEY_FIXED_BITS": hr.VAL_KEY_FIXED_BITS,
    "OCELLUS_FILTER_RETURN": hr.FILTER_RETURN,
    "OCELLUS_SLOT_RETURN": hr.SLOT_RETURN,
    **{f"OCELLUS_PART_{k.name}": k.value for k in hr.ArgPart},
    **{f"OCELLUS_VK_{k.name}": k.value for k in hr.ValKind},
    "OCELLUS_AF_TRUNCATED": hr.AF_TRUNCATED,
    "OCELLUS_AF_FAULT": hr.AF_FAULT,
    **{f"OCELLUS_READ_{k.name}": k.value for k in hr.ReadKind},
    **{f"OCELLUS_FOP_{k.name}": k.value for k in hr.FilterOp},
    **{f"OCELLUS_FF_{k.name}": k.value for k in hr.FilterFlag},
    **{f"OCELLUS_ACTION_{k.name}": k.value for k in hr.Action},
    "OCELLUS_HOOK_PIDS": pr.HOOK_PIDS,
    "OCELLUS_HOOK_NS_FILTERS": pr.HOOK_NS_FILTERS,
    "OCELLUS_HOOK_NS_VALUES": pr.HOOK_NS_VALUES,
    "OCELLUS_PROC_ANCESTORS": pr.PROC_ANCESTORS,
    "OCELLUS_BIN_SETS": pr.BIN_SETS,
    "OCELLUS_BIN_EPOCHS": pr.BIN_EPOCHS,
    "OCELLUS_BIN_KEY_DATA": pr.BIN_KEY_DATA,
    **{f"OCELLUS_PF_{k.name}": k.value for k in pr.ProcFlag},
    **{
        f"OCELLUS_NS_{k.name.upper().replace('FORCHILDREN', '_FOR_CHILDREN')}": k.value
        for k in pr.NsKind
    },
    "OCELLUS_NS_KINDS": len(pr.NsKind),
    "OCELLUS_CONNECT_RULES": cr.CONNECT_RULES,
    "OCELLUS_CR_POST": cr.CR_POST,
    "OCELLUS_CR_SENDMSG": cr.CR_SENDMSG,
}


def _c_layout(tmp_path: Path) -> dict[str, int]:
    """Compile a program that prints sizeof/offsetof of every field, and run it."""
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        '#include "lib/events.h"',
        '#include "lib/policy.h"',
        "int main(void) {",
    ]
    for cname, pystruct in STRUCTS.items():
        lines.append(f'printf("{cname} %zu\\n", sizeof(struct {cname}));')
        for fname, _ in pystruct._fields_:
            lines.append(f'printf("{cname}.{fname} %zu\\n", offsetof(struct {cname}, {fname}));')
    for const in CONSTANTS:
        lines.append(f'printf("{const} %lld\\n", (long long){const});')
    lines.append("return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    cc = shutil.which("cc") or pytest.fail("a C compiler (cc) is needed for the layout check")
    subprocess.run([cc, f"-I{BPF_DIR}", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_layout_matches_the_c_header(tmp_path: Path) -> None:
    """Every struct size, field offset and constant agrees between C and Python."""
    c = _c_layout(tmp_path)
    for cname, pystruct in STRUCTS.items():
        assert c[cname] == ct.sizeof(pystruct), cname
        for fname, _ in pystruct._fields_:
            assert c[f"{cname}.{fname}"] == getattr(pystruct, fname).offset, f"{cname}.{fname}"
    for const, value in CONSTANTS.items():
        assert c[const] == value, const


def test_struct_formats_match_the_ctypes_mirrors() -> None:
    """The struct formats the decoder uses have the ctypes mirrors' sizes."""
    import struct

    decoded = (records.Header, records.ExecFixed, records.Exit, records.Clone, records.Cgroup,
               records.HookFixed)  # fmt: skip
    for pystruct in decoded:
        assert struct.calcsize("<" + records.struct_format(pystruct)) == ct.sizeof(pystruct)
