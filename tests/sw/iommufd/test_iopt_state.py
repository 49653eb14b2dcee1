"""Random sequences of maps, copies, unmaps, domain adds/removes (some failing part way) and
access pins over two IOASes. After every step: every domain maps exactly the areas of its
IOAS to their pinned pages; each page's pin users are its areas in IOASes with domains plus
one per access range; the process holds one pin per pages object pinning a page; a failed
call changed nothing (io_pagetable.c, pages.c)."""

from __future__ import annotations

import contextlib
from typing import Any, Final

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from iommusim.errors import ApiError
from iommusim.sw.iommufd.access import Access
from iommusim.sw.iommufd.iopt import IoPagetable
from iommusim.sw.iommufd.pages import IoPages
from testsupport.iommufd import FakeDomain

P: Final = 0x1000
iovas = st.sampled_from([0x10000, 0x11000, 0x12000])
lengths = st.sampled_from([P, 0x2000])
offsets = st.sampled_from([0, P, 0x3000])


class Ops:
    needs_pin_pages = True

    def __init__(self) -> None:
        self.items: list[tuple[int, int]] = []
        self.access: Access | None = None

    def unmap(self, iova: int, length: int) -> None:
        assert self.access is not None
        for it in list(self.items):
            if iova <= it[0] + it[1] - 1 and it[0] <= iova + length - 1:
                self.items.remove(it)
                self.access.unpin_pages(*it)


class IoptMachine(RuleBasedStateMachine):
    def __init__(self, make: Any) -> None:
        super().__init__()
        self.env: Any = make()
        self.ids = [self.env.fd.ioas_alloc(), self.env.fd.ioas_alloc()]
        self.doms: dict[int, list[FakeDomain]] = {i: [] for i in self.ids}
        self.ops = Ops()
        self.access = Access.create(self.env.fd.file.objects, self.ops)
        self.ops.access = self.access
        self.access.attach(self.ids[0])
        self.env.fd.ioas_map(self.ids[0], self.env.buf, 0x3000, 0x10000)

    def iopt(self, i: int) -> IoPagetable:
        t = self.env.ioas(self.ids[i]).iopt
        assert isinstance(t, IoPagetable)
        return t

    def state(self) -> tuple[object, ...]:
        snap = self.env.snapshot()
        del snap["resident"]
        tables = [d.table() for ds in self.doms.values() for d in ds]
        return snap, tables, list(self.ops.items)

    def attempt(self, call: Any) -> bool:
        before = self.state()
        try:
            call()
        except ApiError:
            assert self.state() == before
            return False
        return True

    # ------------------------------------------------------------------ rules
    @rule(i=st.integers(0, 1), off=offsets, length=lengths, iova=iovas)
    def map(self, i: int, off: int, length: int, iova: int) -> None:
        self.attempt(lambda: self.env.fd.ioas_map(self.ids[i], self.env.buf + off, length, iova))

    @rule(i=st.integers(0, 1), src=iovas, length=lengths, dst=iovas)
    def copy(self, i: int, src: int, length: int, dst: int) -> None:
        a, b = self.ids[i], self.ids[1 - i]
        self.attempt(lambda: self.env.fd.ioas_copy(b, a, src, length, dst))

    @rule(i=st.integers(0, 1), iova=iovas, length=st.sampled_from([P, 0x2000, 0x3000]))
    def unmap(self, i: int, iova: int, length: int) -> None:
        # Area by area, as the kernel: an error leaves the earlier areas unmapped.
        with contextlib.suppress(ApiError):
            self.env.fd.ioas_unmap(self.ids[i], iova, length)

    @rule(i=st.integers(0, 1))
    def unmap_all(self, i: int) -> None:
        self.env.fd.ioas_unmap_all(self.ids[i])
        assert self.iopt(i).areas == []

    @rule(i=st.integers(0, 1), fail=st.sampled_from([None, 1, 2, 3]))
    def add_domain(self, i: int, fail: int | None) -> None:
        d = FakeDomain(fail_map_at=fail)
        if self.attempt(lambda: self.iopt(i).add_domain(d)):
            self.doms[self.ids[i]].append(d)

    @rule(i=st.integers(0, 1), k=st.integers(0, 2))
    def remove_domain(self, i: int, k: int) -> None:
        ds = self.doms[self.ids[i]]
        if ds:
            d = ds.pop(k % len(ds))
            self.iopt(i).remove_domain(d)
            assert d.table() == {}

    @rule(iova=iovas, length=lengths)
    def pin(self, iova: int, length: int) -> None:
        if self.attempt(lambda: self.access.pin_pages(iova, length)):
            self.ops.items.append((iova, length))

    @rule(k=st.integers(0, 3))
    def unpin(self, k: int) -> None:
        if self.ops.items:
            self.access.unpin_pages(*self.ops.items.pop(k % len(self.ops.items)))

    # ------------------------------------------------------------------ invariants
    @invariant()
    def domains_map_the_areas(self) -> None:
        for i, oid in enumerate(self.ids):
            want: dict[int, int] = {}
            for a in self.iopt(i).areas:
                for k in range(a.first_index, a.last_index + 1):
                    if self.doms[oid]:
                        want[a.iova + (k - a.first_index) * P] = a.pages.pinned()[k][0]
            for d in self.doms[oid]:
                assert d.table() == want
            assert sorted(map(id, self.iopt(i).domains)) == sorted(map(id, self.doms[oid]))

    @invariant()
    def pins_are_the_users(self) -> None:
        users: dict[int, dict[int, int]] = {}
        pages: dict[int, IoPages] = {}
        for i, oid in enumerate(self.ids):
            for a in self.iopt(i).areas:
                pages[id(a.pages)] = a.pages
                u = users.setdefault(id(a.pages), {})
                if self.doms[oid]:
                    for k in range(a.first_index, a.last_index + 1):
                        u[k] = u.get(k, 0) + 1
        for pid, p in pages.items():
            u = users[pid]
            for first, last in p.accesses():  # one pin user per access range
                for k in range(first, last + 1):
                    u[k] = u.get(k, 0) + 1
            assert {k: v[1] for k, v in p.pinned().items()} == u
        want: dict[int, int] = {}  # one pin per pages object pinning a page
        for p in pages.values():
            for k in p.pinned():
                want[p.uptr + k * P] = want.get(p.uptr + k * P, 0) + 1
        assert {va: c for va, (_, c) in self.env.user.pins.items()} == want


def test_random_sequences_keep_domains_and_pins_consistent(make: Any) -> None:
    run_state_machine_as_test(
        lambda: IoptMachine(make),
        settings=settings(
            max_examples=150, stateful_step_count=50, deadline=None, derandomize=True
        ),
    )
