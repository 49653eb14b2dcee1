"""``iommusim explain``: how the model translates one request, step by step.

:func:`explain_translation` is the one explainer: it translates a request on a
:class:`~iommusim.hw.riscv.iommu.RiscvIommu` with the walk trace on. Two front ends feed it: a
conformance vector replayed (:class:`iommusim.conformance.vectors.Replay`) up to each
``translate`` step (:func:`explain_vector`), and an IOMMU programmed over raw memory images
(:mod:`iommusim.conformance.rawexplain`, ``iommusim explain --memory``). During the
translation the engine records every structure its walk reads
(:attr:`TranslationEngine.trace`, named records tagged with the stage and the access each
page-table walk served), and this module decodes each one with the spec tables of
:mod:`iommusim.bits.riscv`: DDT entries and the device context (riscv-iommu: "Process to locate
the Device-context"), PDT entries and the process context ("Process to locate the
Process-context"), first-stage and G-stage PTEs ("Process to translate an IOVA", privileged
spec "Two-Stage Address Translation"), A/D updates, MSI PTEs ("Process to translate addresses
of MSIs": the MSI window match, the interrupt file number, the interrupt file or MRIF the PTE
names and, for MRIF mode, which MRIF bit a write sets -- AIA "MSI PTE, MRIF mode"), then the
outcome and the fault record written ("Fault/Event-Queue (FQ)").

``page_request`` steps are explained too ("PCIe ATS Page Request handling", "Page-Request-Queue
(PQ)"): the message decoded, the device-context lookup and its EN_ATS/EN_PRI/PRPR, the queue
state, then the record queued or the fault, and the automatic "Page Request Group Response".

The explanation is built as plain JSON-able data first; the text and ``--json`` renderings
print the same data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final, Literal

from rich.console import Console

from iommusim.bits.fields import Access, Layout
from iommusim.bits.riscv.pgtable import SV32, SV39
from iommusim.bits.riscv.queues import FQ_RECORD, PQ_RECORD
from iommusim.bits.riscv.structures import (
    DC_FSC,
    DC_IOHGATP,
    DC_MSIPTP,
    DC_TA,
    DC_TC,
    DDTE,
    MSI_ADDR_MASK,
    MSIPTE_BASIC,
    MSIPTE_MRIF,
    PC_FSC,
    PC_TA,
    PDTE,
)
from iommusim.conformance.vectors import (
    Replay,
    compare,
    load_vector,
    request_from_json,
    response_json,
)
from iommusim.errors import IommusimError
from iommusim.hw.pgtable import AdUpdate, PteRead
from iommusim.hw.riscv.faults import (
    ATS_SUCCESS_CAUSES,
    CAUSE_NAMES,
    DTF_REPORTED,
    TTYP_NAMES,
)
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.mrif import identity_of, mrif_slot
from iommusim.hw.riscv.params import RiscvIommuParams
from iommusim.hw.riscv.regs import (
    FQCSR_FQMF,
    FQCSR_FQOF,
    FQCSR_FQON,
    IPSR_PIP,
    PQCSR_PQMF,
    PQCSR_PQOF,
    PQCSR_PQON,
    Registers,
)
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

__all__ = [
    "explain_translation",
    "explain_vector",
    "explain_vector_step",
    "print_explanation",
    "print_translation",
]

JsonObj = dict[str, Any]

_PPN_MASK: Final = (1 << 44) - 1
_TC_PDTV: Final = 1 << 5
_TC_DTF: Final = 1 << 4
_TC_DPE: Final = 1 << 9
_TC_SXL: Final = 1 << 11
_TC_EN_ATS: Final = 1 << 1
_TC_EN_PRI: Final = 1 << 2
_TC_PRPR: Final = 1 << 6

#: PCIe "Page Request Group Response" codes the IOMMU sends itself (riscv-iommu: "PCIe ATS
#: Page Request handling").
PRG_RESPONSE_NAMES: Final = {0: "Success", 1: "Invalid Request", 0xF: "Response Failure"}
_MSI_RULE: Final = "(GPA >> 12) & ~mask == pattern & ~mask"
_MRIF_LAYOUT: Final = (
    "identity D: pending bit D mod 64 of the doubleword at MRIF + 16 * (D div "
    "64), enable bit the same bit at + 8"
)

#: riscv-iommu: "Device-directory-table pointer (ddtp)", iommu_mode encodings.
DDTP_MODE_NAMES: Final = {0: "Off", 1: "Bare", 2: "1LVL", 3: "2LVL", 4: "3LVL"}
#: iosatp / PC.fsc.MODE, per SXL (the encodings alias: 8 is Sv39 or Sv32).
IOSATP_MODE_NAMES: Final = ({0: "Bare", 8: "Sv39", 9: "Sv48", 10: "Sv57"}, {0: "Bare", 8: "Sv32"})
#: iohgatp.MODE, per fctl.GXL.
IOHGATP_MODE_NAMES: Final = (
    {0: "Bare", 8: "Sv39x4", 9: "Sv48x4", 10: "Sv57x4"},
    {0: "Bare", 8: "Sv32x4"},
)
#: pdtp.MODE (riscv-iommu: "First-Stage context (fsc)").
PDTP_MODE_NAMES: Final = {0: "Bare", 1: "PD8", 2: "PD17", 3: "PD20"}
#: msiptp.MODE.
MSIPTP_MODE_NAMES: Final = {0: "Off", 1: "Flat"}
#: Svpbmt memory types.
PBMT_NAMES: Final = {0: "PMA", 1: "NC", 2: "IO", 3: "reserved"}

_DC_WORD_NAMES: Final = (
    "tc",
    "iohgatp",
    "ta",
    "fsc",
    "msiptp",
    "msi_addr_mask",
    "msi_addr_pattern",
    "reserved",
)


#: Fields printed in decimal whatever their width (cause numbers are decimal in the spec).
_DECIMAL_FIELDS: Final = frozenset({"cause", "ttyp"})


def _hex(v: int) -> str:
    return f"{v:#x}"


def _fields(lay: Layout, value: int) -> JsonObj:
    """Decode ``value`` with ``lay``: wide fields as hex strings, narrow ones as ints."""
    out: JsonObj = {}
    for f in lay.fields:
        if f.access is Access.RSVD:
            continue
        v = f.get(value)
        if f.access is Access.CUSTOM and not v:
            continue
        out[f.name] = _hex(v) if f.width >= 8 and f.name not in _DECIMAL_FIELDS else v
    rsvd = value & lay.reserved_mask
    if rsvd:
        out["reserved_bits_set"] = _hex(rsvd)
    return out


def _mode_name(names: dict[int, str], mode: int) -> str:
    return names.get(mode, f"reserved ({mode})")


# ------------------------------------------------------------------------------ decoders
def _dc_entry(pa: int | None, words: tuple[int, ...], gxl: int) -> JsonObj:
    """The device context, doubleword by doubleword (riscv-iommu: "Device-context fields")."""
    tc = words[0]
    sxl = int(bool(tc & _TC_SXL))
    pdtv = bool(tc & _TC_PDTV)
    dws: list[JsonObj] = []
    for k, w in enumerate(words):
        name = _DC_WORD_NAMES[k]
        d: JsonObj = {"name": name, "value": _hex(w)}
        if name == "tc":
            d["fields"] = _fields(DC_TC, w)
        elif name == "iohgatp":
            d["fields"] = _fields(DC_IOHGATP, w)
            d["mode_name"] = _mode_name(IOHGATP_MODE_NAMES[gxl], w >> 60)
        elif name == "ta":
            d["fields"] = _fields(DC_TA, w)
        elif name == "fsc":
            d["fields"] = _fields(DC_FSC, w)
            # tc.PDTV selects what fsc holds.
            d["as"] = "pdtp" if pdtv else "iosatp"
            d["mode_name"] = _mode_name(
                PDTP_MODE_NAMES if pdtv else IOSATP_MODE_NAMES[sxl], w >> 60
            )
        elif name == "msiptp":
            d["fields"] = _fields(DC_MSIPTP, w)
            d["mode_name"] = _mode_name(MSIPTP_MODE_NAMES, w >> 60)
        elif name == "msi_addr_mask":
            d["fields"] = _fields(MSI_ADDR_MASK, w)
        elif name == "msi_addr_pattern":
            f = _fields(MSI_ADDR_MASK, w)
            f["pattern"] = f.pop("mask")
            d["fields"] = f
        dws.append(d)
    out: JsonObj = {
        "kind": "dc",
        "format": "extended" if len(words) > 4 else "base",
        "size_bytes": 8 * len(words),
    }
    if pa is None:
        out["cached"] = True
    else:
        out["pa"] = _hex(pa)
    out["doublewords"] = dws
    return out


def _pc_entry(gpa: int | None, spa: int | None, ta: int, fsc: int, sxl: int) -> JsonObj:
    out: JsonObj = {"kind": "pc"}
    if gpa is None or spa is None:
        out["cached"] = True
    else:
        out["address"] = _hex(gpa)
        out["pa"] = _hex(spa)
    out["ta"] = {"value": _hex(ta), "fields": _fields(PC_TA, ta)}
    out["fsc"] = {
        "value": _hex(fsc),
        "fields": _fields(PC_FSC, fsc),
        "mode_name": _mode_name(IOSATP_MODE_NAMES[sxl], fsc >> 60),
    }
    return out


def _pte_entry(
    stage: str, level: int, addr: int, pa: int, pte: int, size: int, label: str
) -> JsonObj:
    fmt = SV39 if size == 8 else SV32  # every 8-byte (4-byte) format has this PTE layout
    f = _fields(fmt.pte, pte)
    if not pte & fmt.valid_mask:
        role = "invalid"
    elif pte & (fmt.read_mask | fmt.exec_mask):
        role = "leaf"
    elif pte & fmt.write_mask:
        role = "reserved encoding (W without R)"
    else:
        role = "pointer"
    out: JsonObj = {
        "kind": "pte",
        "stage": stage,
        "label": label,
        "level": level,
        "address": _hex(addr),
        "pa": _hex(pa),
        "value": _hex(pte),
        "pte_bytes": size,
        "role": role,
        "fields": f,
    }
    if role == "pointer":
        out["next_table_pa"] = _hex(fmt.oa_of(pte))
    return out


def _msipte_entry(gpa: int, idx: int, pa: int, w0: int, w1: int) -> JsonObj:
    m = w0 >> 1 & 3
    out: JsonObj = {
        "kind": "msipte",
        "gpa": _hex(gpa),
        "file_index": idx,
        "pa": _hex(pa),
        "w0": _hex(w0),
        "w1": _hex(w1),
    }
    if m == 3:
        out["mode"] = "basic"
        out["fields"] = _fields(MSIPTE_BASIC, w0)
    elif m == 1:
        out["mode"] = "MRIF"
        f = _fields(MSIPTE_MRIF, w1 << 64 | w0)
        f["mrif_addr_pa"] = _hex(MSIPTE_MRIF["mrif_addr"].get(w1 << 64 | w0) << 9)
        out["fields"] = f
    else:
        out["mode"] = f"reserved ({m})"
        out["fields"] = _fields(MSIPTE_BASIC, w0)
    return out


def _extract(x: int, mask: int) -> int:
    """riscv-iommu: "Process to translate addresses of MSIs": ``extract(x, y)`` packs the bits
    of ``x`` selected by the 1 bits of ``y`` at the least-significant end."""
    out = k = 0
    while mask:
        low = mask & -mask
        if x & low:
            out |= 1 << k
        k += 1
        mask ^= low
    return out


def _msi_window(dc_words: tuple[int, ...] | None, gpa: int) -> JsonObj | None:
    """Whether ``gpa`` is a virtual interrupt file of the device (riscv-iommu: "Process to
    translate addresses of MSIs", "MSI address mask and pattern"); None without MSI
    translation (base-format DC or msiptp.MODE Off)."""
    if dc_words is None or len(dc_words) < 8 or dc_words[4] >> 60 != 1:
        return None
    mask = MSI_ADDR_MASK["mask"].get(dc_words[5])
    pattern = MSI_ADDR_MASK["mask"].get(dc_words[6])
    page = gpa >> 12
    match = page & ~mask == pattern & ~mask
    out: JsonObj = {
        "gpa": _hex(gpa),
        "gpa_page": _hex(page),
        "mask": _hex(mask),
        "pattern": _hex(pattern),
        "rule": _MSI_RULE,
        "matches": match,
    }
    if match:
        out["file_index"] = _extract(page, mask)
        out["msi_pt_pa"] = _hex((dc_words[4] & _PPN_MASK) << 12)
    return out


def _context_entry(
    walk: list[JsonObj],
    t: DdteRead | DcRead | Misconfigured,
    gxl: int,
    dc_words: tuple[int, ...] | None,
) -> tuple[int, ...] | None:
    """Append the explanation of a device-directory record to ``walk``; return the DC's
    words once it is read (``dc_words`` otherwise)."""
    if isinstance(t, DdteRead):
        walk.append(
            {
                "kind": "ddte",
                "level": t.level,
                "pa": _hex(t.pa),
                "value": _hex(t.value),
                "fields": _fields(DDTE, t.value),
            }
        )
    elif isinstance(t, DcRead):
        walk.append(_dc_entry(t.pa, t.words, gxl))
        return t.words
    else:
        walk.append({"kind": "misconfigured", "structure": t.structure, "reason": t.reason})
    return dc_words


def _request_gpa(trace: list[TraceRecord], req: Request, resp: Response) -> int | None:
    """The GPA the request's first stage produced, from the walk trace (None if unknown)."""
    for t in reversed(trace):
        if isinstance(t, PteRead) and t.stage == "g" and t.served == "request":
            return t.va
    if not trace:
        return None
    if not any(isinstance(t, PteRead) and t.stage == "s1" for t in trace):
        return req.iova
    if resp.ok and not any(isinstance(t, PteRead) and t.stage == "g" for t in trace):
        return resp.pa  # Bare G-stage: GPA = SPA
    return None


def _mrif_detail(
    params: RiscvIommuParams,
    ram: PhysicalMemory,
    req: Request,
    resp: Response,
    msi_data: int | None,
) -> JsonObj:
    """Where a device write through this MRIF-mode PTE goes (AIA: "Format of a
    memory-resident interrupt file", "MSI PTE, MRIF mode"); with ``msi_data``, which MRIF bit
    it sets and the bits as they are in memory now. The translation itself writes nothing."""
    offset = req.iova & 0xFFF
    out: JsonObj = {
        "mrif_pa": _hex(resp.mrif_addr),
        "notice_pa": _hex(resp.notice_ppn << 12),
        "notice_data": resp.notice_nid,
        "layout": _MRIF_LAYOUT,
        "notice_policy": params.mrif_notice,
        "recorded": False,
    }
    if not req.is_write:
        out["access"] = (
            "a read of an MRIF-mode page: not an MSI (AIA: should return zero, or be aborted)"
        )
        return out
    if offset & 3:
        out["access"] = "not 4-byte aligned: aborted as unsupported (AIA)"
        return out
    if offset >> 3:
        out["access"] = f"page offset {offset:#x}: A[11:3] is not 0, the write is discarded"
        return out
    be = bool(offset & 4)
    if be and not params.mrif_be_msi:
        out["access"] = "address bit 2 is 1 and big-endian MSIs are not supported: discarded"
        return out
    out["access"] = (
        f"a 32-bit write here is an MSI with {'big' if be else 'little'}-endian "
        "data D (D[31:11] must be 0, else it is discarded)"
    )
    if msi_data is None:
        out["recorded"] = True
        return out
    identity, _, reason = identity_of(offset, msi_data, params.mrif_be_msi)
    out["msi_data"] = _hex(msi_data & 0xFFFF_FFFF)
    if identity < 0:
        out["identity"] = None
        out["discarded"] = reason
        return out
    out["recorded"] = True
    pending_pa, enable_pa, bit = mrif_slot(resp.mrif_addr, identity)
    pending = ram.read64(pending_pa) >> bit & 1
    enabled = ram.read64(enable_pa) >> bit & 1
    out.update(
        identity=identity,
        pending_pa=_hex(pending_pa),
        enable_pa=_hex(enable_pa),
        bit=bit,
        pending_now=pending,
        enabled_now=enabled,
        notice=(
            "sent"
            if params.mrif_notice == "always" or enabled
            else "not sent (the identity is not enabled)"
        ),
    )
    return out


#: Label of a G-stage PTE by the access its walk served (privileged spec "Two-Stage Address
#: Translation"): an implicit read of the structure read next (first-stage PTE, PDT entry,
#: process context, all at guest-physical addresses), the implicit write of a first-stage A/D
#: update (riscv-iommu: "IOMMU updating of PTE accessed (A) and dirty (D) updates"), or the
#: request's own GPA (the first-stage leaf's output, or the IOVA itself when the first stage
#: is Bare).
_G_LABELS: Final = {
    "implicit-read": "G-stage (implicit access for the next structure)",
    "implicit-write": "G-stage (implicit write for the A/D update)",
    "request": "G-stage (the request's guest-physical address)",
}


def _g_labels(trace: list[TraceRecord]) -> list[str]:
    """Label each G-stage PTE of ``trace`` with the access its walk served (see
    :data:`_G_LABELS`); other records get ``""``."""
    return [_G_LABELS[t.served] if isinstance(t, PteRead) and t.stage == "g" else "" for t in trace]


# ------------------------------------------------------------------------------ replay
def _request_json(req: Request, ttyp: int) -> JsonObj:
    at_name = {0: "untranslated", 1: "translated", 2: "ats"}[req.at]
    out: JsonObj = {"device_id": _hex(req.device_id), "pid_valid": int(req.pid_valid)}
    if req.pid_valid:
        out["process_id"] = _hex(req.process_id)
    out.update(
        priv_req=int(req.priv_req),
        exec_req=int(req.exec_req),
        at=at_name,
        rw="write" if req.is_write else "read",
        iova=_hex(req.iova),
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
                out.update(ppn=_hex(resp.ppn), s=int(resp.s), size_lg2=resp.size_lg2)
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
                    mrif_addr=_hex(resp.mrif_addr),
                    notice_ppn=_hex(resp.notice_ppn),
                    notice_nid=_hex(resp.notice_nid),
                )
            else:
                out.update(pa=_hex(resp.pa), size_lg2=resp.size_lg2)
        return out
    out.update(cause=resp.cause, cause_name=CAUSE_NAMES.get(resp.cause, "?"))
    return out


def _read_record(regs: Registers, ram: PhysicalMemory, index: int) -> JsonObj:
    """Decode fault-queue record ``index`` (riscv-iommu: "Fault/Event-Queue (FQ)"), each
    doubleword in the byte order of fctl.BE."""
    addr = ((regs.fqb >> 10 & _PPN_MASK) << 12) + index * 32
    data = ram.read(addr, 32)
    order: Literal["big", "little"] = "big" if regs.fctl & 1 else "little"
    value = 0
    for k in range(4):
        value |= int.from_bytes(data[8 * k : 8 * k + 8], order) << (64 * k)
    f = _fields(FQ_RECORD, value)
    f["cause_name"] = CAUSE_NAMES.get(FQ_RECORD["cause"].get(value), "?")
    f["ttyp_name"] = TTYP_NAMES.get(FQ_RECORD["ttyp"].get(value), "?")
    return {"index": index, "pa": _hex(addr), "fields": f}


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
            "mode": ddtp & 0xF,
            "mode_name": _mode_name(DDTP_MODE_NAMES, ddtp & 0xF),
            "ppn": _hex(ddtp >> 10 & _PPN_MASK),
        },
    }
    outcome = _outcome(req, resp)

    record: JsonObj | None = None
    if regs.fqt != fqt0:
        record = _read_record(regs, ram, fqt0)
    walk: list[JsonObj] = []
    labels = _g_labels(trace)
    dc_words: tuple[int, ...] | None = None
    for k, t in enumerate(trace):
        if isinstance(t, DdteRead | DcRead | Misconfigured):
            dc_words = _context_entry(walk, t, gxl, dc_words)
        elif isinstance(t, PdteRead):
            walk.append(
                {
                    "kind": "pdte",
                    "level": t.level,
                    "address": _hex(t.addr),
                    "pa": _hex(t.pa),
                    "value": _hex(t.value),
                    "fields": _fields(PDTE, t.value),
                }
            )
        elif isinstance(t, PcRead):
            sxl = int(bool(dc_words[0] & _TC_SXL)) if dc_words else 0
            walk.append(_pc_entry(t.addr, t.pa, t.ta, t.fsc, sxl))
        elif isinstance(t, PteRead):
            # A G-stage PTE shows the GPA its walk translates, a first-stage one its own
            # (guest-physical) address.
            if t.stage == "s1":
                label, addr = "first stage", t.addr
            else:
                label, addr = labels[k], t.va
            walk.append(_pte_entry(t.stage, t.level, addr, t.pa, t.pte, t.pte_bytes, label))
        elif isinstance(t, AdUpdate):
            walk.append(
                {
                    "kind": "ad",
                    "pa": _hex(t.pa),
                    "old": _hex(t.old),
                    "new": _hex(t.new),
                    "set": [
                        n
                        for n, m in (("A", SV39.accessed_mask), ("D", SV39.dirty_mask))
                        if t.new & m and not t.old & m
                    ],
                }
            )
        else:
            e = _msipte_entry(t.gpa, t.idx, t.pa, t.w0, t.w1)
            if e["mode"] == "basic":
                # The guest interrupt file (of an IMSIC) the write goes to instead.
                e["interrupt_file_pa"] = _hex((t.w0 >> 10 & _PPN_MASK) << 12)
            walk.append(e)
    if dc_words is None and cached_dc is not None and 2 <= ddtp & 0xF <= 4:
        # A device-directory-cache hit: the walk read no memory for the DC.
        dc_words = cached_dc.words
        walk.insert(0, _dc_entry(None, cached_dc.words, gxl))
        tc = cached_dc.words[0]
        pid = req.process_id if req.pid_valid else 0
        cached_pc = eng.pdtc.get((req.device_id, pid))
        uses_pc = (
            tc & _TC_PDTV and cached_dc.fsc_mode and (req.pid_valid or tc & _TC_DPE) and req.at != 1
        )
        if (
            cached_pc is not None
            and uses_pc
            and not any(isinstance(t, PdteRead | PcRead) for t in trace)
        ):
            walk.insert(
                1, _pc_entry(None, None, cached_pc.ta, cached_pc.fsc, int(bool(tc & _TC_SXL)))
            )
    out["walk"] = walk
    for e in walk:
        if e["kind"] == "msipte":
            window = _msi_window(dc_words, int(e["gpa"], 16))
            if window is not None:
                e["window"] = window
    if resp.ok and req.at != 2:
        if resp.is_mrif:
            outcome["mrif"] = _mrif_detail(iommu.params, ram, req, resp, msi_data)
        elif not resp.is_msi and not any(isinstance(t, MsiPteRead) for t in trace):
            gpa = _request_gpa(trace, req, resp)
            window = _msi_window(dc_words, gpa) if gpa is not None else None
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
    if dc_words is not None and dc_words[0] & _TC_DTF and resp.cause not in DTF_REPORTED:
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
    pq_size = 1 << ((regs.pqb & 0x1F) + 1)
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
    request: JsonObj = {"rid": _hex(rid), "dsv": dsv}
    if dsv:
        request["dseg"] = _hex(_num(msg, "dseg"))
    request.update(device_id=_hex(did_guess or 0), pv=pv)
    if pv:
        request.update(pid=_hex(_num(msg, "pid")), priv=_num(msg, "priv"), exec=_num(msg, "exec"))
    request.update(
        payload=_hex(payload),
        kind=kind,
        fields={
            "r": r,
            "w": w,
            "l": last,
            "prgi": _hex(payload >> 3 & 0x1FF),
            "page_address": _hex(payload & ~0xFFF & (1 << 64) - 1),
        },
    )

    walk: list[JsonObj] = []
    dc_words: tuple[int, ...] | None = None
    for t in trace:
        if isinstance(t, DdteRead | DcRead | Misconfigured):
            dc_words = _context_entry(walk, t, gxl, dc_words)
    if dc_words is None and cached_dc is not None and 2 <= ddtp & 0xF <= 4:
        dc_words = cached_dc.words
        walk.insert(0, _dc_entry(None, cached_dc.words, gxl))

    out: JsonObj = {
        "step": i,
        "op": "page_request",
        "request": request,
        "ddtp": {
            "mode": ddtp & 0xF,
            "mode_name": _mode_name(DDTP_MODE_NAMES, ddtp & 0xF),
            "ppn": _hex(ddtp >> 10 & _PPN_MASK),
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
            "en_ats": int(bool(tc & _TC_EN_ATS)),
            "en_pri": int(bool(tc & _TC_EN_PRI)),
            "prpr": int(bool(tc & _TC_PRPR)),
        }
    if regs.pqt != pqt0:
        outcome["status"] = "queued"
        outcome["record"] = _read_pq_record(rp, pqt0)
    else:
        outcome["status"] = "not queued"
        outcome["reason"] = _not_queued_reason(
            ddtp & 0xF, tc, dc_words is not None, pqcsr0, regs.pqcsr
        )
        if regs.fqt != fqt0:
            outcome["fault_record"] = _read_record(regs, rp.ram, fqt0)
    if not ipsr0 & IPSR_PIP and regs.ipsr & IPSR_PIP:
        outcome["interrupt"] = "ipsr.pip set (pqcsr.pie = 1)"
    responses = []
    for ev in step.get("expect_events", []):
        code = _as_int(ev.get("payload", 0)) >> 44 & 0xF
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
    if not tc & _TC_EN_PRI or not tc & _TC_EN_ATS:
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
    addr = ((regs.pqb >> 10 & _PPN_MASK) << 12) + index * 16
    data = rp.ram.read(addr, 16)
    order: Literal["big", "little"] = "big" if regs.fctl & 1 else "little"
    value = int.from_bytes(data[:8], order) | int.from_bytes(data[8:], order) << 64
    return {"index": index, "pa": _hex(addr), "fields": _fields(PQ_RECORD, value)}


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
