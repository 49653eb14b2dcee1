"""Device and process contexts: decoding and the configuration checks.

riscv-iommu: "Device-context fields", "Device-context configuration checks",
"Process-context fields", "Process-context configuration checks".
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.riscv.regs import cap
from iommusim.bits.riscv.structures import (
    DC_FSC,
    DC_MSIPTP,
    DC_TA,
    DC_TC,
    MSI_ADDR_MASK,
    PC_FSC,
    PC_TA,
)
from iommusim.hw.riscv.params import RiscvIommuParams

__all__ = ["DeviceContext", "ProcessContext", "dc_misconfigured", "pc_misconfigured"]

# The page-table format of each iosatp / iohgatp MODE (per SXL / GXL, since the encodings
# alias: Sv32 and Sv39 are both 8) is in iommusim.bits.riscv.pgtable (FIRST_STAGE_FORMATS,
# G_STAGE_FORMATS); these are the capability bits that enable each with SXL / GXL = 0.
_S1_CAP_SXL0: Final = {8: cap.SV39, 9: cap.SV48, 10: cap.SV57}
_G_CAP_GXL0: Final = {8: cap.SV39X4, 9: cap.SV48X4, 10: cap.SV57X4}

PD8: Final = 1
PD17: Final = 2
PD20: Final = 3
_PD_CAP: Final = {PD8: cap.PD8, PD17: cap.PD17, PD20: cap.PD20}
#: process_id bits supported by each pdtp.MODE
PD_PID_BITS: Final = {PD8: 8, PD17: 17, PD20: 20}

_TC_RSVD: Final = DC_TC.reserved_mask
_TA_RSVD_NOQOS: Final = DC_TA.reserved_mask | DC_TA.mask("rcid", "mcid")
_TA_RSVD: Final = DC_TA.reserved_mask
_FSC_RSVD: Final = DC_FSC.reserved_mask
_MSIPTP_RSVD: Final = DC_MSIPTP.reserved_mask
_MSIMASK_RSVD: Final = MSI_ADDR_MASK.reserved_mask
_PC_TA_RSVD: Final = PC_TA.reserved_mask
_PC_FSC_RSVD: Final = PC_FSC.reserved_mask

TC_V: Final = DC_TC.mask("v")
TC_EN_ATS: Final = DC_TC.mask("en_ats")
TC_EN_PRI: Final = DC_TC.mask("en_pri")
TC_T2GPA: Final = DC_TC.mask("t2gpa")
TC_DTF: Final = DC_TC.mask("dtf")
TC_PDTV: Final = DC_TC.mask("pdtv")
TC_PRPR: Final = DC_TC.mask("prpr")
TC_GADE: Final = DC_TC.mask("gade")
TC_SADE: Final = DC_TC.mask("sade")
TC_DPE: Final = DC_TC.mask("dpe")
TC_SBE: Final = DC_TC.mask("sbe")
TC_SXL: Final = DC_TC.mask("sxl")


class DeviceContext:
    """A decoded device context: raw doublewords plus the fields the walk uses as plain ints."""

    __slots__ = (
        "did",
        "fsc",
        "fsc_mode",
        "fsc_ppn",
        "g_mode",
        "g_ppn",
        "gade",
        "gscid",
        "iohgatp",
        "msi_mask",
        "msi_pattern",
        "msiptp",
        "msiptp_mode",
        "msiptp_ppn",
        "pscid",
        "sade",
        "sbe",
        "sxl",
        "ta",
        "tc",
        "words",
    )

    def __init__(self, did: int, words: tuple[int, ...]) -> None:
        self.did = did
        self.words = words
        tc = self.tc = words[0]
        iohgatp = self.iohgatp = words[1]
        ta = self.ta = words[2]
        fsc = self.fsc = words[3]
        self.msiptp = words[4] if len(words) > 4 else 0
        self.msi_mask = words[5] if len(words) > 4 else 0
        self.msi_pattern = words[6] if len(words) > 4 else 0
        self.g_mode = iohgatp >> 60
        self.g_ppn = iohgatp & ((1 << 44) - 1)
        self.gscid = iohgatp >> 44 & 0xFFFF
        self.pscid = ta >> 12 & 0xFFFFF
        self.fsc_mode = fsc >> 60
        self.fsc_ppn = fsc & ((1 << 44) - 1)
        self.msiptp_mode = self.msiptp >> 60
        self.msiptp_ppn = self.msiptp & ((1 << 44) - 1)
        self.sade = bool(tc & TC_SADE)
        self.gade = bool(tc & TC_GADE)
        self.sbe = bool(tc & TC_SBE)
        self.sxl = bool(tc & TC_SXL)


class ProcessContext:
    """A decoded process context."""

    __slots__ = ("ens", "fsc", "mode", "ppn", "pscid", "sum", "ta")

    def __init__(self, ta: int, fsc: int) -> None:
        self.ta = ta
        self.fsc = fsc
        self.ens = bool(ta >> 1 & 1)
        self.sum = bool(ta >> 2 & 1)
        self.pscid = ta >> 12 & 0xFFFFF
        self.mode = fsc >> 60
        self.ppn = fsc & ((1 << 44) - 1)


def _s1_mode_ok(p: RiscvIommuParams, sxl: bool, mode: int) -> bool:
    if mode == 0:
        return True
    if sxl:
        return mode == 8 and p.has(cap.SV32)
    bit = _S1_CAP_SXL0.get(mode)
    return bit is not None and p.has(bit)


def dc_misconfigured(p: RiscvIommuParams, fctl: int, dc: DeviceContext) -> str | None:
    """The first violated rule of riscv-iommu "Device-context configuration checks", or None.

    The returned text names the rule, for explanations; a non-None result is cause 259.
    """
    tc = dc.tc
    extended = p.has(cap.MSI_FLAT)
    gxl = bool(fctl >> 2 & 1)
    be = bool(fctl & 1)
    if tc & _TC_RSVD:
        return "reserved bits set in tc"
    pdtv = bool(tc & TC_PDTV)
    if not pdtv and tc & TC_DPE:
        return "DPE is 1 while PDTV is 0"
    if dc.ta & (_TA_RSVD if p.has(cap.QOSID) else _TA_RSVD_NOQOS):
        return "reserved bits set in ta"
    if dc.fsc & _FSC_RSVD:
        return "reserved bits set in fsc"
    if extended:
        if dc.msiptp & _MSIPTP_RSVD:
            return "reserved bits set in msiptp"
        if dc.msi_mask & _MSIMASK_RSVD or dc.msi_pattern & _MSIMASK_RSVD:
            return "reserved bits set in msi_addr_mask/msi_addr_pattern"
        if dc.words[7]:
            return "reserved doubleword 7 is not zero"
    en_ats = bool(tc & TC_EN_ATS)
    en_pri = bool(tc & TC_EN_PRI)
    prpr = bool(tc & TC_PRPR)
    t2gpa = bool(tc & TC_T2GPA)
    if not p.has(cap.ATS) and (en_ats or en_pri or prpr):
        return "EN_ATS, EN_PRI or PRPR set without capabilities.ATS"
    if not en_ats and t2gpa:
        return "T2GPA set without EN_ATS"
    if not en_ats and en_pri:
        return "EN_PRI set without EN_ATS"
    if not en_pri and prpr:
        return "PRPR set without EN_PRI"
    if not p.has(cap.T2GPA) and t2gpa:
        return "T2GPA set without capabilities.T2GPA"
    if t2gpa and dc.g_mode == 0:
        return "T2GPA set with a Bare iohgatp"
    if pdtv:
        bit = _PD_CAP.get(dc.fsc_mode)
        if dc.fsc_mode != 0 and (bit is None or not p.has(bit)):
            return f"pdtp.MODE {dc.fsc_mode} not supported"
    elif not _s1_mode_ok(p, dc.sxl, dc.fsc_mode):
        return f"iosatp.MODE {dc.fsc_mode} not supported (SXL={int(dc.sxl)})"
    gm = dc.g_mode
    if gm:
        if gxl:
            if gm != 8 or not p.has(cap.SV32X4):
                return f"iohgatp.MODE {gm} not supported (GXL=1)"
        else:
            gbit = _G_CAP_GXL0.get(gm)
            if gbit is None or not p.has(gbit):
                return f"iohgatp.MODE {gm} not supported (GXL=0)"
    if extended and dc.msiptp_mode not in (0, 1):
        return f"msiptp.MODE {dc.msiptp_mode} is not Off or Flat"
    if gm and dc.g_ppn & 3:
        return "iohgatp.PPN is not 16-KiB aligned"
    if not p.has(cap.AMO_HWAD) and tc & (TC_SADE | TC_GADE):
        return "SADE/GADE set without capabilities.AMO_HWAD"
    sbe = bool(tc & TC_SBE)
    if not p.has(cap.END) and be != sbe:
        return "SBE differs from fctl.BE without capabilities.END"
    sxl = bool(tc & TC_SXL)
    if gxl and not sxl:
        return "SXL must be 1 when fctl.GXL is 1"
    if not gxl and not p.gxl_writable and sxl:
        return "SXL must be 0 when fctl.GXL is 0 and not writable"
    if not p.fctl_be_writable and sbe != be:
        return "SBE must equal fctl.BE when fctl.BE is not writable"
    if p.has(cap.QOSID):
        rcid = dc.ta >> 40 & 0xFFF
        mcid = dc.ta >> 52 & 0xFFF
        if rcid & ~(p.qosid_mask & 0xFFF) or mcid & ~(p.qosid_mask >> 16 & 0xFFF):
            return "RCID/MCID wider than supported"
    if extended and gm == 0 and dc.msiptp_mode != 0:
        # Recommended check: a Bare iohgatp with msiptp not Off is a reserved setting.
        return "msiptp.MODE is not Off with a Bare iohgatp"
    return None


def pc_misconfigured(p: RiscvIommuParams, sxl: bool, pc: ProcessContext) -> str | None:
    """The first violated rule of riscv-iommu "Process-context configuration checks"."""
    if pc.ta & _PC_TA_RSVD:
        return "reserved bits set in PC.ta"
    if pc.fsc & _PC_FSC_RSVD:
        return "reserved bits set in PC.fsc"
    if not _s1_mode_ok(p, sxl, pc.mode):
        return f"PC.fsc.MODE {pc.mode} not supported (SXL={int(sxl)})"
    return None
