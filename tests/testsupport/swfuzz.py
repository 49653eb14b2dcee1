"""A Hypothesis state machine over the software API: "a failed call changes nothing", plus
isolation (issue 10, items 4 and 5; DESIGN rule 3, STYLE "Validate a whole operation before
changing any state").

A machine with three endpoints -- ``nic`` (plain), ``acc`` (ATS + PRI + 8-bit PASIDs) and
``gpu`` (ATS + PRI + 20-bit PASIDs) -- boots a :class:`~iommusim.sw.kernel.Kernel` in strict
or lazy mode. Rules call the public software API with valid and invalid arguments: the DMA API
(``dma_map``/``dma_unmap``), paging domains (alloc, free, attach, detach, replace, map,
unmap, ``iova_to_phys``, per-PASID attach), processes (``mmap``, ``munmap``, ``mprotect``,
CPU reads and writes, ``exit``), SVA ``bind``/``unbind``, endpoint DMA with and without a
PASID, MSIs, ``run_for`` and ``release_device``. Arguments include freed objects, other
devices' objects, out-of-range PASIDs, zero, negative, misaligned, huge and wrapping sizes
and addresses.

Invariants checked after every call:

* a call that raises an :class:`~iommusim.errors.ApiError` leaves an identical
  :func:`snapshot` (physical memory, IOMMU registers and caches, groups, domains and their
  mappings, IOVA allocators, flush queues, processes and their VMAs, PASID and PSCID
  allocators, endpoint ATC and state, driver, core and SVA counters, the virtual clock and
  the cost ledger); the one counter that exists to count failures,
  ``DmaCookie.stats["map_failures"]``, is left out;
* any other exception is a finding;
* isolation: a DMA without a PASID that succeeds reached only pages its group's current
  domain maps with the permission it needs, and read exactly what memory holds there (in
  lazy mode an IOVA unmapped since the last flush-queue drain may still be reached, the
  stale window Linux accepts); a DMA with a PASID succeeds only where the PASID's domain
  allows it (an SVA domain: the process has a VMA there allowing the access).

``fuzz(seconds=..., examples=..., seed=...)`` runs the machine; ``python -m
testsupport.swfuzz --seconds N --seed S`` (with ``PYTHONPATH=tests``) runs it for N seconds and
exits 1 when it found anything.
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st
from hypothesis.reporting import with_reporter
from hypothesis.stateful import (
    RuleBasedStateMachine,
    get_state_machine_test,
    initialize,
    invariant,
    rule,
)

from iommusim.errors import ApiError
from iommusim.platform.system import EndpointConfig, RamRegion, System, SystemConfig
from iommusim.sw.core.domain import DOMAIN_BLOCKED, DOMAIN_IDENTITY, DOMAIN_SVA, Domain
from iommusim.sw.core.fq import FqOptions
from iommusim.sw.drivers.riscv.domain import RiscvPagingDomain
from iommusim.sw.kernel import Kernel
from iommusim.sw.mm.mm import Mm
from iommusim.sw.prot import IOMMU_WRITE
from iommusim.sw.sva.sva import SvaHandle

__all__ = ["Finding", "FuzzStats", "Rig", "SwMachine", "fails_cleanly", "fuzz", "snapshot"]

PAGE = 4096
RAM = 0x8000_0000
RAM_SIZE = 6 << 20
MAX_DMA = 64 << 10
FQ_TIMEOUT_NS = 1_000_000
DEVICES = ("nic", "acc", "gpu")
TOP = 1 << 64


def boot(mode: str) -> tuple[System, Kernel]:
    system = System(
        SystemConfig(
            ram=(RamRegion(RAM, RAM_SIZE),),
            endpoints=(
                EndpointConfig("nic", 0x08, max_dma_bytes=MAX_DMA),
                EndpointConfig(
                    "acc",
                    0x10,
                    pasid_bits=8,
                    ats=True,
                    pri=True,
                    atc_entries=4,
                    prg_timeout_ns=100_000,
                    max_dma_bytes=MAX_DMA,
                ),
                EndpointConfig(
                    "gpu", 0x18, pasid_bits=20, ats=True, pri=True, max_dma_bytes=MAX_DMA
                ),
            ),
        )
    )
    kernel = Kernel(
        system,
        dma_mode=mode,  # type: ignore[arg-type]
        cq_entries=64,
        fq_entries=64,
        fq=FqOptions(size=8, timeout_ns=FQ_TIMEOUT_NS),
    )
    return system, kernel


# ------------------------------------------------------------------ snapshot
def _public(obj: object) -> tuple[tuple[str, object], ...]:
    names = getattr(type(obj), "__slots__", None) or tuple(vars(obj))
    out = []
    for n in names:
        if n.startswith("_"):
            continue
        v = getattr(obj, n, None)
        if isinstance(v, list):
            v = tuple(v)
        if isinstance(v, (int, str, bool, tuple)) or v is None:
            out.append((n, v))
    return tuple(out)


def _memory_digest(system: System) -> str:
    h = hashlib.blake2b(digest_size=16)
    pages = system.ram._pages
    for k in sorted(pages):
        page = pages[k]
        if any(page):
            h.update(k.to_bytes(8, "little"))
            h.update(page)
    return h.hexdigest()


def _iova_state(iovad: Any) -> object:
    return (
        tuple(iovad._starts),
        tuple(sorted(iovad._sizes.items())),
        tuple(
            (
                tuple(tuple(m) for m in rc.depot),
                tuple((tuple(c.loaded), tuple(c.prev)) for c in rc.cpus),
            )
            for rc in iovad._rcaches
        ),
        tuple(sorted(iovad.stats.items())),
    )


def _domain_state(d: Domain) -> object:
    out: dict[str, object] = {"type": d.type, "freed": d.freed, "repr": repr(d), "users": d.users}
    if d.freed:
        return out
    bonds = getattr(d, "bonds", None)
    if bonds is not None:
        out["bonds"] = tuple((b[1].name, b[2]) for b in bonds)
    if isinstance(d, RiscvPagingDomain):
        # The leaves themselves are in memory (the digest covers them); the table pages say
        # which memory is this domain's.
        out["tables"] = tuple(d.pgtable.table_pages)
        out["pscid"] = d.pscid
        out["inval"] = d.invalidations
    if d.cookie is not None:
        c = d.cookie
        out["iova"] = _iova_state(c.iovad)
        out["mapped"] = tuple(sorted(c._mapped.items()))
        out["stats"] = tuple(sorted((k, v) for k, v in c.stats.items() if k != "map_failures"))
        out["limit"] = c.limit_pfn
        if c.fq is not None:
            fq = c.fq
            out["fq"] = (
                tuple(tuple(r) for r in fq.rings),
                fq.flush_start_cnt,
                fq.flush_finish_cnt,
                tuple(sorted(fq.stats.items())),
                fq._timer is not None,
            )
    return out


def _mm_state(mm: Mm) -> object:
    return (
        mm.exited,
        mm.pasid,
        tuple((v.start, v.end, v.prot) for v in mm.vmas()),
        tuple(sorted(mm._resident.items())),
        _public(mm.stats),
        len(mm._notifiers),
        len(mm._released),
        mm.pgtable.root_pa,
    )


def snapshot(m: Any) -> dict[str, object]:
    """Everything a software call may change, cheaply: memory as a digest of the non-zero
    pages, the rest as plain values."""
    system, kernel = m.system, m.kernel
    core = kernel.core
    drv = kernel.iommu
    iommu = system.iommu
    eng = iommu.engine
    caches = {}
    for name in ("iotlb", "ddtc", "pdtc"):
        c = getattr(eng, name, None)
        if c is not None:
            try:
                caches[name] = tuple(sorted(map(repr, c)))
            except TypeError:
                caches[name] = repr(c)
    pages = kernel.pages
    out: dict[str, object] = {
        "memory": _memory_digest(system),
        "pages": (pages.nr_free, tuple(tuple(sorted(f)) for f in pages._free)),
        "regs": _public(iommu.regs),
        "caches": caches,
        "clock": system.clock.now,
        "ledger": (
            system.ledger.debt_ns,
            tuple(sorted(system.ledger.counts.items())),
            tuple(sorted(system.ledger.ns.items())),
        ),
        "messages": len(system.messages),
        "sink": (tuple(sorted(system.sink.received.items())), system.sink.spurious),
        "groups": tuple(
            (
                g.id,
                id(g.domain),
                id(g.default_domain),
                tuple(d.name for d in g.devices),
                tuple(sorted((p, id(d)) for p, d in g.pasid_array.items())),
            )
            for g in core.groups
        ),
        "devices": tuple(
            (n, id(d.group), d.iommu is not None, d.fault_handler is not None)
            for n, d in sorted(core.devices.items())
        ),
        "unhandled": len(core.unhandled_faults),
        "iopf": (_public(core.iopf.stats), tuple(sorted(core.iopf.pending))),
        "driver": (
            tuple(sorted(drv.stats.items())),
            drv.cmdq.sent if drv.cmdq is not None else 0,
            tuple(sorted(drv.pscid_ida._used)),
            tuple(sorted((rid, repr(st)) for rid, st in drv._devs.items())),
            drv.faults_seen,
        ),
        "sva": (
            tuple(sorted(kernel.sva.pasid_ida._used)),
            tuple(
                sorted(
                    (k[1], h.dev.name, h.mm.name, h.users) for k, h in kernel.sva._handles.items()
                )
            ),
            tuple(sorted((mm.name, d.pasid, len(d.domains)) for mm, d in kernel.sva._mms.items())),
            _public(kernel.sva.stats),
        ),
        "domains": tuple(_domain_state(d) for d in m.all_domains()),
        "mms": tuple(_mm_state(mm) for mm in m.mms),
        "endpoints": tuple(
            (
                n,
                _public(ep.stats),
                ep.ats_enabled,
                ep.pri_enabled,
                ep.pri_stopped,
                tuple(ep.atc._map.items()),
                tuple(sorted(ep._prgs)),
                ep._next_prgi,
            )
            for n, ep in sorted(system.endpoints.items())
        ),
        "events": len(system.clock._queue) if hasattr(system.clock, "_queue") else None,
    }
    return out


def diff(a: dict[str, object], b: dict[str, object]) -> list[str]:
    return [k for k in a if a[k] != b.get(k)]


class Rig:
    """The fuzzer's machine outside Hypothesis, for regression tests: ``domains``,
    ``handles`` and ``mms`` list the objects :func:`snapshot` looks at besides the
    default domains."""

    def __init__(self, mode: str = "strict") -> None:
        self.mode = mode
        self.system, self.kernel = boot(mode)
        self.core = self.kernel.core
        self.domains: list[Domain] = []
        self.mms: list[Mm] = []
        self.handles: list[SvaHandle] = []
        self.defaults = [self.kernel.device(n).group.default_domain for n in DEVICES]

    def all_domains(self) -> list[Domain]:
        seen: list[Domain] = []
        for d in [*self.defaults, *self.domains, *(h.domain for h in self.handles)]:
            if d is not None and not any(d is x for x in seen):
                seen.append(d)
        return seen


def fails_cleanly(rig: Any, exc: type[ApiError], code: int, fn: Any) -> ApiError:
    """``fn()`` raises ``exc`` carrying ``code`` and :func:`snapshot` sees no change."""
    before = snapshot(rig)
    try:
        fn()
    except exc as e:
        assert e.errno == code, f"errno {e.errno}, not {code}: {e}"
        changed = diff(before, snapshot(rig))
        assert not changed, f"{type(e).__name__}({e}) changed {changed}"
        return e
    raise AssertionError(f"no {exc.__name__} raised")


# ------------------------------------------------------------------ strategies
def _addr(base: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(0, 63).map(lambda k: base + k * PAGE),
        st.integers(0, 63).map(lambda k: base + k * PAGE + 0x10),
        st.sampled_from([0, -PAGE, -1, TOP - PAGE, TOP, 1 << 56, (1 << 56) - PAGE, 1 << 63]),
        st.integers(-(1 << 65), 1 << 65),
    )


SIZES = st.one_of(
    st.integers(1, 4).map(lambda k: k * PAGE),
    st.integers(1, 3 * PAGE),
    st.sampled_from([0, -1, -PAGE, 1 << 40, MAX_DMA, MAX_DMA + 1, TOP, 2 << 20, 1 << 30]),
)
PASIDS = st.one_of(st.none(), st.sampled_from([0, 1, 2, 3, 255, 256, (1 << 20) - 1, 1 << 20, -1]))
PICK = st.integers(0, 1 << 16)
MM_ADDR = st.one_of(
    st.integers(0, 63).map(lambda k: 0x10_0000 + k * PAGE),
    st.sampled_from([0, -PAGE, 0x10_0001, 1 << 47, (1 << 47) - PAGE, 1 << 64]),
)


@dataclass
class Finding:
    """One failing input: what went wrong and the minimal call sequence that shows it."""

    error: str
    reproducer: str


@dataclass
class FuzzStats:
    inputs: int = 0  # rule calls executed
    examples: int = 0
    runs: int = 0
    findings: list[Finding] = field(default_factory=list)
    echo: bool = False  # print each finding as soon as it is found


class _Counter:
    inputs = 0
    examples = 0


class SwMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        _Counter.examples += 1
        self.booted = False

    # ------------------------------------------------------------------ setup
    @initialize(mode=st.sampled_from(["strict", "lazy"]))
    def boot(self, mode: str) -> None:
        self.mode = mode
        self.system, self.kernel = boot(mode)
        self.core = self.kernel.core
        self.domains: list[Domain] = []
        self.dma: list[tuple[str, int, int]] = []  # (device, dma address, size) of dma_map
        self.maps: list[tuple[int, int, int]] = []  # (domain index, iova, size) of map
        self.mms: list[Mm] = []
        self.handles: list[SvaHandle] = []
        self.defaults = [self.kernel.device(n).group.default_domain for n in DEVICES]
        # IOVAs each domain has mapped at some time (lazy mode's stale window).
        self.ever: dict[int, list[tuple[int, int]]] = {}
        self.buf = self.kernel.pages.alloc_page()
        self.booted = True

    all_domains = Rig.all_domains

    # ------------------------------------------------------------------ the check
    def call(self, what: str, fn: Any) -> Any:
        """Run ``fn``; an ApiError must leave the snapshot unchanged."""
        _Counter.inputs += 1
        before = snapshot(self)
        try:
            return fn()
        except ApiError as e:
            after = snapshot(self)
            changed = diff(before, after)
            if changed:
                raise AssertionError(
                    f"{what} raised {type(e).__name__}({e}) but changed {changed}"
                ) from e
            return e

    def dev(self, i: int) -> Any:
        name = DEVICES[i % len(DEVICES)]
        return self.kernel.devices[name]

    def ep(self, i: int) -> Any:
        return self.system.endpoints[DEVICES[i % len(DEVICES)]]

    def domain(self, i: int) -> Domain:
        doms = self.all_domains()
        drv = self.kernel.iommu
        doms += [drv.identity_domain, drv.blocked_domain]
        return doms[i % len(doms)]

    # ------------------------------------------------------------------ DMA API
    @rule(d=PICK, pa=_addr(RAM), size=SIZES, direction=st.sampled_from([0, 1, 2, 3, -1]))
    def dma_map(self, d: int, pa: int, size: int, direction: int) -> None:
        dev = self.dev(d)
        r = self.call("dma_map", lambda: self.core.dma_map(dev, pa, size, direction))
        if isinstance(r, int):
            self.dma.append((dev.name, r, size))
            dom = dev.group.domain if dev.group else None
            if isinstance(dom, RiscvPagingDomain):  # identity: no IOVA to remember
                self.ever.setdefault(id(dom), []).append((r & ~(PAGE - 1), r + size))

    @rule(k=PICK, d=st.one_of(st.none(), PICK), delta=st.sampled_from([0, 0, 0, 1, -1, PAGE]))
    def dma_unmap(self, k: int, d: int | None, delta: int) -> None:
        if self.dma:
            name, addr, size = self.dma[k % len(self.dma)]
            dev = self.kernel.devices.get(name) if d is None else self.dev(d)
            if dev is None:
                return
            size += delta
        else:
            dev, addr, size = self.dev(k), k * PAGE, PAGE
        self.call("dma_unmap", lambda: self.core.dma_unmap(dev, addr, size))

    # ------------------------------------------------------------------ domains
    @rule(d=PICK)
    def domain_alloc(self, d: int) -> None:
        if len(self.domains) >= 6:
            return
        dev = self.dev(d)
        r = self.call("domain_alloc_paging", lambda: self.core.domain_alloc_paging(dev))
        if isinstance(r, Domain):
            self.domains.append(r)

    @rule(k=PICK)
    def domain_free(self, k: int) -> None:
        dom = self.domain(k)
        self.call("domain_free", lambda: self.core.domain_free(dom))

    @rule(k=PICK, d=PICK, how=st.sampled_from(["attach", "detach", "replace"]))
    def attach(self, k: int, d: int, how: str) -> None:
        dom, dev = self.domain(k), self.dev(d)
        core = self.core
        if how == "attach":
            self.call("attach_device", lambda: core.attach_device(dom, dev))
        elif how == "detach":
            self.call("detach_device", lambda: core.detach_device(dom, dev))
        else:
            group = dev.group
            if group is None:
                return
            self.call("replace_group_domain", lambda: core.replace_group_domain(dom, group))

    @rule(
        k=PICK,
        iova=_addr(0x10_0000),
        pa=_addr(RAM),
        size=SIZES,
        prot=st.sampled_from([1, 2, 3, 0, 64, -1]),
    )
    def map(self, k: int, iova: int, pa: int, size: int, prot: int) -> None:
        dom = self.domain(k)
        r = self.call("map", lambda: self.core.map(dom, iova, pa, size, prot))
        if r is None:
            self.ever.setdefault(id(dom), []).append((iova, iova + size))
            self.maps.append((k, iova, size))

    @rule(k=PICK, j=PICK, iova=_addr(0x10_0000), size=SIZES, use_map=st.booleans())
    def unmap(self, k: int, j: int, iova: int, size: int, use_map: bool) -> None:
        if use_map and self.maps:
            k, iova, size = self.maps[j % len(self.maps)]
        dom = self.domain(k)
        self.call("unmap", lambda: self.core.unmap(dom, iova, size))

    @rule(k=PICK, iova=_addr(0x10_0000))
    def iova_to_phys(self, k: int, iova: int) -> None:
        dom = self.domain(k)
        self.call("iova_to_phys", lambda: self.core.iova_to_phys(dom, iova))

    @rule(
        k=PICK,
        d=PICK,
        pasid=st.sampled_from([0, 1, 2, 5, 255, 256, 1 << 20, -1]),
        detach=st.booleans(),
    )
    def attach_pasid(self, k: int, d: int, pasid: int, detach: bool) -> None:
        dom, dev = self.domain(k), self.dev(d)
        core = self.core
        if detach:
            self.call("detach_device_pasid", lambda: core.detach_device_pasid(dom, dev, pasid))
        else:
            self.call("attach_device_pasid", lambda: core.attach_device_pasid(dom, dev, pasid))

    @rule(d=st.integers(0, 20))
    def release_device(self, d: int) -> None:
        if d:  # rarely: a released device stays gone for the rest of the run
            return
        dev = self.dev(d + len(self.mms))
        self.call("release_device", lambda: self.core.release_device(dev))

    # ------------------------------------------------------------------ processes
    @rule(fmt=st.sampled_from(["sv39", "sv48", "sv57"]))
    def new_process(self, fmt: str) -> None:
        if len(self.mms) < 3:
            name = f"p{len(self.mms)}"
            r = self.call("new_process", lambda: self.kernel.new_process(name, fmt))
            if isinstance(r, Mm):
                self.mms.append(r)

    def mm(self, k: int) -> Mm | None:
        return self.mms[k % len(self.mms)] if self.mms else None

    @rule(
        k=PICK,
        length=SIZES,
        prot=st.sampled_from([0, 1, 2, 3, 4, 7, 8, -1]),
        addr=st.one_of(st.none(), MM_ADDR),
        fixed=st.booleans(),
        populate=st.booleans(),
    )
    def mmap(
        self, k: int, length: int, prot: int, addr: int | None, fixed: bool, populate: bool
    ) -> None:
        mm = self.mm(k)
        if mm is not None:
            self.call(
                "mmap",
                lambda: mm.mmap(length, prot, addr=addr, fixed=fixed, populate=populate),
            )

    @rule(k=PICK, j=PICK, addr=MM_ADDR, length=SIZES, use_vma=st.booleans())
    def munmap(self, k: int, j: int, addr: int, length: int, use_vma: bool) -> None:
        mm = self.mm(k)
        if mm is None:
            return
        vmas = mm.vmas()
        if use_vma and vmas:
            v = vmas[j % len(vmas)]
            addr = v.start
        self.call("munmap", lambda: mm.munmap(addr, length))

    @rule(
        k=PICK,
        j=PICK,
        addr=MM_ADDR,
        length=SIZES,
        prot=st.sampled_from([0, 1, 3, 4, 8]),
        use_vma=st.booleans(),
    )
    def mprotect(self, k: int, j: int, addr: int, length: int, prot: int, use_vma: bool) -> None:
        mm = self.mm(k)
        if mm is None:
            return
        vmas = mm.vmas()
        if use_vma and vmas:
            addr = vmas[j % len(vmas)].start
        self.call("mprotect", lambda: mm.mprotect(addr, length, prot))

    @rule(
        k=PICK,
        j=PICK,
        off=st.integers(-8, PAGE * 2),
        n=st.one_of(st.integers(-1, 2 * PAGE), st.sampled_from([1 << 40, 1 << 30])),
        write=st.booleans(),
    )
    def cpu_access(self, k: int, j: int, off: int, n: int, write: bool) -> None:
        mm = self.mm(k)
        if mm is None:
            return
        vmas = mm.vmas()
        addr = (vmas[j % len(vmas)].start if vmas else 0x10_0000) + off
        if write:
            data = bytes([j & 0xFF]) * min(max(n, 0), 2 * PAGE)
            self.call("mm.write", lambda: mm.write(addr, data))
        else:
            self.call("mm.read", lambda: mm.read(addr, n))

    @rule(k=PICK)
    def exit(self, k: int) -> None:
        mm = self.mm(k)
        if mm is not None:
            self.call("mm.exit", mm.exit)

    # ------------------------------------------------------------------ SVA
    @rule(d=PICK, k=PICK)
    def bind(self, d: int, k: int) -> None:
        mm = self.mm(k)
        if mm is None:
            return
        dev = self.dev(d)
        r = self.call("sva.bind", lambda: self.kernel.sva.bind(dev, mm))
        if isinstance(r, SvaHandle) and not any(h is r for h in self.handles):
            self.handles.append(r)

    @rule(k=PICK)
    def unbind(self, k: int) -> None:
        if self.handles:
            h = self.handles[k % len(self.handles)]
            self.call("sva.unbind", lambda: self.kernel.sva.unbind(h))

    # ------------------------------------------------------------------ endpoints
    @rule(
        d=PICK,
        j=PICK,
        source=st.sampled_from(["dma", "vma", "raw"]),
        raw=_addr(0x10_0000),
        off=st.sampled_from([0, 0, 8, PAGE - 4, -8]),
        size=SIZES,
        pasid=PASIDS,
        use_handle=st.booleans(),
        write=st.booleans(),
    )
    def dma(
        self,
        d: int,
        j: int,
        source: str,
        raw: int,
        off: int,
        size: int,
        pasid: int | None,
        use_handle: bool,
        write: bool,
    ) -> None:
        ep = self.ep(d)
        if use_handle and self.handles:
            h = self.handles[j % len(self.handles)]
            ep, pasid = self.system.endpoints[h.dev.name], h.pasid
            source = "vma"
        addr = raw
        if source == "dma" and self.dma:
            addr = self.dma[j % len(self.dma)][1] + off
        elif source == "vma" and self.mms:
            vmas = self.mms[j % len(self.mms)].vmas()
            if vmas:
                addr = vmas[j % len(vmas)].start + off
        n = size if 0 < size <= 4 * PAGE else (size if size <= 0 or size > MAX_DMA else 2 * PAGE)
        if write:
            data = bytes([(j & 0x7F) | 1]) * max(min(n, MAX_DMA + 1), 0)
            r = self.call("dma_write", lambda: ep.dma_write(addr, data, pasid=pasid))
        else:
            r = self.call("dma_read", lambda: ep.dma_read(addr, n, pasid=pasid))
        if not isinstance(r, ApiError):
            self.check_isolation(ep.name, addr, r, pasid, write)

    @rule(
        d=PICK,
        addr=st.sampled_from([0x2800_0000, 0x2800_0004, 0x2800_0002, RAM, 1 << 64]),
        data=st.sampled_from([0, 1, 0xFFFF_FFFF, 1 << 32, -1]),
    )
    def msi(self, d: int, addr: int, data: int) -> None:
        ep = self.ep(d)
        self.call("msi", lambda: ep.msi(addr, data))

    @rule(ns=st.sampled_from([0, 1, 1000, FQ_TIMEOUT_NS, 2 * FQ_TIMEOUT_NS, -1, -(1 << 70)]))
    def run_for(self, ns: int) -> None:
        self.call("run_for", lambda: self.system.run_for(ns))

    # ------------------------------------------------------------------ isolation
    def check_isolation(self, name: str, addr: int, r: Any, pasid: int | None, write: bool) -> None:
        dev = self.kernel.devices.get(name)
        if r.done == 0:
            return
        group = dev.group if dev is not None else None
        bus = self.system.bus
        end = addr + r.done
        va = addr
        while va < end:
            n = min(end, (va | (PAGE - 1)) + 1) - va
            page = va & ~(PAGE - 1)
            if group is None:
                raise AssertionError(f"{name} (released) reached {va:#x}")
            dom = group.domain if pasid is None else group.pasid_array.get(pasid)
            if dom is None or dom.type == DOMAIN_BLOCKED:
                raise AssertionError(f"{name} pasid {pasid} reached {va:#x} through no domain")
            if dom.type == DOMAIN_IDENTITY:
                va += n
                continue
            if dom.type == DOMAIN_SVA:
                mm = dom.mm  # type: ignore[attr-defined]
                vma = mm.find_vma(va)
                ok = vma is not None and vma.prot & (2 if write else 3)
                if not ok:
                    raise AssertionError(
                        f"{name} pasid {pasid} reached {va:#x} of {mm.name} outside its VMAs"
                    )
                va += n
                continue
            found = dom.pgtable.lookup(va) if isinstance(dom, RiscvPagingDomain) else None
            stale_ok = self.mode == "lazy" and any(
                lo <= page < hi for lo, hi in self.ever.get(id(dom), ())
            )
            if found is None or (write and not found[3] & IOMMU_WRITE):
                if not stale_ok:
                    raise AssertionError(
                        f"{name} pasid {pasid} {'wrote' if write else 'read'} {va:#x} "
                        f"which {dom!r} does not map {'writable' if write else ''}"
                    )
            elif not write:
                pa = found[1] + (va - found[0])
                got = r.data[va - addr : va - addr + n]
                if got != bus.read(pa, n) and not stale_ok:
                    raise AssertionError(f"{name} read {va:#x} but not what {pa:#x} holds")
            va += n

    @invariant()
    def consistent(self) -> None:
        if not self.booted:
            return
        # Every live domain's page table is still walkable and the IOVA allocator agrees
        # with the DMA mappings it holds.
        for d in self.all_domains():
            if isinstance(d, RiscvPagingDomain):
                assert d.freed == (d.pgtable.root_pa < 0)
            if d.cookie is not None and not d.freed:
                for pfn in d.cookie._mapped:
                    assert d.cookie.iovad.size_of(pfn) is not None


# ------------------------------------------------------------------ driver
def _settings(max_examples: int, derandomize: bool) -> settings:
    return settings(
        max_examples=max_examples,
        stateful_step_count=30,
        deadline=None,
        database=None,
        derandomize=derandomize,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.shrink],
        report_multiple_bugs=False,
        print_blob=False,
    )


#: Wall time Hypothesis may spend shrinking one failure (its own default is 300 s, which
#: would eat a short fuzz budget; a 30 s shrink still gives a short reproducer).
SHRINK_SECONDS = 30


def _run_once(max_examples: int, run_seed: int | None, stats: FuzzStats) -> None:
    from hypothesis.internal.conjecture import engine

    engine.MAX_SHRINKING_SECONDS = SHRINK_SECONDS
    s = _settings(max_examples, derandomize=run_seed is None)
    test = get_state_machine_test(SwMachine, settings=s)
    if run_seed is not None:
        test = hseed(run_seed)(test)
    lines: list[str] = []
    _Counter.inputs = _Counter.examples = 0
    try:
        with with_reporter(lines.append):
            test()
    except Exception as e:
        notes = getattr(e, "__notes__", [])
        finding = Finding(f"{type(e).__name__}: {e}", "\n".join([*lines, *notes]).strip())
        stats.findings.append(finding)
        if stats.echo:
            print(f"--- finding {len(stats.findings)}: {finding.error}\n{finding.reproducer}")
            sys.stdout.flush()
    finally:
        stats.inputs += _Counter.inputs
        stats.examples += _Counter.examples
        stats.runs += 1


def fuzz(
    seconds: float | None = None, examples: int | None = None, seed: int = 0, echo: bool = False
) -> FuzzStats:
    """Run the state machine. With ``seconds``, Hypothesis runs with fresh seeds (derived
    from ``seed``) are repeated until the time is up; otherwise one run of ``examples``
    examples (default 20), derandomized when ``seed`` is 0. ``echo`` prints each finding
    as soon as it is found."""
    stats = FuzzStats(echo=echo)
    if seconds is None:
        _run_once(examples or 20, seed or None, stats)
        return stats
    deadline = time.monotonic() + seconds
    k = 0
    per_run = examples or 25
    while time.monotonic() < deadline:
        _run_once(per_run, seed * 1_000_003 + k + 1, stats)
        k += 1
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testsupport.swfuzz")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--examples", type=int, default=None, help="examples per Hypothesis run")
    args = ap.parse_args(argv)
    # A run that outlives its budget by a minute is stuck in one call (unbounded work):
    # show where, on stderr, and keep going.
    faulthandler.dump_traceback_later(args.seconds + 60, repeat=True)
    stats = fuzz(seconds=args.seconds, examples=args.examples, seed=args.seed, echo=True)
    faulthandler.cancel_dump_traceback_later()
    print(
        f"sw fuzz: {stats.inputs} inputs ({stats.examples} examples), "
        f"{len(stats.findings)} findings"
    )
    return 1 if stats.findings else 0


if __name__ == "__main__":
    sys.exit(main())
