"""Encoders for RISC-V IOMMU commands, built from the spec tables in :mod:`iommusim.bits.riscv`.

riscv-iommu: "Command-Queue (CQ)": every command is two little-endian doublewords; the
layouts below are 128-bit values whose low doubleword is word 0.
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.riscv.queues import (
    CMD_ATS,
    CMD_IODIR,
    CMD_IOFENCE,
    CMD_IOTINVAL,
    FUNC_ATS_INVAL,
    FUNC_ATS_PRGR,
    FUNC_IODIR_INVAL_DDT,
    FUNC_IODIR_INVAL_PDT,
    FUNC_IOFENCE_C,
    FUNC_IOTINVAL_GVMA,
    FUNC_IOTINVAL_VMA,
    OP_ATS,
    OP_IODIR,
    OP_IOFENCE,
    OP_IOTINVAL,
)

__all__ = [
    "ats_inval",
    "ats_prgr",
    "iodir_inval_ddt",
    "iodir_inval_pdt",
    "iofence_c",
    "iotinval_gvma",
    "iotinval_vma",
]


Command = tuple[int, int]
_M64: Final = (1 << 64) - 1


def _split(v: int) -> Command:
    return v & _M64, v >> 64


def iotinval_vma(
    pscid: int | None = None, addr: int | None = None, gscid: int | None = None
) -> Command:
    """IOTINVAL.VMA: all entries, or those of ``pscid``, optionally only the page at ``addr``."""
    f: dict[str, int] = {"opcode": OP_IOTINVAL, "func3": FUNC_IOTINVAL_VMA}
    if pscid is not None:
        f.update(pscv=1, pscid=pscid)
    if gscid is not None:
        f.update(gv=1, gscid=gscid)
    if addr is not None:
        f.update(av=1, addr=addr >> 12)
    return _split(CMD_IOTINVAL.encode(f))


def iotinval_gvma(gscid: int | None = None, gpa: int | None = None) -> Command:
    f: dict[str, int] = {"opcode": OP_IOTINVAL, "func3": FUNC_IOTINVAL_GVMA}
    if gscid is not None:
        f.update(gv=1, gscid=gscid)
    if gpa is not None:
        f.update(av=1, addr=gpa >> 12)
    return _split(CMD_IOTINVAL.encode(f))


def iodir_inval_ddt(did: int | None = None) -> Command:
    f: dict[str, int] = {"opcode": OP_IODIR, "func3": FUNC_IODIR_INVAL_DDT}
    if did is not None:
        f.update(dv=1, did=did)
    return _split(CMD_IODIR.encode(f))


def iodir_inval_pdt(did: int, pid: int) -> Command:
    return _split(
        CMD_IODIR.encode(opcode=OP_IODIR, func3=FUNC_IODIR_INVAL_PDT, dv=1, did=did, pid=pid)
    )


def iofence_c(
    pr: bool = True, pw: bool = True, av: bool = False, addr: int = 0, data: int = 0
) -> Command:
    return _split(
        CMD_IOFENCE.encode(
            opcode=OP_IOFENCE,
            func3=FUNC_IOFENCE_C,
            pr=int(pr),
            pw=int(pw),
            av=int(av),
            addr=addr >> 2,
            data=data,
        )
    )


def ats_inval(rid: int, payload: int, pid: int | None = None) -> Command:
    f: dict[str, int] = {"opcode": OP_ATS, "func3": FUNC_ATS_INVAL, "rid": rid, "payload": payload}
    if pid is not None:
        f.update(pv=1, pid=pid)
    return _split(CMD_ATS.encode(f))


def ats_prgr(rid: int, payload: int, pid: int | None = None) -> Command:
    f: dict[str, int] = {"opcode": OP_ATS, "func3": FUNC_ATS_PRGR, "rid": rid, "payload": payload}
    if pid is not None:
        f.update(pv=1, pid=pid)
    return _split(CMD_ATS.encode(f))
