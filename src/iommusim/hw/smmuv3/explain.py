"""Explain one SMMUv3 translation structure by structure (``iommusim explain --iommu smmuv3``).

:func:`explain_translation` runs the translation procedure (IHI 0070 3.3-3.4) with a trace
-- the caches bypassed, so every structure is read from memory as on a cold SMMU -- and
returns, as JSON-able data, every read in order: the level-1 stream table descriptor and the
STE (5.1, 5.2), the level-1 CD and the CD (5.3, 5.4), each decoded field by field with the
layouts of :mod:`iommusim.bits.arm.smmuv3_structures`; every VMSAv8-64 descriptor of both
stages with its DDI 0487 level, type and fields; hardware Access flag / dirty updates; then
the outcome, and the event record (7.3) with its fields and its 32 bytes.
:func:`print_translation` renders that as text.
"""

from __future__ import annotations

from typing import Any, Final

from rich.console import Console

from iommusim.bits.arm.smmuv3_structures import (
    CD,
    CDTAB_L1,
    STE,
    STRTAB_L1,
    TG0_4K,
    TG0_16K,
    TG0_64K,
    TG1_4K,
    TG1_16K,
    TG1_64K,
)
from iommusim.bits.arm.vmsa import S1_DESC, S2_DESC
from iommusim.bits.fields import Layout
from iommusim.hw.pgtable.walk import AdUpdate, PteRead
from iommusim.hw.smmuv3.transaction import Request
from iommusim.hw.smmuv3.translator import Smmuv3Translator, StructureRead

__all__ = ["explain_translation", "print_translation"]

JsonObj = dict[str, Any]

_STRUCTS: Final[dict[str, tuple[Layout, str]]] = {
    "l1std": (STRTAB_L1, "IHI 0070 5.1 Level 1 Stream Table Descriptor"),
    "ste": (STE, "IHI 0070 5.2 Stream Table Entry"),
    "l1cd": (CDTAB_L1, "IHI 0070 5.3 Level 1 Context Descriptor"),
    "cd": (CD, "IHI 0070 5.4 Context Descriptor"),
}
_TG0_KB: Final = {TG0_4K: 4, TG0_16K: 16, TG0_64K: 64}
_TG1_KB: Final = {TG1_4K: 4, TG1_16K: 16, TG1_64K: 64}


def _fields(layout: Layout, value: int) -> dict[str, str]:
    """The fields of ``value`` that are not zero, in layout order, as hex."""
    return {n: f"{v:#x}" for n, v in layout.decode(value).items() if v}


def _descriptor(rec: PteRead, granule: int, last: bool) -> JsonObj:
    """One VMSAv8-64 descriptor (DDI 0487 D8 "Translation table descriptor formats")."""
    level = 3 - rec.level
    pte = rec.pte
    lay = (S1_DESC if rec.stage == "s1" else S2_DESC)[granule]
    if not pte & 1:
        kind = "invalid"
    elif level == 3:
        kind = "page" if pte & 2 else "invalid (reserved at level 3)"
    else:
        kind = "table" if pte & 2 else "block"
    return {
        "step": "descriptor",
        "stage": rec.stage,
        "for": rec.served,
        "level": level,
        "input": f"{rec.va:#x}",
        "pa": f"{rec.pa:#x}",
        "value": f"{pte:#018x}",
        "type": kind,
        "fields": _fields(lay, pte) if kind != "invalid" else {},
        "last": last,
    }


def explain_translation(t: Smmuv3Translator, req: Request) -> JsonObj:
    """Translate ``req`` on ``t`` with a trace and explain it (see the module docstring)."""
    trace: list[object] = []
    resp = t.translate(req, trace)
    steps: list[JsonObj] = []
    s1_kb = {0: 4, 1: 4}
    s2_kb = 4
    for i, rec in enumerate(trace):
        if isinstance(rec, StructureRead):
            what, pa, value = rec
            layout, spec = _STRUCTS[what]
            steps.append(
                {
                    "step": what,
                    "spec": spec,
                    "pa": f"{pa:#x}",
                    "value": f"{value:#x}",
                    "fields": _fields(layout, value),
                }
            )
            if what == "ste":
                s2_kb = _TG0_KB.get(STE["s2tg"].get(value), 4)
            elif what == "cd":
                s1_kb = {
                    0: _TG0_KB.get(CD["tg0"].get(value), 4),
                    1: _TG1_KB.get(CD["tg1"].get(value), 4),
                }
        elif isinstance(rec, PteRead):
            kb = s2_kb if rec.stage == "s2" else s1_kb[req.addr >> 55 & 1]
            nxt = trace[i + 1] if i + 1 < len(trace) else None
            last = not (isinstance(nxt, PteRead) and nxt.stage == rec.stage)
            steps.append(_descriptor(rec, kb, last))
        elif isinstance(rec, AdUpdate):
            steps.append(
                {
                    "step": "update",
                    "stage": rec.stage,
                    "pa": f"{rec.pa:#x}",
                    "old": f"{rec.old:#018x}",
                    "new": f"{rec.new:#018x}",
                }
            )
    out: JsonObj = {
        "request": {
            "streamid": req.sid,
            "substreamid": req.ssid if req.ssv else None,
            "addr": f"{req.addr:#x}",
            "write": req.is_write,
            "priv": req.priv,
            "instr": req.instr,
            "at": req.at,
        },
        "steps": steps,
        "outcome": resp.outcome,
        "pa": f"{resp.pa:#x}" if resp.ok else None,
        "size_lg2": resp.size_lg2 if resp.ok else None,
        "perms": {"r": resp.r, "w": resp.w, "x": resp.x} if resp.ok else None,
        "event": None,
    }
    ev = resp.event
    if ev is not None:
        out["event"] = {
            "name": ev.name,
            "type": f"{ev.type:#x}",
            "recorded": resp.recorded,
            "stall": ev.stall,
            "stag": ev.stag if ev.stall else None,
            "s2": ev.s2,
            "class": ev.class_,
            "inputaddr": f"{ev.inputaddr:#x}",
            "ipa": f"{ev.ipa:#x}",
            "fetchaddr": f"{ev.fetchaddr:#x}",
            "record": ev.record().hex(),
        }
    return out


def print_translation(con: Console, data: JsonObj) -> None:
    """Print :func:`explain_translation`'s result as text, one line per structure read."""
    r = data["request"]
    ss = "" if r["substreamid"] is None else f" SSID {r['substreamid']:#x}"
    kind = "write" if r["write"] else "read"
    con.print(f"request: StreamID {r['streamid']:#x}{ss} {kind} at {r['addr']}", markup=False)
    for s in data["steps"]:
        if s["step"] == "descriptor":
            fields = " ".join(f"{k}={v}" for k, v in s["fields"].items())
            con.print(
                f"  {s['stage']} L{s['level']} ({s['for']}) @ {s['pa']} = {s['value']}: "
                f"{s['type']} {fields}",
                markup=False,
            )
        elif s["step"] == "update":
            con.print(f"  {s['stage']} update @ {s['pa']}: {s['old']} -> {s['new']}", markup=False)
        else:
            con.print(f"  {s['step'].upper()} @ {s['pa']} ({s['spec']})", markup=False)
            for k, v in s["fields"].items():
                con.print(f"      {k} = {v}", markup=False)
    if data["pa"] is not None:
        p = data["perms"]
        perms = "".join(c for c in "rwx" if p[c])
        con.print(
            f"outcome: {data['outcome']} -> PA {data['pa']} "
            f"(2^{data['size_lg2']} bytes, {perms or 'no access'})",
            markup=False,
        )
    else:
        con.print(f"outcome: {data['outcome']}", markup=False)
    ev = data["event"]
    if ev is not None:
        note = "" if ev["recorded"] else " (not recorded: CD.R / STE.S2R = 0)"
        con.print(f"event: {ev['name']} ({ev['type']}){note}", markup=False)
        con.print(
            f"  S2={int(ev['s2'])} CLASS={ev['class']} InputAddr={ev['inputaddr']} "
            f"IPA={ev['ipa']} FetchAddr={ev['fetchaddr']}"
            + (f" STALL STAG={ev['stag']}" if ev["stall"] else ""),
            markup=False,
        )
        con.print(f"  record: {ev['record']}", markup=False)
