"""Random ioctl sequences, valid and invalid, against a reference model of ids, references
and IOAS areas (the issue's state machine). After every step: the areas are what the
reference predicts, a failed call changed nothing, each pages object is referenced by
exactly the areas that map it, every pin in the process belongs to a live pages object,
and each object's ``users`` is one plus its holders. Closing leaves no object and no pin.
"""

from __future__ import annotations

import errno
from typing import Any, Final

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from iommusim.errors import ApiError
from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd.objects import IommufdObject, ObjectTable, ObjType

P: Final = 0x1000
U64: Final = (1 << 64) - 1
RW: Final = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE

ids = st.integers(0, 6)
iovas = st.sampled_from([0x10000, 0x11000, 0x12000, 0x14000, 0x18000, 0x20000])
lengths = st.sampled_from([0, P, 0x2000, 0x3000, 0x8000])
offsets = st.sampled_from([0, P, 0x3000, 0x8000])


class Holder(IommufdObject):
    __slots__ = ("target",)
    type = ObjType.HWPT_PAGING

    def __init__(self, target: IommufdObject) -> None:
        super().__init__()
        self.target = target
        ObjectTable.inc_users(target)

    def destroy(self) -> None:
        ObjectTable.dec_users(self.target)


class IommufdMachine(RuleBasedStateMachine):
    def __init__(self, make: Any) -> None:
        super().__init__()
        self.env: Any = make()
        # Reference: IOAS id -> {iova: length}; holder id -> IOAS id.
        self.ioas: dict[int, dict[int, int]] = {}
        self.holders: dict[int, int] = {}

    # ------------------------------------------------------------------ helpers
    def _unchanged_on_error(self, call: Any) -> ApiError | None:
        before = self.env.snapshot()
        try:
            call()
        except ApiError as e:
            assert self.env.snapshot() == before, f"{type(e).__name__} changed state"
            return e
        return None

    def _oid(self, data: st.DataObject) -> int:
        """An existing IOAS id most of the time, any small id otherwise."""
        if self.ioas:
            return data.draw(st.one_of(st.sampled_from(sorted(self.ioas)), ids))
        return data.draw(ids)

    def _areas(self, ioas_id: int) -> dict[int, int]:
        return {a.iova: a.length for a in self.env.ioas(ioas_id).iopt.areas}

    # ------------------------------------------------------------------ rules
    @rule()
    def alloc(self) -> None:
        oid = self.env.fd.ioas_alloc()
        assert oid not in self.ioas and oid not in self.holders
        used = set(self.ioas) | set(self.holders)
        assert oid == min(set(range(1, len(used) + 2)) - used)  # lowest free id
        self.ioas[oid] = {}

    @rule(oid=ids)
    def destroy(self, oid: int) -> None:
        err = self._unchanged_on_error(lambda: self.env.fd.destroy(oid))
        if oid in self.holders:
            assert err is None
            del self.holders[oid]
        elif oid in self.ioas and oid not in self.holders.values():
            assert err is None
            del self.ioas[oid]
        elif oid in self.ioas:
            assert err is not None and err.errno == errno.EBUSY
        else:
            assert err is not None and err.errno == errno.ENOENT

    @precondition(lambda self: bool(self.ioas))
    @rule(data=st.data())
    def hold(self, data: st.DataObject) -> None:
        target = data.draw(st.sampled_from(sorted(self.ioas)))
        t = self.env.fd.file.objects
        h = Holder(t.get(target))
        t.reserve(h)
        t.finalize(h)
        self.holders[h.id] = target

    @rule(data=st.data(), iova=iovas, length=lengths, off=offsets, fixed=st.booleans())
    def map(self, data: st.DataObject, iova: int, length: int, off: int, fixed: bool) -> None:
        oid = self._oid(data)
        err = self._unchanged_on_error(
            lambda: self.env.fd.ioas_map(oid, self.env.buf + off, length, iova if fixed else None)
        )
        if oid not in self.ioas:
            assert err is not None and err.errno == errno.ENOENT
            return
        ref = self.ioas[oid]
        if length == 0:
            assert err is not None and err.errno == errno.EINVAL
            return
        if fixed:
            clash = any(i <= iova + length - 1 and iova <= i + n - 1 for i, n in ref.items())
            if clash:
                assert err is not None and err.errno == errno.EEXIST
                return
            assert err is None
            ref[iova] = length
        else:
            assert err is None
            new = set(self._areas(oid)) - set(ref)
            (got,) = new
            addr = self.env.buf + off
            align = min(1 << (length - 1).bit_length(), addr & -addr, 2 << 20)
            assert got >= P and got % align == 0
            ref[got] = length
        assert self._areas(oid) == ref

    @rule(data=st.data(), iova=iovas, length=lengths)
    def unmap(self, data: st.DataObject, iova: int, length: int) -> None:
        oid = self._oid(data)
        ref_areas = sorted(self.ioas.get(oid, {}).items())
        if ref_areas and data.draw(st.booleans()):
            # Near an area's edges: exact, one page short, one page long, shifted.
            i, n = data.draw(st.sampled_from(ref_areas))
            iova = data.draw(st.sampled_from([i, i + P, i - P]))
            length = data.draw(st.sampled_from([n, n - P, n + P, 2 * n]))
        try:
            got: int | None = self.env.fd.ioas_unmap(oid, iova, length)
            err = None
        except ApiError as e:
            got, err = None, e
        if oid not in self.ioas:
            assert err is not None and err.errno == errno.ENOENT
            return
        if length == 0:
            assert err is not None and err.errno == errno.EINVAL
            return
        ref = self.ioas[oid]
        last = iova + length - 1
        # iopt_unmap_iova_range: in IOVA order, stop at the first area sticking out.
        done, stopped = 0, False
        for i in sorted(ref):
            n = ref[i]
            if i + n - 1 < iova or i > last:
                continue
            if i < iova or i + n - 1 > last:
                stopped = True
                break
            del ref[i]
            done += n
        if stopped or done == 0:
            assert err is not None and err.errno == errno.ENOENT
        else:
            assert err is None and got == done
        assert self._areas(oid) == ref

    @rule(data=st.data(), iova=iovas, length=lengths, dst_iova=iovas)
    def copy(self, data: st.DataObject, iova: int, length: int, dst_iova: int) -> None:
        src, dst = self._oid(data), self._oid(data)
        dst_iova += 0x100000 * data.draw(st.integers(0, 1))
        err = self._unchanged_on_error(
            lambda: self.env.fd.ioas_copy(dst, src, iova, length, dst_iova=dst_iova)
        )
        # ioas.c iommufd_ioas_copy -> iopt_get_pages -> iopt_map_pages, in that order.
        if src not in self.ioas:
            assert err is not None and err.errno == errno.ENOENT
            return
        if length == 0:
            assert err is not None and err.errno == errno.EINVAL
            return
        cur, last = iova, iova + length - 1
        pieces = []
        for i, n in sorted(self.ioas[src].items()):
            if i <= cur <= i + n - 1:
                end = min(last, i + n - 1)
                pieces.append(end - cur + 1)
                cur = end + 1
                if cur > last:
                    break
        if cur <= last or dst not in self.ioas:
            assert err is not None and err.errno == errno.ENOENT
            return
        ref = self.ioas[dst]
        if any(i <= dst_iova + length - 1 and dst_iova <= i + n - 1 for i, n in ref.items()):
            assert err is not None and err.errno == errno.EEXIST
            return
        assert err is None
        at = dst_iova
        for n in pieces:
            ref[at] = n
            at += n
        assert self._areas(dst) == ref

    @precondition(lambda self: any(self.ioas.values()))
    @rule(data=st.data())
    def pin(self, data: st.DataObject) -> None:
        oid = data.draw(st.sampled_from(sorted(o for o, a in self.ioas.items() if a)))
        area = data.draw(st.sampled_from(self.env.ioas(oid).iopt.areas))
        area.pages.pin(area.first_index, area.last_index)

    # ------------------------------------------------------------------ invariants
    @invariant()
    def tables_agree(self) -> None:
        objs = {o.id: o for o in self.env.fd.file.objects}
        assert set(objs) == set(self.ioas) | set(self.holders)
        for oid, ref in self.ioas.items():
            assert self._areas(oid) == ref
            assert objs[oid].users == 1 + sum(1 for t in self.holders.values() if t == oid)

    @invariant()
    def pages_refs_and_pins(self) -> None:
        refs: dict[int, int] = {}
        pages = {}
        for oid in self.ioas:
            for a in self.env.ioas(oid).iopt.areas:
                refs[id(a.pages)] = refs.get(id(a.pages), 0) + 1
                pages[id(a.pages)] = a.pages
        for k, p in pages.items():
            assert p.refs == refs[k]
        pinned: set[int] = set()
        for p in pages.values():
            pinned |= {p.uptr + i * P for i in p.pinned()}
        assert set(self.env.user.pins) == pinned

    def teardown(self) -> None:
        self.env.fd.close()
        assert len(self.env.fd.file.objects) == 0
        assert self.env.user.pins == {}


def test_iommufd_state_machine(make: Any) -> None:
    run_state_machine_as_test(
        lambda: IommufdMachine(make),
        settings=settings(
            max_examples=100, stateful_step_count=40, deadline=None, derandomize=True
        ),
    )
