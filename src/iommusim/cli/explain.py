"""``iommusim explain``: its arguments and their validation.

Two modes, exactly one per call:

* ``iommusim explain VECTOR [--step N]``: replay a conformance vector and explain its
  translate / page-request steps (:mod:`iommusim.conformance.explain`);
* ``iommusim explain --memory FILE@ADDR ... --reg ddtp=HEX --device-id N --iova ADDR``:
  explain one request against raw memory images and register values
  (:mod:`iommusim.conformance.rawexplain`); with ``--iommu smmuv3`` on an Arm SMMUv3
  programmed with ``--reg strtab_base=HEX --reg strtab_base_cfg=HEX`` (the StreamID is
  ``--device-id``, the SubstreamID ``--pasid``: :mod:`iommusim.hw.smmuv3.explain`).

Every bad flag is a :class:`FormatError` whose message starts with the flag and the value as
given ("--memory dump.bin@0x1000: no such file"), which ``main`` prints with exit code 2.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from iommusim.errors import FormatError

if TYPE_CHECKING:
    from iommusim.conformance.rawmem import MemoryImage

__all__ = ["add_explain_parser", "cmd_explain"]

_AT_KINDS = ("untranslated", "translated", "ats")
#: Flags of the raw-memory mode (attribute name, flag).
_RAW_FLAGS = (
    ("memory", "--memory"),
    ("iommu", "--iommu"),
    ("preset", "--preset"),
    ("capabilities", "--capabilities"),
    ("reg", "--reg"),
    ("device_id", "--device-id"),
    ("iova", "--iova"),
    ("pasid", "--pasid"),
    ("priv", "--priv"),
    ("write", "--write"),
    ("exec_", "--exec"),
    ("at", "--at"),
)
_DEVICE_ID_MAX = (1 << 24) - 1  # riscv-iommu: device_id is up to 24 bits wide
_PASID_MAX = (1 << 20) - 1  # PCIe PASIDs (process_id) are 20 bits
_IOVA_MAX = (1 << 64) - 1
_SID_MAX = (1 << 32) - 1  # IHI 0070: StreamIDs are up to 32 bits
#: The SMMUv3 registers --reg takes (IHI 0070 6.3), written in this order before CR0.SMMUEN.
_SMMU_REGS = ("strtab_base", "strtab_base_cfg", "cr2", "gbpa")


def add_explain_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``explain`` subcommand to ``sub``."""
    e = sub.add_parser(
        "explain",
        help="explain, step by step, how a request is translated: a vector's steps, or one "
        "request against a raw memory dump (--memory)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Explain a translation structure by structure: every DDT and PDT entry,\n"
        "the device and process contexts, every first-stage, G-stage and MSI PTE read,\n"
        "then the completion or the fault with its cause. Give a conformance VECTOR, or\n"
        "raw memory images with --memory and the registers the IOMMU had with --reg.",
        epilog="examples:\n"
        "  iommusim explain vector.json --step 19\n"
        "  iommusim explain --memory ram.bin@0x80000000 --reg ddtp=0x20004003 \\\n"
        "      --device-id 0x12 --iova 0x8000 --write\n"
        "  iommusim explain --memory ram.bin@0x80000000 --preset linux-virt \\\n"
        "      --reg ddtp=0x20004004 --device-id 0x12 --iova 0x8000 --pasid 3 --at ats --json\n"
        "\nexit codes: 0 explained (whatever the outcome), 2 bad input (the message names "
        "the flag)",
    )
    e.add_argument("vector", nargs="?", help="a conformance-vector file (or use --memory)")
    e.add_argument(
        "--step",
        type=int,
        default=None,
        help="with VECTOR: index of the translate or page_request step (default: every one)",
    )
    e.add_argument(
        "--msi-data",
        type=lambda v: int(v, 0),
        default=None,
        help="for an MSI to an MRIF: the 32-bit data (interrupt identity) to locate",
    )
    e.add_argument("--json", action="store_true", help="machine-readable output")
    raw = e.add_argument_group(
        "raw memory dump (instead of VECTOR)",
        "Numbers are hex (0x...) or decimal; HEX values are hex with or without 0x. The "
        "IOMMU is programmed through its registers in the spec's initialization order "
        "(fctl, fault queue, ddtp last) and every value is read back. Without fqb/fqh/fqcsr "
        "a scratch fault queue on a page no image touches receives the fault record.",
    )
    raw.add_argument(
        "--memory",
        action="append",
        metavar="FILE@ADDR",
        help="a raw little-endian image (e.g. QEMU pmemsave) loaded at physical address "
        "ADDR, which may be unaligned; repeatable, images must not overlap; everything else "
        "reads zero and the files are never written",
    )
    raw.add_argument(
        "--iommu",
        metavar="KIND",
        help="riscv (default) or smmuv3: an Arm SMMUv3 (IHI 0070) with --reg strtab_base=HEX "
        "--reg strtab_base_cfg=HEX [--reg cr2=HEX]; --device-id is the StreamID, --pasid "
        "the SubstreamID, --preset one of iommusim.hw.smmuv3.params.PRESETS",
    )
    raw.add_argument(
        "--preset",
        metavar="NAME",
        help="the IOMMU's parameters: a preset of iommusim.hw.riscv.params.PRESETS "
        "(default: full, every capability; a bad name lists them)",
    )
    raw.add_argument(
        "--capabilities",
        metavar="HEX",
        help="the IOMMU's capabilities register instead of a preset (fctl.BE writable iff "
        "END, GXL writable)",
    )
    raw.add_argument(
        "--reg",
        action="append",
        metavar="NAME=HEX",
        help="a register value: ddtp (required), fctl, fqb, fqh, fqcsr; repeatable",
    )
    raw.add_argument("--device-id", metavar="N", help="the requester's device_id (24 bits)")
    raw.add_argument("--iova", metavar="ADDR", help="the address the device accessed")
    raw.add_argument("--pasid", metavar="P", help="the request's process_id (20 bits)")
    raw.add_argument("--priv", action="store_true", help="supervisor request (needs --pasid)")
    raw.add_argument(
        "--write", action="store_true", help="a write (with --at ats: write permission asked)"
    )
    raw.add_argument(
        "--exec",
        dest="exec_",
        action="store_true",
        help="a read for execute (with --at translated/ats: needs --pasid)",
    )
    raw.add_argument(
        "--at",
        metavar="KIND",
        help="address type: untranslated (default), translated or ats (a PCIe ATS "
        "translation request)",
    )
    e.set_defaults(func=cmd_explain)


@contextmanager
def _flag(flag: str, value: str | None = None) -> Iterator[None]:
    """Prefix a :class:`FormatError` raised inside with ``flag``, and ``value`` unless the
    message already starts with it (the image parsers name the image)."""
    try:
        yield
    except FormatError as e:
        raise FormatError(f"{flag} {e}" if value is None else f"{flag} {value}: {e}") from None


def _number(flag: str, text: str, what: str, maximum: int) -> int:
    from iommusim.conformance.rawmem import parse_number

    try:
        value = parse_number(text)
    except ValueError:
        raise FormatError(
            f"{flag} {text}: {what} must be a hex (0x...) or decimal number, not {text!r}"
        ) from None
    if value > maximum:
        raise FormatError(f"{flag} {text}: {what} must be at most {maximum:#x}, not {value:#x}")
    return value


def _hex(flag: str, shown: str, text: str, what: str) -> int:
    t = text.strip()
    digits = t[2:] if t[:2].lower() == "0x" else t
    try:
        if not digits or digits[0] in "+-_":
            raise ValueError(text)
        return int(digits, 16)
    except ValueError:
        raise FormatError(f"{flag} {shown}: {what} must be a hex number, not {text!r}") from None


def cmd_explain(args: argparse.Namespace) -> int:
    """Run ``iommusim explain`` in the mode the arguments ask for."""
    given = [flag for attr, flag in _RAW_FLAGS if getattr(args, attr) not in (None, False)]
    if args.vector is not None:
        if args.memory:
            raise FormatError("explain takes a VECTOR or --memory FILE@ADDR, not both")
        if given:
            raise FormatError(f"{given[0]} applies only with --memory, not with a VECTOR")
        from iommusim.conformance.explain import explain_vector_step

        explain_vector_step(
            Path(args.vector), args.step, json_out=args.json, msi_data=args.msi_data
        )
        return 0
    if not args.memory:
        raise FormatError(
            "explain needs a VECTOR or --memory FILE@ADDR"
            + (f", not {given[0]} alone" if given else "")
        )
    return _explain_raw(args)


def _explain_raw(args: argparse.Namespace) -> int:
    from iommusim.conformance.rawexplain import (
        RegisterValueError,
        explain_raw,
        iommu_params,
        print_raw,
        register_error,
    )
    from iommusim.conformance.rawmem import check_disjoint, parse_image
    from iommusim.hw.riscv.transaction import AT_NAMES, Request

    if args.step is not None:
        raise FormatError("--step applies only to a VECTOR, not with --memory")
    images = []
    for spec in args.memory:
        with _flag("--memory"):
            images.append(parse_image(spec))
    with _flag("--memory"):
        check_disjoint(images)
    kind = args.iommu or "riscv"
    if kind not in ("riscv", "smmuv3"):
        raise FormatError(f"--iommu {kind}: the IOMMU must be riscv or smmuv3, not {kind!r}")
    if kind == "smmuv3":
        return _explain_smmuv3(args, images)

    registers: dict[str, int] = {}
    for item in args.reg or ():
        name, sep, text = item.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise FormatError(f"--reg {item}: a register must be NAME=HEX, not {item!r}")
        value = _hex("--reg", item, text, name)
        why = register_error(name, value)
        if why is not None:
            raise FormatError(f"--reg {item}: {why}")
        if name in registers:
            raise FormatError(f"--reg {item}: {name} must be given once, not twice")
        registers[name] = value
    if "ddtp" not in registers:
        raise FormatError(
            "--reg ddtp=HEX is required with --memory (the IOMMU resets with "
            "ddtp.iommu_mode Off, which disallows every transaction)"
        )

    if args.preset is not None and args.capabilities is not None:
        raise FormatError("--preset and --capabilities are mutually exclusive, give one")
    capabilities = None
    if args.capabilities is not None:
        capabilities = _hex("--capabilities", args.capabilities, args.capabilities, "capabilities")
        source = f"capabilities {capabilities:#x}"
        flag, shown = "--capabilities", args.capabilities
    else:
        source = f"preset {args.preset or 'full'}"
        flag, shown = "--preset", args.preset
    with _flag(flag, shown):
        params = iommu_params(args.preset, capabilities, registers.get("fctl", 0))

    if args.device_id is None:
        raise FormatError("--device-id N is required with --memory")
    if args.iova is None:
        raise FormatError("--iova ADDR is required with --memory")
    device_id = _number("--device-id", args.device_id, "device_id", _DEVICE_ID_MAX)
    iova = _number("--iova", args.iova, "the IOVA", _IOVA_MAX)
    pasid = None if args.pasid is None else _number("--pasid", args.pasid, "the PASID", _PASID_MAX)
    at = "untranslated" if args.at is None else args.at
    if at not in _AT_KINDS:
        raise FormatError(
            f"--at {at}: the address type must be one of {', '.join(_AT_KINDS)}, not {at!r}"
        )
    if args.write and args.exec_:
        raise FormatError("--write and --exec are mutually exclusive (an execute is a read)")
    if args.priv and pasid is None:
        raise FormatError("--priv needs --pasid (the privilege travels with the PASID)")
    if args.exec_ and pasid is None and at != "untranslated":
        raise FormatError(
            f"--exec with --at {at} needs --pasid (Execute Requested travels with the PASID)"
        )
    req = Request(
        device_id=device_id,
        iova=iova,
        is_write=args.write and at != "ats",
        at=AT_NAMES[at],
        pid_valid=pasid is not None,
        process_id=pasid or 0,
        priv_req=args.priv,
        exec_req=args.exec_,
        no_write=not args.write,
    )
    from rich.console import Console

    try:
        data = explain_raw(images, params, registers, req, source=source, msi_data=args.msi_data)
    except RegisterValueError as e:
        raise FormatError(f"--reg {e}") from None
    except FormatError as e:  # an image that could not be mapped
        raise FormatError(f"--memory {e}") from None
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        print_raw(Console(highlight=False, soft_wrap=True), data)
    return 0


def _explain_smmuv3(args: argparse.Namespace, images: list[MemoryImage]) -> int:
    """``--iommu smmuv3``: program an SMMUv3 through its registers (IHI 0070 6.3: the
    stream table, CR2, then CR0.SMMUEN) over the images and explain one transaction."""
    from rich.console import Console

    from iommusim.bits.arm.smmuv3_regs import CR0, OFF
    from iommusim.conformance.rawmem import ImageMemory
    from iommusim.hw.smmuv3.explain import explain_translation, print_translation
    from iommusim.hw.smmuv3.params import PRESETS
    from iommusim.hw.smmuv3.smmu import Smmuv3
    from iommusim.hw.smmuv3.transaction import AT_ATS_REQUEST, Request
    from iommusim.hw.smmuv3.translator import Smmuv3Translator

    registers: dict[str, int] = {}
    for item in args.reg or ():
        name, sep, text = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in _SMMU_REGS:
            raise FormatError(
                f"--reg {item}: an SMMUv3 register must be one of {', '.join(_SMMU_REGS)}=HEX"
            )
        if name in registers:
            raise FormatError(f"--reg {item}: {name} must be given once, not twice")
        registers[name] = _hex("--reg", item, text, name)
    for need in ("strtab_base", "strtab_base_cfg"):
        if need not in registers:
            raise FormatError(f"--reg {need}=HEX is required with --iommu smmuv3")
    if args.capabilities is not None:
        raise FormatError("--capabilities applies to the RISC-V IOMMU; use --preset")
    preset = args.preset or "full"
    if preset not in PRESETS:
        raise FormatError(f"--preset {preset}: not one of {', '.join(PRESETS)}")
    if args.device_id is None or args.iova is None:
        raise FormatError("--device-id N and --iova ADDR are required with --memory")
    sid = _number("--device-id", args.device_id, "the StreamID", _SID_MAX)
    addr = _number("--iova", args.iova, "the address", _IOVA_MAX)
    ssid = None if args.pasid is None else _number("--pasid", args.pasid, "the SSID", _PASID_MAX)
    at = args.at or "untranslated"
    if at not in _AT_KINDS:
        raise FormatError(
            f"--at {at}: the address type must be one of {', '.join(_AT_KINDS)}, not {at!r}"
        )
    if args.write and args.exec_:
        raise FormatError("--write and --exec are mutually exclusive (an execute is a read)")
    at_code = _AT_KINDS.index(at)
    req = Request(
        sid,
        addr,
        is_write=args.write and at_code != AT_ATS_REQUEST,
        ssv=ssid is not None,
        ssid=ssid or 0,
        priv=args.priv,
        instr=args.exec_,
        at=at_code,
        no_write=not args.write,
    )
    with ImageMemory(images) as mem:
        translator = Smmuv3Translator(mem, PRESETS[preset])
        smmu = Smmuv3(mem, PRESETS[preset], translator=translator)
        for name, value in registers.items():
            smmu.write_register(
                getattr(OFF, name.upper()), 8 if name == "strtab_base" else 4, value
            )
        smmu.write_register(OFF.CR0, 4, CR0.encode(smmuen=1))
        data = explain_translation(translator, req)
    data["iommu"] = {
        "kind": "smmuv3",
        "preset": preset,
        "registers": {k: f"{v:#x}" for k, v in registers.items()},
    }
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        print_translation(Console(highlight=False, soft_wrap=True), data)
    return 0
