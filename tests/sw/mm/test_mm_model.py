"""Mm against a plain model: random mmap/munmap/mprotect/read/write/fault_in sequences.

The model is two dicts: page -> PROT_* bits (the areas) and page -> bytes (the resident
pages). After every step the Mm must agree with it: areas, resident pages and their bytes,
the allocator's count (root + table pages + data pages, nothing leaked), and each present
PTE's permissions. A shadow IOTLB registered as a notifier caches every present page after
each step, as a device would; invalidations must keep it from ever granting more than the
page table does (riscv-iommu: "Guidelines for invalidations"), a table page may be freed
only after a callback with ``tables_freed``, and each callback must come while the data and
table pages it covers are still allocated.
"""

from __future__ import annotations

from typing import Final

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from iommusim.errors import BadAddress, OutOfMemory
from iommusim.mem import SparseMemory
from iommusim.sw.mm import PROT_EXEC, PROT_READ, PROT_WRITE, Mm
from iommusim.sw.pages import PageAllocator
from iommusim.sw.prot import IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE

P: Final = 0x1000
M2: Final = 1 << 21
POOL: Final = 0x8000_0000
#: 64 pages across a 2 MiB boundary, so areas and unmaps straddle two level-0 tables.
BASE: Final = 0x4000_0000 + M2 - 32 * P
NPAGES: Final = 64

offsets = st.integers(0, NPAGES - 1)
lengths = st.integers(1, 20)
prots = st.integers(0, 7)


def perms(prot: int) -> tuple[bool, bool, bool]:
    """(read, write, exec) that a PTE of an area with ``prot`` grants."""
    return bool(prot & (PROT_READ | PROT_WRITE)), bool(prot & PROT_WRITE), bool(prot & PROT_EXEC)


def pte_perms(iprot: int) -> tuple[bool, bool, bool]:
    return bool(iprot & IOMMU_READ), bool(iprot & IOMMU_WRITE), not iprot & IOMMU_NOEXEC


class ShadowTlb:
    """A device TLB: page -> (pa, perms), filled from the page table, emptied by
    invalidations."""

    def __init__(self, pages: PageAllocator) -> None:
        self.pages = pages
        self.entries: dict[int, tuple[int, tuple[bool, bool, bool]]] = {}
        #: Table pages whose (non-leaf) entries the walk cache may hold.
        self.tables: set[int] = set()
        self.released = 0
        self.rounds = 0

    def invalidate(self, mm: Mm, start: int, end: int, tables_freed: bool) -> None:
        self.rounds += 1
        if tables_freed:
            # Still allocated: freed only after this call.
            assert all(self.pages.order_of(t) == 0 for t in self.tables)
            self.tables.clear()
        for page, (pa, _) in list(self.entries.items()):
            if tables_freed or start <= page < end:
                # Called before the page goes back to the allocator.
                assert self.pages.order_of(pa) == 0, f"{page:#x}: data page freed too early"
                del self.entries[page]

    def release(self, mm: Mm) -> None:
        self.released += 1
        self.entries.clear()
        self.tables.clear()


class MmMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ram = SparseMemory()
        self.pages = PageAllocator(self.ram, POOL, 1024 * P)
        self.baseline = self.pages.nr_allocated
        self.mm = Mm(self.ram, self.pages, "sv39")
        self.tlb = ShadowTlb(self.pages)
        self.mm.register_notifier(self.tlb)
        self.prot: dict[int, int] = {}
        self.data: dict[int, bytes] = {}

    # -- helpers -----------------------------------------------------------------------------
    def _drop(self, pages: range) -> None:
        for p in [p for p in self.prot if pages.start <= p < pages.stop]:
            del self.prot[p]
        for p in [p for p in self.data if pages.start <= p < pages.stop]:
            del self.data[p]

    @staticmethod
    def _span(off: int, n: int) -> range:
        return range(BASE + off * P, BASE + (off + n) * P, P)

    def _accessible(self, addr: int, n: int, write: bool) -> bool:
        first = addr & ~(P - 1)
        for p in range(first, addr + n, P):
            if p not in self.prot:
                return False
            r, w, _ = perms(self.prot[p])
            if not (w if write else r):
                return False
        return True

    # -- rules -------------------------------------------------------------------------------
    @rule(off=offsets, n=lengths, prot=prots, populate=st.booleans())
    def mmap_fixed(self, off: int, n: int, prot: int, populate: bool) -> None:
        span = self._span(off, n)
        assert self.mm.mmap(n * P, prot, addr=span[0], fixed=True, populate=populate) == span[0]
        self._drop(span)
        self.prot.update(dict.fromkeys(span, prot))
        if populate and prot:
            self.data.update(dict.fromkeys(span, bytes(P)))

    @rule(off=offsets, n=lengths, prot=prots)
    def mmap_hint(self, off: int, n: int, prot: int) -> None:
        span = self._span(off, n)
        got = self.mm.mmap(n * P, prot, addr=span[0])
        if not any(p in self.prot for p in span):
            assert got == span[0]
        else:
            # Top-down below mmap_base, computed independently over the model's pages.
            want = self.mm.mmap_base - n * P
            while True:
                hit = [p for p in range(want, want + n * P, P) if p in self.prot]
                if not hit:
                    break
                want = min(hit) - n * P
            assert got == want
            span = range(got, got + n * P, P)
        self.prot.update(dict.fromkeys(span, prot))

    @rule(off=offsets, n=lengths)
    def munmap(self, off: int, n: int) -> None:
        span = self._span(off, n)
        self.mm.munmap(span[0], n * P)
        self._drop(span)

    @rule(half=st.integers(0, 1))
    def munmap_table_span(self, half: int) -> None:
        """The whole span of one of the window's level-0 tables: the table is unlinked."""
        span = range(BASE + 32 * P - M2 + half * M2, BASE + 32 * P + half * M2, P)
        self.mm.munmap(span[0], M2)
        self._drop(span)

    @precondition(lambda self: any(p not in range(BASE, BASE + NPAGES * P) for p in self.prot))
    @rule()
    def munmap_far(self) -> None:
        far = sorted(p for p in self.prot if not BASE <= p < BASE + NPAGES * P)
        self.mm.munmap(far[0], far[-1] + P - far[0])
        self._drop(range(far[0], far[-1] + P, P))

    @rule(off=offsets, n=lengths, prot=prots)
    def mprotect(self, off: int, n: int, prot: int) -> None:
        span = self._span(off, n)
        if all(p in self.prot for p in span):
            self.mm.mprotect(span[0], n * P, prot)
            self.prot.update(dict.fromkeys(span, prot))
        else:
            before = (self.mm.vmas(), self.mm.resident, self.tlb.rounds)
            with pytest.raises(OutOfMemory):
                self.mm.mprotect(span[0], n * P, prot)
            assert (self.mm.vmas(), self.mm.resident, self.tlb.rounds) == before

    @rule(off=offsets, skew=st.integers(0, P - 1), n=st.integers(1, 3 * P))
    def read(self, off: int, skew: int, n: int) -> None:
        addr = BASE + off * P + skew
        if self._accessible(addr, n, False):
            want = bytearray()
            for p in range(addr & ~(P - 1), addr + n, P):
                self.data.setdefault(p, bytes(P))
                want += self.data[p]
            lo = addr & (P - 1)
            assert self.mm.read(addr, n) == bytes(want[lo : lo + n])
        else:
            before = self.mm.resident
            with pytest.raises(BadAddress):
                self.mm.read(addr, n)
            assert self.mm.resident == before

    @rule(off=offsets, skew=st.integers(0, P - 1), data=st.binary(min_size=1, max_size=3 * P))
    def write(self, off: int, skew: int, data: bytes) -> None:
        addr = BASE + off * P + skew
        if self._accessible(addr, len(data), True):
            self.mm.write(addr, data)
            at = addr
            for p in range(addr & ~(P - 1), addr + len(data), P):
                page = bytearray(self.data.get(p, bytes(P)))
                lo = at - p
                k = min(P - lo, addr + len(data) - at)
                page[lo : lo + k] = data[at - addr : at - addr + k]
                self.data[p] = bytes(page)
                at += k
        else:
            before = self.mm.resident
            with pytest.raises(BadAddress):
                self.mm.write(addr, data)
            assert self.mm.resident == before

    @rule(off=offsets, write=st.booleans(), exec_=st.booleans(), remote=st.booleans())
    def fault_in(self, off: int, write: bool, exec_: bool, remote: bool) -> None:
        page = BASE + off * P
        prot = self.prot.get(page)
        if prot is None:
            ok = False
        else:
            r, w, x = perms(prot)
            ok = (not write or w) and (not exec_ or x) and (write or exec_ or r)
        assert self.mm.fault_in(page + 5, write=write, exec_=exec_, remote=remote) is ok
        if ok:
            self.data.setdefault(page, bytes(P))

    # -- invariants --------------------------------------------------------------------------
    @invariant()
    def agrees_with_the_model(self) -> None:
        mm = self.mm
        got = {p: v.prot for v in mm.vmas() for p in range(v.start, v.end, P)}
        assert got == self.prot
        resident = mm.resident
        assert set(resident) == set(self.data)
        for p, pa in resident.items():
            assert self.ram.read(pa, P) == self.data[p]
        assert self.pages.nr_allocated == (
            self.baseline + len(mm.pgtable.table_pages) + len(resident)
        )
        assert mm.stats.pages == len(resident)
        for va, pa, size, iprot in mm.pgtable.walk_leaves():
            assert size == P and resident.get(va) == pa
            assert pte_perms(iprot) == perms(self.prot[va])

    @invariant()
    def shadow_tlb_is_never_more_permissive(self) -> None:
        mm = self.mm
        for page, (pa, cached) in self.tlb.entries.items():
            now = mm.pgtable.lookup(page)
            assert now is not None, f"{page:#x}: stale translation after unmap"
            assert now[1] == pa
            assert all(n or not c for c, n in zip(cached, pte_perms(now[3]), strict=True)), (
                f"{page:#x}: cached {cached} exceeds the PTE's {pte_perms(now[3])}"
            )
        gone = self.tlb.tables - set(mm.pgtable.table_pages)
        assert not gone, f"tables {sorted(map(hex, gone))} freed without tables_freed"
        # A device touches every present page: cache it and the tables on its walk.
        self.tlb.tables = set(mm.pgtable.table_pages)
        for va, pa, _, iprot in mm.pgtable.walk_leaves():
            self.tlb.entries[va] = (pa, pte_perms(iprot))

    def teardown(self) -> None:
        self.mm.exit()
        assert self.tlb.released == 1
        assert self.pages.nr_allocated == self.baseline


MmMachine.TestCase.settings = settings(max_examples=120, stateful_step_count=25, deadline=None)
TestMm = MmMachine.TestCase
