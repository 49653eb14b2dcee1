"""The walk explained: a request (or a vector step) translated with the walk trace on, and the
trace turned into decoded entries, the outcome and the fault record written.

:func:`explain_translation` is the one explainer; :func:`explain_vector` replays a conformance
vector (:class:`~iommusim.conformance.vectors.Replay`) up to each ``translate`` or
``page_request`` step and explains it (riscv-iommu: "Process to translate an IOVA", "PCIe ATS
Page Request handling", "Page-Request-Queue (PQ)"). Builds data only; :mod:`.render` prints it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal

from iommusim.bits.pcie import PAGE_REQUEST, PRG_RESPONSE
from iommusim.bits.riscv.causes import CAUSE_NAMES, DTF_REPORTED, TTYP_NAMES
from iommusim.bits.riscv.pgtable import SV39
from iommusim.bits.riscv.queues import FQ_RECORD, PQ_RECORD
from iommusim.bits.riscv.regs import (
    CQB,
    DDTP,
    FCTL_BE,
    FQCSR_FQMF,
    FQCSR_FQOF,
    FQCSR_FQON,
    IPSR_PIP,
    PQCSR_PQMF,
    PQCSR_PQOF,
    PQCSR_PQON,
    queue_index_mask,
)
from iommusim.bits.riscv.structures import (
    MSIPTE_BASIC,
    PDTE,
)
from iommusim.conformance.explain.decode import (
    DDTP_MODE_NAMES,
    PBMT_NAMES,
    PRG_RESPONSE_NAMES,
    TC_DPE,
    TC_DTF,
    TC_EN_ATS,
    TC_EN_PRI,
    TC_PDTV,
    TC_PRPR,
    TC_SXL,
    context_entry,
    dc_entry,
    fields,
    g_labels,
    hex,
    mode_name,
    mrif_detail,
    msi_window,
    msipte_entry,
    pc_entry,
    pte_entry,
    request_gpa,
)
from iommusim.conformance.vectors import (
    JsonObj,
    Replay,
    compare,
    load_vector,
    request_from_json,
    response_json,
)
from iommusim.errors import IommusimError
from iommusim.hw.pgtable import AdUpdate, PteRead
from iommusim.hw.riscv.faults import ATS_SUCCESS_CAUSES
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.regs import Registers
from iommusim.hw.riscv.transaction import Request, Response
from iommusim.hw.riscv.translate import (
    DcRead,
    DdteRead,
    Misconfigured,
    MsiPteRead,
    PcRead,
    PdteRead,
    TraceRecord,
)
from iommusim.mem import PhysicalMemory

__all__ = ["explain_translation", "explain_vector"]

_DDTP_MODE: Final = DDTP["iommu_mode"]
_DDTP_PPN: Final = DDTP["ppn"]
_QB_PPN: Final = CQB["ppn"]  # the three queue bases share one layout


# ------------------------------------------------------------------------------ replay
def _request_json(req: Request, ttyp: int) -> JsonObj:
    at_name = {0: "untranslated", 1: "translated", 2: "ats"}[req.at]
    out: JsonObj = {"device_id": hex(req.device_id), "pid_valid": int(req.pid_valid)}
    if req.pid_valid:
        out["process_id"] = hex(req.process_id)
    out.update(
        priv_req=int(req.priv_req),
        exec_req=int(req.exec_req),
        at=at_name,
        rw="write" if req.is_write else "read",
        iova=hex(req.iova),
    )
    if req.at == 2:
        out["no_write"] = int(req.no_write)
    out.update(ttyp=ttyp, ttyp_name=TTYP_NAMES.get(ttyp, "?"))
    return out


def _outcome(req: Request, resp: Response) -> JsonObj:
    out: JsonObj = {"status": resp.status}
    if resp.ok:
        if req.at == 2:
            out.update(
                r=int(resp.r),
                w=int(resp.w),
                exe=int(resp.exe),
                priv=int(resp.priv),
                u=int(resp.u),
                g=int(resp.g),
            )
            if (resp.r or resp.w) and not resp.u:
                out.update(ppn=hex(resp.ppn), s=int(resp.s), size_lg2=resp.size_lg2)
            if resp.cause:
                # riscv-iommu: "PCIe ATS translation request handling": these faults are
                # answered with Success and no permission, and are not recorded.
                out.update(cause=resp.cause, cause_name=CAUSE_NAMES.get(resp.cause, "?"))
        else:
            out.update(
                pbmt=resp.pbmt,
                pbmt_name=PBMT_NAMES[resp.pbmt],
                is_msi=int(resp.is_msi),
                is_mrif=int(resp.is_mrif),
            )
            if resp.is_mrif:
                out.update(
                    mrif_addr=hex(resp.mrif_addr),
                    notice_ppn=hex(resp.notice_ppn),
                    notice_nid=hex(resp.notice_nid),
                )
            else:
                out.update(pa=hex(resp.pa), size_lg2=resp.size_lg2)
        return out
    out.update(cause=resp.cause, cause_name=CAUSE_NAMES.get(resp.cause, "?"))
    return out


def _read_record(regs: Registers, ram: PhysicalMemory, index: int) -> JsonObj:
    """Decode fault-queue record ``index`` (riscv-iommu: "Fault/Event-Queue (FQ)"), each
    doubleword in the byte order of fctl.BE."""
    addr = (_QB_PPN.get(regs.fqb) << 12) + index * 32
    data = ram.read(addr, 32)
    order: Literal["big", "little"] = "big" if regs.fctl & FCTL_BE else "little"
    value = 0
    for k in range(4):
        value |= int.from_bytes(data[8 * k : 8 * k + 8], order) << (64 * k)
    f = fields(FQ_RECORD, value)
    f["cause_name"] = CAUSE_NAMES.get(FQ_RECORD["cause"].get(value), "?")
    f["ttyp_name"] = TTYP_NAMES.get(FQ_RECORD["ttyp"].get(value), "?")
    return {"index": index, "pa": hex(addr), "fields": f}


def _explain_step(rp: Replay, i: int, step: JsonObj, msi_data: int | None = None) -> JsonObj:
    """Run translate step ``i`` of a replayed vector with the walk trace on and build its
    explanation; the step's ``expect`` slot gets the model's observation, as
    :meth:`Replay.run_step` does, and the explanation says whether it matches the vector's."""
    expected = step.get("expect")
    req_json = step.get("req")
    if not isinstance(req_json, dict):
        raise IommusimError(f"steps[{i}].req must be an object")
    req = request_from_json(req_json, f"steps[{i}].req")
    resp, explained = explain_translation(rp.iommu, rp.ram, req, msi_data)
    step["expect"] = response_json(req, resp)
    if rp.on_step is not None:
        rp.on_step(i, step, rp.iommu)
    out: JsonObj = {"step": i, **explained}
    if isinstance(expected, dict):
        _expectation(out, step, "translate", "expect", expected)
    return out


def explain_translation(
    iommu: RiscvIommu, ram: PhysicalMemory, req: Request, msi_data: int | None = None
) -> tuple[Response, JsonObj]:
    """Translate ``req`` on ``iommu`` with the walk trace on (riscv-iommu: "Process to
    translate an IOVA") and explain it: the request, ``ddtp``, every structure the walk read
    (``walk``) and the ``outcome`` with the fault record written, if any. ``ram`` is the
    memory behind the IOMMU's port, read (never written) to decode the fault record and the
    MRIF bits. Vectors and raw memory dumps share this one explainer."""
    eng = iommu.engine
    regs = iommu.regs
    ddtp = regs.ddtp
    gxl = regs.fctl >> 2 & 1
    cached_dc = eng.ddtc.get(req.device_id)
    fqt0, fqcsr0 = regs.fqt, regs.fqcsr
    trace: list[TraceRecord] = []
    eng.trace = trace
    try:
        resp = iommu.translate(req)
    finally:
        eng.trace = None

    out: JsonObj = {
        "request": _request_json(req, req.ttyp),
        "ddtp": {
            "mode": _DDTP_MODE.get(ddtp),
            "mode_name": mode_name(DDTP_MODE_NAMES, _DDTP_MODE.get(ddtp)),
            "ppn": hex(_DDTP_PPN.get(ddtp)),
        },
    }
    outcome = _outcome(req, resp)

    record: JsonObj | None = None
    if regs.fqt != fqt0:
        record = _read_record(regs, ram, fqt0)
    walk: list[JsonObj] = []
    labels = g_labels(trace)
    dc_words: tuple[int, ...] | None = None
    for k, t in enumerate(trace):
        if isinstance(t, DdteRead | DcRead | Misconfigured):
            dc_words = context_entry(walk, t, gxl, dc_words)
        elif isinstance(t, PdteRead):
            walk.append(
                {
                    "kind": "pdte",
                    "level": t.level,
                    "address": hex(t.addr),
                    "pa": hex(t.pa),
                    "value": hex(t.value),
                    "fields": fields(PDTE, t.value),
                }
            )
        elif isinstance(t, PcRead):
            sxl = int(bool(dc_words[0] & TC_SXL)) if dc_words else 0
            walk.append(pc_entry(t.addr, t.pa, t.ta, t.fsc, sxl))
        elif isinstance(t, PteRead):
            # A G-stage PTE shows the GPA its walk translates, a first-stage one its own
            # (guest-physical) address.
            if t.stage == "s1":
                label, addr = "first stage", t.addr
            else:
                label, addr = labels[k], t.va
            walk.append(pte_entry(t.stage, t.level, addr, t.pa, t.pte, t.pte_bytes, label))
        elif isinstance(t, AdUpdate):
            walk.append(
                {
                    "kind": "ad",
                    "pa": hex(t.pa),
                    "old": hex(t.old),
                    "new": hex(t.new),
                    "set": [
                        n
                        for n, m in (("A", SV39.accessed_mask), ("D", SV39.dirty_mask))
                        if t.new & m and not t.old & m
                    ],
                }
            )
        else:
            e = msipte_entry(t.gpa, t.idx, t.pa, t.w0, t.w1)
            if e["mode"] == "basic":
                # The guest interrupt file (of an IMSIC) the write goes to instead.
                e["interrupt_file_pa"] = hex(MSIPTE_BASIC["ppn"].get(t.w0) << 12)
            walk.append(e)
    if dc_words is None and cached_dc is not None and 2 <= _DDTP_MODE.get(ddtp) <= 4:
        # A device-directory-cache hit: the walk read no memory for the DC.
        dc_words = cached_dc.words
        walk.insert(0, dc_entry(None, cached_dc.words, gxl))
        tc = cached_dc.words[0]
        pid = req.process_id if req.pid_valid else 0
        cached_pc = eng.pdtc.get((req.device_id, pid))
        uses_pc = (
            tc & TC_PDTV and cached_dc.fsc_mode and (req.pid_valid or tc & TC_DPE) and req.at != 1
        )
        if (
            cached_pc is not None
            and uses_pc
            and not any(isinstance(t, PdteRead | PcRead) for t in trace)
        ):
            walk.insert(
                1, pc_entry(None, None, cached_pc.ta, cached_pc.fsc, int(bool(tc & TC_SXL)))
            )
    out["walk"] = walk
    for e in walk:
        if e["kind"] == "msipte":
            window = msi_window(dc_words, int(e["gpa"], 16))
            if window is not None:
                e["window"] = window
    if resp.ok and req.at != 2:
        if resp.is_mrif:
            outcome["mrif"] = mrif_detail(iommu.params, ram, req, resp, msi_data)
        elif not resp.is_msi and not any(isinstance(t, MsiPteRead) for t in trace):
            gpa = request_gpa(trace, req, resp)
            window = msi_window(dc_words, gpa) if gpa is not None else None
            if window is not None:
                outcome["msi_window"] = window  # not an MSI: the regular tables translated it

    if not resp.ok or resp.cause:
        if record is not None:
            outcome["fault_record"] = record
        else:
            outcome["fault_record"] = None
            outcome["record_note"] = _no_record_reason(req, resp, dc_words, fqcsr0, regs.fqcsr)
        if resp.cause in (257, 261, 265, 268, 269, 270, 271, 274, 1, 5, 7):
            outcome["note"] = (
                "the walk stopped at a memory access not shown above, answered "
                "with an access fault or poisoned data"
            )
    out["outcome"] = outcome
    return resp, out


def _no_record_reason(
    req: Request, resp: Response, dc_words: tuple[int, ...] | None, fqcsr0: int, fqcsr1: int
) -> str:
    """Why no fault record was written (riscv-iommu: "Fault/Event-Queue (FQ)", DC.tc.DTF)."""
    if req.at == 2 and resp.ok and resp.cause in ATS_SUCCESS_CAUSES:
        return "no fault record: the ATS completion reports no permission instead"
    if dc_words is not None and dc_words[0] & TC_DTF and resp.cause not in DTF_REPORTED:
        return "fault record suppressed: DTF=1"
    if not fqcsr0 & FQCSR_FQON:
        return "fault record suppressed: queue off"
    if fqcsr0 & (FQCSR_FQMF | FQCSR_FQOF):
        return "fault record not written: fqcsr.fqmf/fqof already set"
    if fqcsr1 & FQCSR_FQOF:
        return "fault record dropped: queue full (fqcsr.fqof set)"
    if fqcsr1 & FQCSR_FQMF:
        return "fault record write faulted (fqcsr.fqmf set)"
    return "no fault record written"


_EXPLAINED: Final = ("translate", "page_request")


def explain_vector(path: Path, step: int | None, msi_data: int | None = None) -> JsonObj:
    """Replay the vector at ``path`` and explain translate or page-request step ``step``
    (every such step when None). ``msi_data`` is the 32-bit value of the device's write, used
    to show which MRIF bit an MRIF-mode MSI sets. Raises :class:`IommusimError` for a step of
    another kind."""
    vec = load_vector(path)
    steps = vec["steps"]
    if step is not None:
        if not 0 <= step < len(steps):
            raise IommusimError(
                f"{path}: step {step} is out of range (the vector has {len(steps)} steps)"
            )
        op = steps[step].get("op") if isinstance(steps[step], dict) else None
        if op not in _EXPLAINED:
            raise IommusimError(
                f"{path}: step {step} is a {op!r} step, not a translate step or a page_request step"
            )
    rp = Replay(vec)
    out: list[JsonObj] = []
    for i, st in rp.steps():
        if step is not None and i > step:
            break
        op = st.get("op")
        if op in _EXPLAINED and (step is None or i == step):
            if op == "translate":
                out.append(_explain_step(rp, i, st, msi_data))
            else:
                out.append(_explain_page_request(rp, i, st))
        else:
            rp.run_step(i, st)
    return {"vector": str(path), "steps": out}


# ------------------------------------------------------------------------------ page requests
def _num(obj: JsonObj, key: str) -> int:
    return _as_int(obj.get(key, 0))


def _explain_page_request(rp: Replay, i: int, step: JsonObj) -> JsonObj:
    """Run page_request step ``i`` with the walk trace on and build its explanation
    (riscv-iommu: "PCIe ATS Page Request handling", "Page-Request-Queue (PQ)")."""
    iommu = rp.iommu
    eng = iommu.engine
    regs = iommu.regs
    expected = step.get("expect_events")
    ddtp = regs.ddtp
    gxl = regs.fctl >> 2 & 1
    pqcsr0, pqh0, pqt0, fqt0, ipsr0 = regs.pqcsr, regs.pqh, regs.pqt, regs.fqt, regs.ipsr
    pq_size = queue_index_mask(regs.pqb) + 1
    msg = step.get("msg")
    did_guess = None
    if isinstance(msg, dict):
        rid = _num(msg, "rid")
        did_guess = (_num(msg, "dseg") << 16 | rid) if _num(msg, "dsv") else rid
    cached_dc = eng.ddtc.get(did_guess) if did_guess is not None else None
    trace: list[TraceRecord] = []
    eng.trace = trace
    try:
        rp.run_step(i, step)  # validates the message (FormatError) and fills expect_events
    finally:
        eng.trace = None
    if not isinstance(msg, dict):  # run_step has rejected it already
        raise IommusimError(f"steps[{i}].msg must be an object")
    rid = _num(msg, "rid")
    dsv = _num(msg, "dsv")
    pv = _num(msg, "pv")
    payload = _num(msg, "payload")
    r, w, last = payload & 1, payload >> 1 & 1, payload >> 2 & 1
    stop = bool(last and not r and not w)
    if stop:
        kind = "Stop Marker"
    else:
        kind = "Page Request" + (" (last in its group: needs a response)" if last else "")
    request: JsonObj = {"rid": hex(rid), "dsv": dsv}
    if dsv:
        request["dseg"] = hex(_num(msg, "dseg"))
    request.update(device_id=hex(did_guess or 0), pv=pv)
    if pv:
        request.update(pid=hex(_num(msg, "pid")), priv=_num(msg, "priv"), exec=_num(msg, "exec"))
    request.update(
        payload=hex(payload),
        kind=kind,
        fields={
            "r": r,
            "w": w,
            "l": last,
            "prgi": hex(PAGE_REQUEST["prgi"].get(payload)),
            "page_address": hex(payload & ~0xFFF & (1 << 64) - 1),
        },
    )

    walk: list[JsonObj] = []
    dc_words: tuple[int, ...] | None = None
    for t in trace:
        if isinstance(t, DdteRead | DcRead | Misconfigured):
            dc_words = context_entry(walk, t, gxl, dc_words)
    if dc_words is None and cached_dc is not None and 2 <= _DDTP_MODE.get(ddtp) <= 4:
        dc_words = cached_dc.words
        walk.insert(0, dc_entry(None, cached_dc.words, gxl))

    out: JsonObj = {
        "step": i,
        "op": "page_request",
        "request": request,
        "ddtp": {
            "mode": _DDTP_MODE.get(ddtp),
            "mode_name": mode_name(DDTP_MODE_NAMES, _DDTP_MODE.get(ddtp)),
            "ppn": hex(_DDTP_PPN.get(ddtp)),
        },
        "walk": walk,
        "queue": {
            "pqon": int(bool(pqcsr0 & PQCSR_PQON)),
            "pqmf": int(bool(pqcsr0 & PQCSR_PQMF)),
            "pqof": int(bool(pqcsr0 & PQCSR_PQOF)),
            "pqh": pqh0,
            "pqt": pqt0,
            "size": pq_size,
        },
    }
    outcome: JsonObj = {}
    tc = dc_words[0] if dc_words is not None else None
    if tc is not None:
        outcome["dc_checks"] = {
            "en_ats": int(bool(tc & TC_EN_ATS)),
            "en_pri": int(bool(tc & TC_EN_PRI)),
            "prpr": int(bool(tc & TC_PRPR)),
        }
    if regs.pqt != pqt0:
        outcome["status"] = "queued"
        outcome["record"] = _read_pq_record(rp, pqt0)
    else:
        outcome["status"] = "not queued"
        outcome["reason"] = _not_queued_reason(
            _DDTP_MODE.get(ddtp), tc, dc_words is not None, pqcsr0, regs.pqcsr
        )
        if regs.fqt != fqt0:
            outcome["fault_record"] = _read_record(regs, rp.ram, fqt0)
    if not ipsr0 & IPSR_PIP and regs.ipsr & IPSR_PIP:
        outcome["interrupt"] = "ipsr.pip set (pqcsr.pie = 1)"
    responses = []
    for ev in step.get("expect_events", []):
        code = PRG_RESPONSE["code"].get(_as_int(ev.get("payload", 0)))
        responses.append(
            {
                "type": ev.get("type"),
                "code": code,
                "code_name": PRG_RESPONSE_NAMES.get(code, "?"),
                "with_pasid": int(_as_int(ev.get("pv", 0))),
                "payload": ev.get("payload"),
            }
        )
    outcome["responses"] = responses
    if not responses and outcome["status"] != "queued":
        outcome["response_note"] = (
            "no response: a Stop Marker or a request with L = 0 is silently discarded"
            if stop or not last
            else "no response"
        )
    out["outcome"] = outcome
    if isinstance(expected, list):
        _expectation(out, step, "page_request", "expect_events", expected)
    return out


def _expectation(
    out: dict[str, Any], step: dict[str, Any], op: str, key: str, expected: object
) -> None:
    """Say whether the model's observation of ``step`` matches the vector's ``key``."""
    why = compare({"op": op, key: expected}, step)
    out["vector_expectation"] = {key: expected, "matches": why is None}
    if why is not None:
        out["vector_expectation"]["difference"] = why


def _as_int(v: Any) -> int:
    return int(v, 0) if isinstance(v, str) else int(v)


def _not_queued_reason(mode: int, tc: int | None, dc_found: bool, pqcsr0: int, pqcsr1: int) -> str:
    """Why a page request was not queued (riscv-iommu: "PCIe ATS Page Request handling")."""
    if mode == 0:
        return "ddtp.iommu_mode is Off (cause 256): Response Failure"
    if mode == 1:
        return "ddtp.iommu_mode is Bare: no device context (cause 260): Invalid Request"
    if not dc_found or tc is None:
        return "the device context could not be located (see the fault): Response Failure"
    if not tc & TC_EN_PRI or not tc & TC_EN_ATS:
        return "EN_PRI or EN_ATS is 0 (cause 260): Invalid Request"
    if not pqcsr0 & PQCSR_PQON:
        return "the page-request queue is off: Response Failure"
    if pqcsr0 & PQCSR_PQMF:
        return "pqcsr.pqmf is set (an earlier memory fault): Response Failure"
    if pqcsr0 & PQCSR_PQOF:
        return "pqcsr.pqof is set (an earlier overflow): Success"
    if pqcsr1 & PQCSR_PQOF:
        return "the queue is full (pqt == pqh - 1): pqof set, Success"
    if pqcsr1 & PQCSR_PQMF:
        return "writing the record faulted: pqmf set, Response Failure"
    return "not queued"


def _read_pq_record(rp: Replay, index: int) -> JsonObj:
    """Decode page-request-queue record ``index`` (riscv-iommu: "Page-Request-Queue (PQ)"),
    each doubleword in the byte order of fctl.BE."""
    regs = rp.iommu.regs
    addr = (_QB_PPN.get(regs.pqb) << 12) + index * 16
    data = rp.ram.read(addr, 16)
    order: Literal["big", "little"] = "big" if regs.fctl & FCTL_BE else "little"
    value = int.from_bytes(data[:8], order) | int.from_bytes(data[8:], order) << 64
    return {"index": index, "pa": hex(addr), "fields": fields(PQ_RECORD, value)}
