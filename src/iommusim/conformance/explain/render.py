"""Rendering for ``iommusim explain``: the data :mod:`.walk` builds, as text (rich) or JSON."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from iommusim.conformance.explain.decode import PBMT_NAMES
from iommusim.conformance.explain.walk import explain_vector
from iommusim.conformance.vectors import JsonObj

__all__ = ["explain_vector_step", "print_explanation", "print_translation"]


# ------------------------------------------------------------------------------ text output
def _kv(fields: JsonObj) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items())


def _flags(fields: JsonObj, names: tuple[str, ...]) -> str:
    return " ".join(n.upper() if fields.get(n) else "-" for n in names)


def _pte_text(e: JsonObj) -> list[str]:
    f = e["fields"]
    where = f"at PA {e['pa']}"
    if e["stage"] == "s1" and e["address"] != e["pa"]:
        where = f"at GPA {e['address']} (SPA {e['pa']})"
    head = f"{e['label']} PTE, level {e['level']}, {where} = {e['value']}  [{e['role']}]"
    body = f"flags {_flags(f, ('v', 'r', 'w', 'x', 'u', 'g', 'a', 'd'))}  ppn={f['ppn']}"
    if "pbmt" in f:
        body += f"  pbmt={f['pbmt']} ({PBMT_NAMES[f['pbmt']]})  n={f['n']}"
    if "rsw" in f:
        body += f"  rsw={f['rsw']}"
    if "reserved_bits_set" in f:
        body += f"  reserved bits set: {f['reserved_bits_set']}"
    if e["stage"] == "g" and e["role"] != "invalid":
        body += f"  (translating GPA {e['address']})"
    if "next_table_pa" in e:
        body += f"  -> next table at {e['next_table_pa']}"
    return [head, body]


def _entry_text(e: JsonObj) -> list[str]:
    kind = e["kind"]
    if kind == "ddte":
        return [
            f"DDT entry, level {e['level']}, at PA {e['pa']} = {e['value']}",
            _kv(e["fields"]) + ("" if e["fields"]["v"] else "  (not valid)"),
        ]
    if kind == "dc":
        where = (
            "from the device-directory cache (no memory read)"
            if e.get("cached")
            else f"at PA {e['pa']}"
        )
        lines = [f"device context ({e['format']} format, {e['size_bytes']} bytes) {where}"]
        for d in e["doublewords"]:
            name = d["name"] + (f" ({d['as']})" if "as" in d else "")
            desc = _kv(d.get("fields", {}))
            if "mode_name" in d:
                desc += f"  -> {d['mode_name']}"
            lines.append(f"  {name:<18} {d['value']:>18}  {desc}".rstrip())
        return lines
    if kind == "misconfigured":
        what = "device context" if e["structure"] == "dc" else "process context"
        return [f"{what} misconfigured: {e['reason']}"]
    if kind == "pdte":
        where = (
            f"at PA {e['pa']}"
            if e["address"] == e["pa"]
            else f"at GPA {e['address']} (SPA {e['pa']})"
        )
        return [
            f"PDT entry, level {e['level']}, {where} = {e['value']}",
            _kv(e["fields"]) + ("" if e["fields"]["v"] else "  (not valid)"),
        ]
    if kind == "pc":
        if e.get("cached"):
            where = "from the process-directory cache (no memory read)"
        elif e["address"] == e["pa"]:
            where = f"at PA {e['pa']}"
        else:
            where = f"at GPA {e['address']} (SPA {e['pa']})"
        return [
            f"process context {where}",
            f"  {'ta':<18} {e['ta']['value']:>18}  {_kv(e['ta']['fields'])}",
            f"  {'fsc (iosatp)':<18} {e['fsc']['value']:>18}  {_kv(e['fsc']['fields'])}"
            f"  -> {e['fsc']['mode_name']}",
        ]
    if kind == "pte":
        return _pte_text(e)
    if kind == "ad":
        return [
            f"A/D update at PA {e['pa']}: {e['old']} -> {e['new']} "
            f"(sets {' '.join(e['set']) or 'nothing'})"
        ]
    if kind == "msipte":
        lines = [
            f"MSI PTE for GPA {e['gpa']}: interrupt file {e['file_index']}, at PA "
            f"{e['pa']}, mode {e['mode']}"
        ]
        win = e.get("window")
        if win is not None:
            lines.append(
                f"GPA page {win['gpa_page']} is in the MSI window: {win['rule']} with "
                f"mask={win['mask']} pattern={win['pattern']}; interrupt file number "
                f"{win['file_index']} = extract(GPA >> 12, mask), MSI page table at "
                f"{win['msi_pt_pa']}"
            )
        lines.append(f"w0={e['w0']} w1={e['w1']}  " + _kv(e["fields"]))
        if "interrupt_file_pa" in e:
            lines.append(
                f"basic translate mode: the write goes to the interrupt file at "
                f"{e['interrupt_file_pa']}"
            )
        return lines
    return [f"{kind}: {e.get('raw')}"]


def _outcome_text(o: JsonObj) -> list[str]:
    if o["status"] == "success":
        if "r" in o:
            line = "success (ATS completion): " + " ".join(
                f"{k.upper()}={o[k]}" for k in ("r", "w", "exe", "priv", "u", "g")
            )
            if "ppn" in o:
                line += f" ppn={o['ppn']} S={o['s']}"
        elif o.get("is_mrif"):
            line = (
                f"success: MSI to an MRIF at {o['mrif_addr']}, notice PPN "
                f"{o['notice_ppn']}, NID {o['notice_nid']}"
            )
        else:
            line = f"success: PA {o['pa']}  pbmt={o['pbmt']} ({o['pbmt_name']})" + (
                f"  (MSI to the interrupt file at {int(o['pa'], 16) & ~0xFFF:#x})"
                if o.get("is_msi")
                else ""
            )
        lines = [line]
        m = o.get("mrif")
        if m is not None:
            lines.append(f"  MRIF at {m['mrif_pa']}: {m['layout']}")
            lines.append(f"  {m['access']}")
            if "identity" in m:
                if m["identity"] is None:
                    lines.append(f"  data {m['msi_data']}: discarded ({m['discarded']})")
                else:
                    lines.append(
                        f"  data {m['msi_data']}: identity {m['identity']} sets bit {m['bit']} "
                        f"of the pending doubleword at {m['pending_pa']} (now "
                        f"{m['pending_now']}); enable bit at {m['enable_pa']} is "
                        f"{m['enabled_now']}; notice MSI {m['notice']}"
                    )
            if m["recorded"]:
                lines.append(
                    f"  then the notice MSI: {m['notice_data']:#x} written "
                    f"little-endian to {m['notice_pa']} (policy: "
                    f"{m['notice_policy']})"
                )
        win = o.get("msi_window")
        if win is not None:
            lines.append(
                f"  GPA {win['gpa']} is outside the MSI window ({win['rule']}, "
                f"mask={win['mask']} pattern={win['pattern']}): regular translation"
            )
        if "cause" in o:
            lines.append(f"  no permission: cause {o['cause']} ({o['cause_name']})")
    else:
        lines = [f"fault: cause {o['cause']} ({o['cause_name']}), status {o['status']}"]
    if "note" in o:
        lines.append(f"  {o['note']}")
    rec = o.get("fault_record")
    if rec is not None:
        f = dict(rec["fields"])
        lines.append(
            f"  fault record {rec['index']} at PA {rec['pa']}: cause={f.pop('cause')}"
            f" ({f.pop('cause_name')}) ttyp={f.pop('ttyp')} ({f.pop('ttyp_name')})"
        )
        lines.append("    " + _kv(f))
    elif "record_note" in o:
        lines.append(f"  ({o['record_note']})")
    return lines


def _page_request_text(s: JsonObj) -> list[str]:
    r = s["request"]
    f = r["fields"]
    seg = f" (segment {r['dseg']})" if r["dsv"] else ""
    pasid = f"PASID {r['pid']} priv {r['priv']} exec {r['exec']}" if r["pv"] else "no PASID"
    lines = [
        f"message: {r['kind']} from rid {r['rid']}{seg}, device_id {r['device_id']}, {pasid}",
        f"         payload {r['payload']}: R={f['r']} W={f['w']} L={f['l']} "
        f"PRGI={f['prgi']} page {f['page_address']}",
    ]
    d = s["ddtp"]
    lines.append(f"ddtp: mode {d['mode_name']}, root PPN {d['ppn']}")
    for n, e in enumerate(s["walk"], 1):
        entry = _entry_text(e)
        lines.append(f"{n:>2}. {entry[0]}")
        lines += [f"    {ln}" for ln in entry[1:]]
    q = s["queue"]
    lines.append(
        f"page-request queue: pqon={q['pqon']} pqmf={q['pqmf']} pqof={q['pqof']} "
        f"pqh={q['pqh']} pqt={q['pqt']} ({q['size']} entries)"
    )
    o = s["outcome"]
    if "dc_checks" in o:
        lines.append("device context: " + _kv(o["dc_checks"]))
    if o["status"] == "queued":
        rec = o["record"]
        lines.append(f"queued: record {rec['index']} at PA {rec['pa']}: {_kv(rec['fields'])}")
    else:
        lines.append(f"not queued: {o['reason']}")
        rec = o.get("fault_record")
        if rec is not None:
            rf = dict(rec["fields"])
            lines.append(
                f"  fault record {rec['index']} at PA {rec['pa']}: "
                f"cause={rf.pop('cause')} ({rf.pop('cause_name')}) "
                f"ttyp={rf.pop('ttyp')} ({rf.pop('ttyp_name')})"
            )
    if "interrupt" in o:
        lines.append(f"  {o['interrupt']}")
    for resp in o["responses"]:
        lines.append(
            f"automatic Page Request Group Response: {resp['code_name']} "
            f"(code {resp['code']:#x}), {'with' if resp['with_pasid'] else 'without'} "
            f"PASID, payload {resp['payload']}"
        )
    if "response_note" in o:
        lines.append(o["response_note"])
    return lines


def _print_expectation(con: Console, s: JsonObj) -> None:
    ve = s.get("vector_expectation")
    if ve is not None:
        con.print(
            "matches the vector's expectation"
            if ve["matches"]
            else f"DIFFERS from the vector: {ve['difference']}",
            markup=False,
        )


def print_translation(con: Console, s: JsonObj, title: str) -> None:
    """Print one translation's explanation (from :func:`explain_translation`) as text."""
    r = s["request"]
    con.rule(title, style="none")
    pasid = r.get("process_id", "none")
    con.print(
        f"request: device_id {r['device_id']}  PASID {pasid}  priv {r['priv_req']}"
        f"  exec {r['exec_req']}  at {r['at']}  {r['rw']}  iova {r['iova']}",
        markup=False,
    )
    con.print(f"         TTYP {r['ttyp']} ({r['ttyp_name']})", markup=False)
    d = s["ddtp"]
    con.print(f"ddtp: mode {d['mode_name']}, root PPN {d['ppn']}", markup=False)
    for n, e in enumerate(s["walk"], 1):
        lines = _entry_text(e)
        con.print(f"{n:>2}. {lines[0]}", markup=False, style="bold")
        for ln in lines[1:]:
            con.print(f"    {ln}", markup=False)
    lines = _outcome_text(s["outcome"])
    style = "green" if s["outcome"]["status"] == "success" else "red"
    con.print(lines[0], markup=False, style=f"bold {style}")
    for ln in lines[1:]:
        con.print(ln, markup=False)
    _print_expectation(con, s)


def print_explanation(con: Console, data: JsonObj) -> None:
    """Print :func:`explain_vector`'s result as text."""
    if not data["steps"]:
        con.print(f"{data['vector']}: no translate or page_request steps", markup=False)
    for s in data["steps"]:
        if s.get("op") == "page_request":
            con.rule(f"step {s['step']} (page request)", style="none")
            lines = _page_request_text(s)
            con.print(lines[0], markup=False, style="bold")
            for ln in lines[1:]:
                con.print(ln, markup=False)
            _print_expectation(con, s)
            continue
        print_translation(con, s, f"step {s['step']}")


def explain_vector_step(
    path: Path, step: int | None, json_out: bool, msi_data: int | None = None
) -> None:
    """CLI entry (``iommusim explain``): print the explanation as text or JSON."""
    data = explain_vector(path, step, msi_data)
    if json_out:
        print(json.dumps(data, indent=1))
        return
    print_explanation(Console(highlight=False, soft_wrap=True), data)
