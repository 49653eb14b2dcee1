"""Decoders for ``iommusim explain``: every structure a walk reads, as JSON-able fields.

Decoding is generic over the layouts of :mod:`iommusim.bits.riscv` (:func:`fields` turns any
layout and value into named fields); the functions here add what a layout cannot say: mode
names, the address a PTE maps, the MSI window match and, for an MRIF, which bit a write sets
(riscv-iommu: "Data Structures", "Process to translate addresses of MSIs"; AIA "MSI PTE, MRIF
mode"). No output, no replay.
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.fields import Access, Layout
from iommusim.bits.riscv.pgtable import SV32, SV39
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
)
from iommusim.conformance.vectors import JsonObj
from iommusim.hw.pgtable import PteRead
from iommusim.hw.riscv.mrif import identity_of, mrif_slot
from iommusim.hw.riscv.params import RiscvIommuParams
from iommusim.hw.riscv.transaction import Request, Response
from iommusim.hw.riscv.translate import (
    DcRead,
    DdteRead,
    Misconfigured,
    TraceRecord,
)
from iommusim.mem import PhysicalMemory

__all__ = [
    "DDTP_MODE_NAMES",
    "IOHGATP_MODE_NAMES",
    "IOSATP_MODE_NAMES",
    "MSIPTP_MODE_NAMES",
    "PBMT_NAMES",
    "PDTP_MODE_NAMES",
    "PPN_MASK",
    "PRG_RESPONSE_NAMES",
    "TC_DPE",
    "TC_DTF",
    "TC_EN_ATS",
    "TC_EN_PRI",
    "TC_PDTV",
    "TC_PRPR",
    "TC_SXL",
    "context_entry",
    "dc_entry",
    "fields",
    "g_labels",
    "hex",
    "mode_name",
    "mrif_detail",
    "msi_window",
    "msipte_entry",
    "pc_entry",
    "pte_entry",
    "request_gpa",
]


PPN_MASK: Final = (1 << DDTE["ppn"].width) - 1
TC_PDTV: Final = DC_TC.mask("pdtv")
TC_DTF: Final = DC_TC.mask("dtf")
TC_DPE: Final = DC_TC.mask("dpe")
TC_SXL: Final = DC_TC.mask("sxl")
TC_EN_ATS: Final = DC_TC.mask("en_ats")
TC_EN_PRI: Final = DC_TC.mask("en_pri")
TC_PRPR: Final = DC_TC.mask("prpr")

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


def hex(v: int) -> str:
    return f"{v:#x}"


def fields(lay: Layout, value: int) -> JsonObj:
    """Decode ``value`` with ``lay``: wide fields as hex strings, narrow ones as ints."""
    out: JsonObj = {}
    for f in lay.fields:
        if f.access is Access.RSVD:
            continue
        v = f.get(value)
        if f.access is Access.CUSTOM and not v:
            continue
        out[f.name] = hex(v) if f.width >= 8 and f.name not in _DECIMAL_FIELDS else v
    rsvd = value & lay.reserved_mask
    if rsvd:
        out["reserved_bits_set"] = hex(rsvd)
    return out


def mode_name(names: dict[int, str], mode: int) -> str:
    return names.get(mode, f"reserved ({mode})")


# ------------------------------------------------------------------------------ decoders
def dc_entry(pa: int | None, words: tuple[int, ...], gxl: int) -> JsonObj:
    """The device context, doubleword by doubleword (riscv-iommu: "Device-context fields")."""
    tc = words[0]
    sxl = int(bool(tc & TC_SXL))
    pdtv = bool(tc & TC_PDTV)
    dws: list[JsonObj] = []
    for k, w in enumerate(words):
        name = _DC_WORD_NAMES[k]
        d: JsonObj = {"name": name, "value": hex(w)}
        if name == "tc":
            d["fields"] = fields(DC_TC, w)
        elif name == "iohgatp":
            d["fields"] = fields(DC_IOHGATP, w)
            d["mode_name"] = mode_name(IOHGATP_MODE_NAMES[gxl], w >> 60)
        elif name == "ta":
            d["fields"] = fields(DC_TA, w)
        elif name == "fsc":
            d["fields"] = fields(DC_FSC, w)
            # tc.PDTV selects what fsc holds.
            d["as"] = "pdtp" if pdtv else "iosatp"
            d["mode_name"] = mode_name(PDTP_MODE_NAMES if pdtv else IOSATP_MODE_NAMES[sxl], w >> 60)
        elif name == "msiptp":
            d["fields"] = fields(DC_MSIPTP, w)
            d["mode_name"] = mode_name(MSIPTP_MODE_NAMES, w >> 60)
        elif name == "msi_addr_mask":
            d["fields"] = fields(MSI_ADDR_MASK, w)
        elif name == "msi_addr_pattern":
            f = fields(MSI_ADDR_MASK, w)
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
        out["pa"] = hex(pa)
    out["doublewords"] = dws
    return out


def pc_entry(gpa: int | None, spa: int | None, ta: int, fsc: int, sxl: int) -> JsonObj:
    out: JsonObj = {"kind": "pc"}
    if gpa is None or spa is None:
        out["cached"] = True
    else:
        out["address"] = hex(gpa)
        out["pa"] = hex(spa)
    out["ta"] = {"value": hex(ta), "fields": fields(PC_TA, ta)}
    out["fsc"] = {
        "value": hex(fsc),
        "fields": fields(PC_FSC, fsc),
        "mode_name": mode_name(IOSATP_MODE_NAMES[sxl], fsc >> 60),
    }
    return out


def pte_entry(
    stage: str, level: int, addr: int, pa: int, pte: int, size: int, label: str
) -> JsonObj:
    fmt = SV39 if size == 8 else SV32  # every 8-byte (4-byte) format has this PTE layout
    f = fields(fmt.pte, pte)
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
        "address": hex(addr),
        "pa": hex(pa),
        "value": hex(pte),
        "pte_bytes": size,
        "role": role,
        "fields": f,
    }
    if role == "pointer":
        out["next_table_pa"] = hex(fmt.oa_of(pte))
    return out


def msipte_entry(gpa: int, idx: int, pa: int, w0: int, w1: int) -> JsonObj:
    m = w0 >> 1 & 3
    out: JsonObj = {
        "kind": "msipte",
        "gpa": hex(gpa),
        "file_index": idx,
        "pa": hex(pa),
        "w0": hex(w0),
        "w1": hex(w1),
    }
    if m == 3:
        out["mode"] = "basic"
        out["fields"] = fields(MSIPTE_BASIC, w0)
    elif m == 1:
        out["mode"] = "MRIF"
        f = fields(MSIPTE_MRIF, w1 << 64 | w0)
        f["mrif_addr_pa"] = hex(MSIPTE_MRIF["mrif_addr"].get(w1 << 64 | w0) << 9)
        out["fields"] = f
    else:
        out["mode"] = f"reserved ({m})"
        out["fields"] = fields(MSIPTE_BASIC, w0)
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


def msi_window(dc_words: tuple[int, ...] | None, gpa: int) -> JsonObj | None:
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
        "gpa": hex(gpa),
        "gpa_page": hex(page),
        "mask": hex(mask),
        "pattern": hex(pattern),
        "rule": _MSI_RULE,
        "matches": match,
    }
    if match:
        out["file_index"] = _extract(page, mask)
        out["msi_pt_pa"] = hex((dc_words[4] & PPN_MASK) << 12)
    return out


def context_entry(
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
                "pa": hex(t.pa),
                "value": hex(t.value),
                "fields": fields(DDTE, t.value),
            }
        )
    elif isinstance(t, DcRead):
        walk.append(dc_entry(t.pa, t.words, gxl))
        return t.words
    else:
        walk.append({"kind": "misconfigured", "structure": t.structure, "reason": t.reason})
    return dc_words


def request_gpa(trace: list[TraceRecord], req: Request, resp: Response) -> int | None:
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


def mrif_detail(
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
        "mrif_pa": hex(resp.mrif_addr),
        "notice_pa": hex(resp.notice_ppn << 12),
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
    out["msi_data"] = hex(msi_data & 0xFFFF_FFFF)
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
        pending_pa=hex(pending_pa),
        enable_pa=hex(enable_pa),
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


def g_labels(trace: list[TraceRecord]) -> list[str]:
    """Label each G-stage PTE of ``trace`` with the access its walk served (see
    :data:`_G_LABELS`); other records get ``""``."""
    return [_G_LABELS[t.served] if isinstance(t, PteRead) and t.stage == "g" else "" for t in trace]
