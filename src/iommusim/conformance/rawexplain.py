"""``iommusim explain --memory``: explain one request against a raw memory dump and a few
register values, for a driver developer who has a dump rather than a conformance vector.

The IOMMU is built from a preset or a ``capabilities`` value and is programmed only as
software programs it -- through its registers (``write_register``) and memory -- in the order
of riscv-iommu "Guidelines for initialization": ``fctl`` while the IOMMU is Off and its queues
are off ("Features-control register (fctl)": changing it otherwise is UNSPECIFIED), then the
fault queue (``fqb``, ``fqh``, ``fqcsr.fqen``, then ``fqcsr.fqon`` must read 1), then ``ddtp``
last. Every value is read back: a value the implementation does not keep (a WARL field it
legalises, a PPN wider than ``capabilities.PAS``) is reported instead of silently explaining
another configuration. Without any fault-queue register the IOMMU gets a scratch fault queue
on a page no image touches, so the record a fault writes can be decoded; it is written after
the walk, so it cannot change the translation.

The request is then explained by :func:`iommusim.conformance.explain.explain_translation`,
the explainer vectors use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from rich.console import Console

from iommusim.bits.riscv.causes import CAUSE_NAMES
from iommusim.bits.riscv.regs import (
    DDTP_BUSY,
    DDTP_MODE_MASK,
    DDTP_PPN_SHIFT,
    FCTL_BE,
    FCTL_GXL,
    FCTL_WSI,
    FQCSR_BUSY,
    FQCSR_FIE,
    FQCSR_FQEN,
    FQCSR_FQMF,
    FQCSR_FQOF,
    FQCSR_FQON,
    IGS_WSI,
    M32,
    M64,
    OFF_DDTP,
    OFF_FCTL,
    OFF_FQB,
    OFF_FQCSR,
    OFF_FQH,
    QB_LOG2SZM1_MASK,
    QB_PPN_SHIFT,
    cap,
    queue_index_mask,
)
from iommusim.conformance.explain import explain_translation, print_translation
from iommusim.conformance.rawmem import ImageMemory, MemoryImage
from iommusim.conformance.vectors import JsonObj
from iommusim.errors import FormatError, ModelError
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.params import PRESETS, RiscvIommuParams
from iommusim.hw.riscv.transaction import Request

__all__ = [
    "DEFAULT_PRESET",
    "REGISTERS",
    "RegisterValueError",
    "explain_raw",
    "iommu_params",
    "print_raw",
    "register_error",
]


class RegisterValueError(FormatError):
    """A register value this IOMMU cannot be programmed with: ``name=value: why``."""


#: The preset used when neither a preset nor capabilities are given: every capability, so
#: device contexts are in the extended format (capabilities.MSI_FLAT = 1).
DEFAULT_PRESET: Final = "full"

#: Registers that may be given, in the order they are programmed (riscv-iommu: "Guidelines
#: for initialization"), with their offset and size ("Register layout").
REGISTERS: Final[dict[str, tuple[int, int]]] = {
    "fctl": (OFF_FCTL, 4),
    "fqb": (OFF_FQB, 8),
    "fqh": (OFF_FQH, 4),
    "fqcsr": (OFF_FQCSR, 4),
    "ddtp": (OFF_DDTP, 8),
}
_FQ_REGISTERS: Final = ("fqb", "fqh", "fqcsr")

# Field masks of the registers, from the bit positions in hw/riscv/regs.py; the PPN fields
# are 44 bits wide (53:10) in ddtp and the queue bases.
_PPN_FIELD: Final = ((1 << 44) - 1) << DDTP_PPN_SHIFT
_FCTL_FIELDS: Final = FCTL_BE | FCTL_WSI | FCTL_GXL
_DDTP_FIELDS: Final = DDTP_MODE_MASK | DDTP_BUSY | _PPN_FIELD
_QB_FIELDS: Final = QB_LOG2SZM1_MASK | ((1 << 44) - 1) << QB_PPN_SHIFT
_FQCSR_FIELDS: Final = FQCSR_FQEN | FQCSR_FIE | FQCSR_FQMF | FQCSR_FQOF | FQCSR_FQON | FQCSR_BUSY
_DDTP_MODES: Final = ("Off", "Bare", "1LVL", "2LVL", "3LVL")


def iommu_params(preset: str | None, capabilities: int | None, fctl: int) -> RiscvIommuParams:
    """The IOMMU to explain on: ``PRESETS[preset]`` (``DEFAULT_PRESET`` when both are None),
    or the full preset with ``capabilities`` in place of its own. With ``capabilities`` the
    choices the spec leaves to the implementation follow them: fctl.BE is writable when
    capabilities.END is 1 and otherwise fixed at the given ``fctl``'s BE (an IOMMU with one
    endianness), fctl.WSI is fixed at 1 when IGS is WSI ("Features-control register
    (fctl)"), fctl.GXL is writable. Raises :class:`FormatError` for an unknown preset or
    capabilities the model cannot be (e.g. a PAS outside 13..56)."""
    if capabilities is None:
        name = DEFAULT_PRESET if preset is None else preset
        if name not in PRESETS:
            raise FormatError(
                f"the preset must be one of {', '.join(sorted(PRESETS))}, not {name!r}"
            )
        return PRESETS[name]
    if not 0 <= capabilities <= M64:
        raise FormatError(f"capabilities must be a 64-bit value, not {capabilities:#x}")
    end = bool(capabilities >> cap.END & 1)
    reset_fctl = FCTL_WSI if capabilities >> cap.IGS & 3 == IGS_WSI else 0
    if not end:
        reset_fctl |= fctl & FCTL_BE
    try:
        return PRESETS[DEFAULT_PRESET].with_(
            capabilities=capabilities,
            fctl=reset_fctl,
            fctl_be_writable=end,
            gxl_writable=True,
        )
    except ModelError as e:
        raise FormatError(str(e)) from None


def register_error(name: str, value: int) -> str | None:
    """Why ``value`` cannot be programmed into register ``name`` whatever the
    implementation (unknown register, too wide, reserved bits, a field software cannot set),
    or None. The fields are those of riscv-iommu "Register layout"."""
    if name == "capabilities":
        return "capabilities is read-only: give it with --capabilities"
    if name not in REGISTERS:
        return f"the register must be one of {', '.join(sorted(REGISTERS))}, not {name!r}"
    size = REGISTERS[name][1]
    if value > (M32 if size == 4 else M64):
        return f"{name} must be a {8 * size}-bit value, not {value:#x}"
    if name == "fctl" and value & ~_FCTL_FIELDS:
        return f"fctl bits 31:3 (reserved and custom) must be 0, not {value & ~_FCTL_FIELDS:#x}"
    if name == "ddtp":
        if value & ~_DDTP_FIELDS:
            return f"ddtp reserved bits must be 0, not {value & ~_DDTP_FIELDS:#x}"
        mode = value & DDTP_MODE_MASK
        if mode >= len(_DDTP_MODES):
            return f"ddtp.iommu_mode must be 0..4 ({', '.join(_DDTP_MODES)}), not {mode} (reserved)"
        if value & DDTP_BUSY:
            return "ddtp.busy must be 0 (the IOMMU sets it while a write takes effect), not 1"
    if name == "fqb" and value & ~_QB_FIELDS:
        return f"fqb reserved bits must be 0, not {value & ~_QB_FIELDS:#x}"
    if name == "fqcsr":
        if value & ~_FQCSR_FIELDS:
            return f"fqcsr reserved bits must be 0, not {value & ~_FQCSR_FIELDS:#x}"
        if value & (FQCSR_FQMF | FQCSR_FQOF):
            return (
                "fqcsr.fqmf and fqcsr.fqof must be 0 (only the IOMMU sets them; software "
                "writes 1 to clear them), not "
                f"{int(bool(value & FQCSR_FQMF))} and {int(bool(value & FQCSR_FQOF))}"
            )
    return None


def _kept(iommu: RiscvIommu, name: str, value: int, source: str) -> str | None:
    """Why register ``name`` does not read back what was written, or None."""
    offset, size = REGISTERS[name]
    got = iommu.read_register(offset, size)
    pas = iommu.params.pas
    if name == "fctl":
        for field, bit in (("BE", FCTL_BE), ("WSI", FCTL_WSI), ("GXL", FCTL_GXL)):
            if (got ^ value) & bit:
                return (
                    f"fctl.{field} must be {int(bool(value & bit))}, but this IOMMU ({source}) "
                    f"does not let software change it: it reads {int(bool(got & bit))}"
                )
        return None
    if name == "ddtp":
        mode = value & DDTP_MODE_MASK
        if got & DDTP_MODE_MASK != mode:
            return (
                f"ddtp.iommu_mode {_DDTP_MODES[mode]} is not supported by this IOMMU "
                f"({source}): ddtp keeps {got:#x}"
            )
        if got & _PPN_FIELD != value & _PPN_FIELD:
            return (
                f"ddtp.PPN must fit capabilities.PAS ({pas} bits), not {value >> DDTP_PPN_SHIFT:#x}"
            )
        return None
    if name == "fqb":
        if got != value:
            return f"fqb.PPN must fit capabilities.PAS ({pas} bits), not {value >> QB_PPN_SHIFT:#x}"
        return None
    if name == "fqh":
        if got != value:
            entries = queue_index_mask(iommu.regs.fqb) + 1
            return f"fqh must be below the fault queue's {entries} entries (fqb), not {value}"
        return None
    # fqcsr: fqen and fie are RW; fqon follows fqen ("Guidelines for initialization": poll
    # fqcsr.fqon until it reads 1).
    rw = FQCSR_FQEN | FQCSR_FIE
    if (got ^ value) & rw or bool(got & FQCSR_FQON) != bool(value & FQCSR_FQEN):
        return f"fqcsr reads {got:#x} after writing {value:#x} ({source})"
    return None


def _program(
    iommu: RiscvIommu, mem: ImageMemory, registers: Mapping[str, int], source: str
) -> JsonObj:
    """Program ``registers`` in initialization order and check each reads back; returns the
    fault queue's description. Raises :class:`FormatError` (``name=value: why``)."""
    for name, value in registers.items():
        why = register_error(name, value)
        if why is not None:
            raise RegisterValueError(f"{name}={value:#x}: {why}")
    if "ddtp" not in registers:
        raise RegisterValueError(
            "ddtp=HEX is required: the IOMMU resets with ddtp.iommu_mode Off, which "
            "disallows every transaction"
        )
    values = dict(registers)
    scratch = not any(n in registers for n in _FQ_REGISTERS)
    if scratch:
        page = mem.free_page(1 << iommu.params.pas)
        if page is not None:  # a 2-entry queue (LOG2SZ-1 = 0): one record fits
            values.update(fqb=page >> 12 << QB_PPN_SHIFT, fqh=0, fqcsr=FQCSR_FQEN)
    for name in REGISTERS:
        if name not in values:
            continue
        offset, size = REGISTERS[name]
        iommu.write_register(offset, size, values[name])
        why = _kept(iommu, name, values[name], source)
        if why is not None:
            raise RegisterValueError(f"{name}={values[name]:#x}: {why}")
    regs = iommu.regs
    return {
        "pa": f"{(regs.fqb >> QB_PPN_SHIFT) << 12:#x}",
        "entries": queue_index_mask(regs.fqb) + 1,
        "on": int(bool(regs.fqcsr & FQCSR_FQON)),
        "scratch": scratch and "fqb" in values,
    }


def explain_raw(
    images: Sequence[MemoryImage],
    params: RiscvIommuParams,
    registers: Mapping[str, int],
    req: Request,
    *,
    source: str,
    msi_data: int | None = None,
) -> JsonObj:
    """Explain ``req`` on an IOMMU with ``params`` programmed with ``registers`` over the
    raw ``images`` (zero elsewhere). ``source`` names the IOMMU in messages (``preset
    full``). Returns ``status``, ``cause`` and ``pa`` (None when absent), what was set up,
    and ``steps``: the one translation's explanation, shaped as a vector step's. The files
    are never written. Raises :class:`FormatError` for images that overlap or cannot be
    read, :class:`RegisterValueError` for register values this IOMMU cannot hold."""
    with ImageMemory(images) as mem:
        iommu = RiscvIommu(mem, params)
        fq = _program(iommu, mem, registers, source)
        programmed = {n: f"{iommu.read_register(*REGISTERS[n]):#x}" for n in REGISTERS}
        resp, step = explain_translation(iommu, mem, req, msi_data)
    cause = resp.cause or None
    pa: int | None = None
    if resp.ok and not resp.is_mrif and (req.at != 2 or ((resp.r or resp.w) and not resp.u)):
        pa = resp.pa
    return {
        "status": resp.status,
        "cause": cause,
        "cause_name": None if cause is None else CAUSE_NAMES.get(cause, "?"),
        "pa": None if pa is None else f"{pa:#x}",
        "memory": [
            {"file": str(im.path), "pa": f"{im.base_pa:#x}", "size_bytes": im.size_bytes}
            for im in images
        ],
        "iommu": {"source": source, "capabilities": f"{params.capabilities:#x}"},
        "registers": programmed,
        "fault_queue": fq,
        "steps": [{"step": 0, **step}],
    }


def print_raw(con: Console, data: JsonObj) -> None:
    """Print :func:`explain_raw`'s result as text: the set-up, then the explanation."""
    for im in data["memory"]:
        con.print(
            f"memory: {im['file']} ({im['size_bytes']:#x} bytes) at PA {im['pa']}", markup=False
        )
    iommu = data["iommu"]
    caps = f"capabilities {iommu['capabilities']}"
    con.print(
        f"iommu: {iommu['source']}" + ("" if iommu["source"] == caps else f", {caps}"),
        markup=False,
    )
    con.print(
        "registers: " + " ".join(f"{k}={v}" for k, v in data["registers"].items()), markup=False
    )
    fq = data["fault_queue"]
    if fq["on"]:
        note = " (scratch: no fqb/fqh/fqcsr given)" if fq["scratch"] else ""
        con.print(f"fault queue: {fq['entries']} entries at PA {fq['pa']}{note}", markup=False)
    else:
        con.print("fault queue: off (fqcsr.fqen = 0): faults are not recorded", markup=False)
    for s in data["steps"]:
        print_translation(con, s, "request")
