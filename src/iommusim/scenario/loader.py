"""Read a TOML scenario (``version = 1``) into the configuration objects it describes.

Every error is a :class:`~iommusim.errors.FormatError` whose message names the key path
(``system.ram[0].base must be an integer, not 'x'``). Unknown keys are errors too: a typo
must not silently fall back to a default.

::

    version = 1
    [system]            ram = [{base = 0x80000000, size = 0x10000000}], iommu_base, imsic_base
    [iommu]             kind = "riscv" | "smmuv3", preset = "full", and the caches:
                        RISC-V iotlb_entries, ddtc_entries, pdtc_entries, iotlb_superpages;
                        SMMUv3 tlb_entries, ste_entries, cd_entries, walk_entries,
                        ste_cont_entries; replacement ("lru" | "fifo" | "random"), seed
    [costs]             mmio_ns, iommu_mem_ns, command_ns, dma_page_ns, cpu_op_ns, irq_latency_ns
    [[endpoint]]        name, rid, kind, pasid_bits
    [kernel]            modes = ["strict", "lazy"], ncpus, fq_size, fq_timeout_ns, fq_single
    [vmm]               guest_ram_gpa, guest_ram_pages, guest_pscid, gva, fault_gva
    [workload]          ops, seed, nic_fraction, packet_bytes, block_bytes, stale_probe_rate,
                        think_ns, buffers
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Final, TypeVar, cast

from iommusim.errors import ApiError, FormatError, ModelError
from iommusim.hw.riscv.params import PRESETS, CacheParams, Replacement, RiscvIommuParams
from iommusim.hw.smmuv3.params import PRESETS as SMMUV3_PRESETS
from iommusim.hw.smmuv3.params import Smmuv3Params
from iommusim.perf.dma_workload import WorkloadConfig, default_system
from iommusim.perf.vmm_scene import VmmConfig
from iommusim.platform.costs import CostModel
from iommusim.platform.system import EndpointConfig, RamRegion, SystemConfig
from iommusim.sw.core.fq import FqOptions
from iommusim.sw.core.iommu import DmaMode

__all__ = ["Scenario", "load_scenario", "parse_scenario"]

VERSION: Final = 1
_MODES: Final = ("strict", "lazy", "passthrough")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Scenario:
    system: SystemConfig
    workload: WorkloadConfig
    modes: tuple[DmaMode, ...] = ("strict", "lazy")
    ncpus: int = 1
    fq: FqOptions = field(default_factory=FqOptions)
    vmm: VmmConfig = field(default_factory=VmmConfig)


def _table(d: object, path: str) -> dict[str, object]:
    if not isinstance(d, dict):
        raise FormatError(f"scenario: {path} must be a table, not {type(d).__name__}")
    return cast(dict[str, object], d)


def _only(d: dict[str, object], path: str, allowed: tuple[str, ...]) -> None:
    for k in d:
        if k not in allowed:
            raise FormatError(
                f"scenario: {path}{'.' if path else ''}{k} is not a known key "
                f"(expected one of {', '.join(allowed)})"
            )


def _get(d: dict[str, object], key: str, path: str, typ: type[T], default: T) -> T:
    if key not in d:
        return default
    v = d[key]
    ok = isinstance(v, typ) and not (typ is int and isinstance(v, bool))
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        v, ok = float(v), True
    if not ok:
        raise FormatError(f"scenario: {path}.{key} must be {_kind(typ)}, not {v!r}")
    return cast(T, v)


def _kind(typ: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}.get(
        typ, typ.__name__
    )


@contextmanager
def _at(path: str, sep: str = ".") -> Iterator[None]:
    """Re-raise a configuration class's range error with the scenario key path in front."""
    try:
        yield
    except (ApiError, ModelError) as e:
        raise FormatError(f"scenario: {path}{sep}{e}") from None


def parse_scenario(text: str, source: str = "<string>") -> Scenario:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise FormatError(f"scenario {source}: not valid TOML: {e}") from None
    _only(doc, "", ("version", "system", "iommu", "costs", "endpoint", "kernel", "workload", "vmm"))
    if "version" not in doc:
        raise FormatError("scenario: version is missing (expected version = 1)")
    if type(doc["version"]) is not int or doc["version"] != VERSION:
        raise FormatError(f"scenario: version must be {VERSION}, not {doc['version']!r}")
    try:
        return _build(doc)
    except (ApiError, ModelError) as e:
        raise FormatError(f"scenario: {e}") from None


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise FormatError(f"scenario {p}: cannot read it ({e.strerror})") from None
    return parse_scenario(text, str(p))


def _build(doc: dict[str, object]) -> Scenario:
    base = default_system()
    sys_t = _table(doc.get("system", {}), "system")
    _only(sys_t, "system", ("ram", "iommu_base", "imsic_base"))
    ram = base.ram
    if "ram" in sys_t:
        items = sys_t["ram"]
        if not isinstance(items, list):
            raise FormatError("scenario: system.ram must be an array of tables")
        regions = []
        for i, r in enumerate(items):
            rt = _table(r, f"system.ram[{i}]")
            _only(rt, f"system.ram[{i}]", ("base", "size"))
            if "base" not in rt or "size" not in rt:
                raise FormatError(f"scenario: system.ram[{i}] needs base and size")
            regions.append(
                RamRegion(
                    _get(rt, "base", f"system.ram[{i}]", int, 0),
                    _get(rt, "size", f"system.ram[{i}]", int, 0),
                )
            )
        ram = tuple(regions)
    iommu_t = _table(doc.get("iommu", {}), "iommu")
    kind = _get(iommu_t, "kind", "iommu", str, "riscv")
    if kind not in ("riscv", "smmuv3"):
        raise FormatError(f"scenario: iommu.kind must be riscv or smmuv3, not {kind!r}")
    params: RiscvIommuParams | Smmuv3Params = (
        _smmuv3_params(iommu_t) if kind == "smmuv3" else _riscv_params(iommu_t)
    )
    costs_t = _table(doc.get("costs", {}), "costs")
    names = tuple(f.name for f in fields(CostModel))
    _only(costs_t, "costs", names)
    defaults = CostModel()
    with _at("costs"):
        costs = CostModel(
            **{n: _get(costs_t, n, "costs", int, getattr(defaults, n)) for n in names}
        )
    endpoints = base.endpoints
    if "endpoint" in doc:
        eps = doc["endpoint"]
        if not isinstance(eps, list):
            raise FormatError("scenario: endpoint must be an array of tables ([[endpoint]])")
        out = []
        for i, e in enumerate(eps):
            path = f"endpoint[{i}]"
            et = _table(e, path)
            _only(et, path, ("name", "rid", "kind", "pasid_bits"))
            if "name" not in et or "rid" not in et:
                raise FormatError(f"scenario: {path} needs name and rid")
            ep = EndpointConfig(
                _get(et, "name", path, str, ""),
                _get(et, "rid", path, int, 0),
                _get(et, "kind", path, str, "generic"),
                _get(et, "pasid_bits", path, int, 0),
            )
            if not 0 <= ep.rid < 1 << 24:
                raise FormatError(f"scenario: {path}.rid must fit 24 bits, not {ep.rid:#x}")
            if not 0 <= ep.pasid_bits <= 20:
                raise FormatError(
                    f"scenario: {path}.pasid_bits must be in [0, 20], not {ep.pasid_bits}"
                )
            out.append(ep)
        endpoints = tuple(out)
    system = SystemConfig(
        ram=ram,
        iommu_base_pa=_get(sys_t, "iommu_base", "system", int, base.iommu_base_pa),
        imsic_base_pa=_get(sys_t, "imsic_base", "system", int, base.imsic_base_pa),
        iommu=params,
        endpoints=endpoints,
        costs=costs,
    )
    k = _table(doc.get("kernel", {}), "kernel")
    _only(k, "kernel", ("modes", "ncpus", "fq_size", "fq_timeout_ns", "fq_single"))
    modes_v = k.get("modes", ["strict", "lazy"])
    if not isinstance(modes_v, list) or not modes_v or any(m not in _MODES for m in modes_v):
        raise FormatError(
            f"scenario: kernel.modes must be a non-empty array of "
            f"{', '.join(_MODES)}, not {modes_v!r}"
        )
    fq = FqOptions(
        single=_get(k, "fq_single", "kernel", bool, False),
        size=_get(k, "fq_size", "kernel", int, 0) or None,
        timeout_ns=_get(k, "fq_timeout_ns", "kernel", int, 0) or None,
    )
    with _at("kernel.fq_size", ": "):
        fq.entries  # noqa: B018  (validates)
    with _at("kernel.fq_timeout_ns", ": "):
        fq.timeout  # noqa: B018  (validates)
    ncpus = _get(k, "ncpus", "kernel", int, 1)
    if ncpus < 1:
        raise FormatError(f"scenario: kernel.ncpus must be >= 1, not {ncpus}")
    w = _table(doc.get("workload", {}), "workload")
    wnames = tuple(f.name for f in fields(WorkloadConfig))
    _only(w, "workload", wnames)
    wd = WorkloadConfig()
    workload = WorkloadConfig(
        **{n: _get(w, n, "workload", type(getattr(wd, n)), getattr(wd, n)) for n in wnames}
    )
    v = _table(doc.get("vmm", {}), "vmm")
    vnames = tuple(f.name for f in fields(VmmConfig))
    _only(v, "vmm", vnames)
    vd = VmmConfig()
    vmm = VmmConfig(**{n: _get(v, n, "vmm", int, getattr(vd, n)) for n in vnames})
    return Scenario(system, workload, tuple(cast(list[DmaMode], modes_v)), ncpus, fq, vmm)


def _riscv_params(iommu_t: dict[str, object]) -> RiscvIommuParams:
    _only(
        iommu_t,
        "iommu",
        (
            "kind",
            "preset",
            "iotlb_entries",
            "ddtc_entries",
            "pdtc_entries",
            "replacement",
            "seed",
            "iotlb_superpages",
        ),
    )
    preset = _get(iommu_t, "preset", "iommu", str, "full")
    if preset not in PRESETS:
        raise FormatError(
            f"scenario: iommu.preset must be one of {', '.join(PRESETS)}, not {preset!r}"
        )
    params = PRESETS[preset]
    c = params.caches
    with _at("iommu"):
        caches = CacheParams(
            ddtc_entries=_get(iommu_t, "ddtc_entries", "iommu", int, c.ddtc_entries),
            pdtc_entries=_get(iommu_t, "pdtc_entries", "iommu", int, c.pdtc_entries),
            iotlb_entries=_get(iommu_t, "iotlb_entries", "iommu", int, c.iotlb_entries),
            # CacheParams checks the name (ModelError -> FormatError here).
            replacement=cast(
                Replacement, _get(iommu_t, "replacement", "iommu", str, str(c.replacement))
            ),
            seed=_get(iommu_t, "seed", "iommu", int, c.seed),
            iotlb_superpages=_get(iommu_t, "iotlb_superpages", "iommu", bool, c.iotlb_superpages),
        )
    return params.with_(caches=caches)


def _smmuv3_params(iommu_t: dict[str, object]) -> Smmuv3Params:
    names = ("tlb_entries", "ste_entries", "cd_entries", "walk_entries", "ste_cont_entries", "seed")
    _only(iommu_t, "iommu", ("kind", "preset", *names, "replacement"))
    preset = _get(iommu_t, "preset", "iommu", str, "full")
    if preset not in SMMUV3_PRESETS:
        raise FormatError(
            f"scenario: iommu.preset must be one of {', '.join(SMMUV3_PRESETS)} for an "
            f"SMMUv3, not {preset!r}"
        )
    params = SMMUV3_PRESETS[preset]
    c = params.caches
    with _at("iommu"):
        kw: dict[str, int | str] = {n: _get(iommu_t, n, "iommu", int, getattr(c, n)) for n in names}
        kw["replacement"] = _get(iommu_t, "replacement", "iommu", str, c.replacement)
        return params.with_caches(**kw)
