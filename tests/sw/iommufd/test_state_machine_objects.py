"""Random ioctl sequences over the whole object graph of a CONFIG_IOMMUFD_TEST kernel (the
issue's state machine, beyond IOAS objects): IOAS_ALLOC, IOAS_MAP/UNMAP, MOCK_DOMAIN (a
SELFTEST object, its DEVICE and an auto HWPT), MOCK_DOMAIN_REPLACE, HWPT_ALLOC (paging,
NEST_PARENT, nested on a parent or on a vIOMMU), VIOMMU_ALLOC and its mmap, VDEVICE_ALLOC,
VEVENTQ_ALLOC, FAULT_QUEUE_ALLOC, HW_QUEUE_ALLOC, CREATE_ACCESS/ACCESS_PAGES/
ACCESS_REPLACE_IOAS, closing the queue and access fds, badly framed structs and DESTROY of
any id -- valid and invalid.

The reference model is a table of ids: each object's kind and the ids it holds a ``users``
reference on (``refcount_inc(&obj->users)`` in the kernel: an HWPT on its IOAS or parent or
vIOMMU and on its fault queue, an attachment on its HWPT, a vIOMMU on its parent, a vDEVICE
/ vEVENTQ / HW queue on its vIOMMU, a HW queue on the queue before it, an access on its IOAS),
plus the references from outside the table (the binding driver's and each attachment's on a
DEVICE, an open queue file's on its queue, an mmap's on its vIOMMU, the driver's on an
access). After every step each object's ``users`` is one plus those; a failed call changed
nothing (:func:`~testsupport.selftest.selftest_snapshot`); DESTROY of an object with holders
is EBUSY (``iommufd_object_remove``: ``refcount_dec_if_one``). Closing the file and every fd
leaves no object, no pin, no mmap region, no vIOMMU, every domain freed and the IOMMU core
without devices or groups. Each user page's pin count is predicted too.

The three differences from Linux 7.3 this machine found are fixed; the tests at the end pin
them: VIOMMU_ALLOC checks the type first, a vDEVICE holds its DEVICE, and a mapped vIOMMU
region defers the file's release to its munmap (the teardown closes the file first).
"""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from iommusim.errors import ApiError
from iommusim.sw.core.domain import Domain
from iommusim.sw.iommufd import selftest_uapi as t
from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd.hwpt import Hwpt
from iommusim.sw.iommufd.selftest_uapi import STRUCTS as TS
from iommusim.sw.mm import PROT_READ, PROT_WRITE
from testsupport.selftest import PAGE, SelftestEnv, selftest_snapshot

START: Final = t.MOCK_APERTURE_START
U64: Final = (1 << 64) - 1
NEST_PARENT: Final = uapi.IOMMU_HWPT_ALLOC_NEST_PARENT
DIRTY: Final = uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
FAULT_ID_VALID: Final = uapi.IOMMU_HWPT_FAULT_ID_VALID
NESTED_DATA: Final = bytes(TS["iommu_hwpt_selftest"].encode(iotlb=t.IOMMU_TEST_IOTLB_DEFAULT))
VIOMMU_DATA: Final = TS["iommu_viommu_selftest"]

#: An object-creating ioctl -> the field its first check wants 0 (EOPNOTSUPP otherwise).
BAD_FLAG: Final = {
    uapi.IOMMU_IOAS_ALLOC: "flags",
    uapi.IOMMU_HWPT_ALLOC: "__reserved",
    uapi.IOMMU_VIOMMU_ALLOC: "flags",
    uapi.IOMMU_VEVENTQ_ALLOC: "__reserved",
    uapi.IOMMU_FAULT_QUEUE_ALLOC: "flags",
    uapi.IOMMU_HW_QUEUE_ALLOC: "flags",
}
KINDS: Final = ("ioas", "dev", "paging", "nested", "viommu", "fault")

#: IOVAs to map at: in the mock aperture, 64 KiB apart, and one below it; lengths up to
#: 16 KiB.
LOW: Final = 0x10000
iovas = st.sampled_from([START + i * 0x10000 for i in range(4)] + [LOW])
lengths = st.sampled_from([0, PAGE, 2 * PAGE, 4 * PAGE])
#: Small ids: existing ones, destroyed ones and ones never used.
small_ids = st.one_of(st.integers(0, 24), st.sampled_from([1 << 31, (1 << 32) - 1]))


@dataclass
class Obj:
    """One object of the reference: its kind, what it holds and its own state."""

    kind: str
    holds: list[int] = field(default_factory=list)
    # ioas: {iova: length}
    areas: dict[int, int] = field(default_factory=dict)
    uptrs: dict[int, int] = field(default_factory=dict)  # iova -> the user VA mapped there
    # sobj: its DEVICE id; device: its SELFTEST id, attached HWPT, vDEVICE, NO_DIRTY
    dev: int = 0
    sobj: int = 0
    attached: int = 0
    vdev: int = 0
    no_dirty: bool = False
    # access: created with MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES
    needs_pin: bool = False
    # paging / nested: auto domain, nest parent, dirty tracking, fault queue, parent/vIOMMU
    auto: bool = False
    nest_parent: bool = False
    dirty: bool = False
    fault: int = 0
    parent: int = 0
    viommu: int = 0
    seq: int = 0
    # viommu: mmap offset and open mappings, vdevs {virt_id: id}, vEVENTQ types, queues
    mmap_offset: int = 0
    mmaps: int = 0
    vdevs: dict[int, int] = field(default_factory=dict)
    veventq_types: dict[int, int] = field(default_factory=dict)
    queues: dict[int, int] = field(default_factory=dict)
    # queue objects (fault, veventq, selftest access): open fd; veventq type
    fd: int = 0
    qtype: int = 0
    # hw_queue: index, its internal access, the IOVA page it locks; access: items
    index: int = 0
    access: int = 0
    locked: int = 0
    items: dict[int, tuple[int, int]] = field(default_factory=dict)


class ObjectGraphMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.env = SelftestEnv()
        self.ref: dict[int, Obj] = {}
        self.tombstones: set[int] = set()
        self.seq = 0
        #: Every domain an HWPT ever had: all freed at the end.
        self.domains: list[Domain] = []
        #: A page for the vIOMMU's user data, and a read-only one holding the same data.
        self.vdata = self.env.mm.mmap(PAGE, PROT_READ | PROT_WRITE)
        self.vdata_ro = self.env.mm.mmap(PAGE, PROT_READ | PROT_WRITE)
        self.env.mm.write(self.vdata_ro, bytes(VIOMMU_DATA.encode(in_data=0x55)))
        self.env.mm.mprotect(self.vdata_ro, PAGE, PROT_READ)
        # Fault the buffers in: a failed ioctl may have touched them, which is no state of
        # iommufd's (the snapshot counts allocated pages, for the vIOMMU regions).
        self.env.mm.write(self.env.buffer, bytes(0x10000 + 4 * PAGE))
        self.env.mm.write(self.env.fd.scratch_va, bytes(self.env.fd.scratch_size))

    # ------------------------------------------------------------------ helpers
    def _ids(self, kind: str) -> list[int]:
        return sorted(i for i, o in self.ref.items() if o.kind == kind)

    def _pick(self, data: st.DataObject, *kinds: str) -> int:
        """Mostly an id of one of ``kinds``; sometimes any small id."""
        mine = sorted(i for i, o in self.ref.items() if o.kind in kinds)
        if mine and data.draw(st.integers(0, 5)):
            return data.draw(st.sampled_from(mine))
        return data.draw(small_ids)

    def _free_ids(self, n: int) -> list[int]:
        """The ``n`` ids the next allocations take: lowest free first (``xa_alloc``)."""
        taken = set(self.ref) | self.tombstones
        out: list[int] = []
        i = 1
        while len(out) < n:
            if i not in taken:
                out.append(i)
            i += 1
        return out

    def _call(self, call: Callable[[], object]) -> tuple[object, ApiError | None]:
        """Run ``call``; on an error, assert it changed nothing."""
        before = selftest_snapshot(self.env)
        try:
            return call(), None
        except ApiError as e:
            after = selftest_snapshot(self.env)
            diff = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
            assert not diff, f"{e!r} changed {diff}"
            return None, e

    @staticmethod
    def _fails(err: ApiError | None, code: int) -> None:
        assert err is not None, f"expected {errno.errorcode[code]}, it succeeded"
        assert err.errno == code, (errno.errorcode.get(err.errno), errno.errorcode[code], err)

    @staticmethod
    def _ok(err: ApiError | None) -> None:
        assert err is None, f"unexpected {err!r}"

    def _kind(self, oid: int) -> str:
        o = self.ref.get(oid)
        return o.kind if o is not None else ""

    def _new(self, oid: int, obj: Obj) -> None:
        assert oid not in self.ref and oid not in self.tombstones
        self.seq += 1
        obj.seq = self.seq
        self.ref[oid] = obj
        got = self.env.file.objects.get(oid)
        if isinstance(got, Hwpt) and got.domain is not None:
            self.domains.append(got.domain)

    def _attach(self, dev: int, hwpt: int) -> None:
        """The reference's attachment of DEVICE ``dev`` moves to ``hwpt`` (0: detached);
        an auto HWPT left without devices is destroyed (``iommufd_hw_pagetable_put``)."""
        d = self.ref[dev]
        old = d.attached
        d.attached = hwpt
        d.holds = [hwpt] if hwpt else []
        left = any(o.kind == "dev" and o.attached == old for o in self.ref.values())
        if old and old != hwpt and self.ref[old].auto and not left:
            self._remove(old)

    def _remove(self, oid: int) -> None:
        """Destroy ``oid`` in the reference, with what goes with it."""
        o = self.ref.pop(oid)
        if o.kind == "sobj":
            dev = self.ref[o.dev]
            self._attach(o.dev, 0)
            vdev = dev.vdev
            if vdev:  # iommufd_device_remove_vdev: the vDEVICE leaves a tombstone
                self._remove(vdev)
                self.tombstones.add(vdev)
            del self.ref[o.dev]
        elif o.kind == "vdev":
            v = self.ref[o.viommu]
            del v.vdevs[next(k for k, i in v.vdevs.items() if i == oid)]
            self.ref[o.dev].vdev = 0
        elif o.kind == "veventq":
            del self.ref[o.viommu].veventq_types[o.qtype]
        elif o.kind == "hw_queue":
            del self.ref[o.viommu].queues[o.index]
            del self.ref[o.access]

    def users(self, oid: int) -> int:
        """1 (the table's) + what the reference says holds ``oid``."""
        o = self.ref[oid]
        n = 1 + sum(r.holds.count(oid) for r in self.ref.values())
        if o.kind == "dev":
            n += 1 + bool(o.attached)  # the binding driver, the attachment
            if o.vdev:  # iommufd_vdevice_alloc_ioctl keeps the device reference
                n += 1
        elif o.kind in ("fault", "veventq"):
            n += bool(o.fd)  # the open queue file
        elif o.kind == "viommu":
            n += o.mmaps
        elif o.kind in ("access", "iaccess"):
            n += 1  # the calling driver's, until iommufd_access_destroy
        return n

    def _areas(self, ioas: int) -> dict[int, int]:
        obj = self.env.file.objects.get(ioas)
        return {a.iova: a.length for a in obj.iopt.areas}  # type: ignore[attr-defined]

    def _pins(self) -> Counter[int]:
        """Pins per user page: each area (its own pages object) pins a page once while
        anything needs it -- a domain on its IOAS (all of it), an access item or a HW
        queue there."""
        want: Counter[int] = Counter()
        for ioas in self._ids("ioas"):
            o, dom = self.ref[ioas], self._has_domain(ioas)
            users = [r for r in self.ref.values() if r.holds[:1] == [ioas]]
            spans = [it for r in users if r.kind == "access" for it in r.items.values()]
            spans += [
                (q.locked, PAGE)
                for q in self.ref.values()
                if q.kind == "hw_queue" and self.ref[q.access].holds == [ioas]
            ]
            for iova, n in o.areas.items():
                pages = set(range(iova, iova + n, PAGE)) if dom else set()
                for i, ln in spans:
                    pages |= set(range(max(i, iova), min(i + ln, iova + n), PAGE))
                want.update(o.uptrs[iova] + p - iova for p in pages)
        return want

    def _has_domain(self, ioas: int) -> bool:
        """A paging HWPT is on the IOAS: the mock aperture is reserved in it."""
        return any(o.kind == "paging" and o.holds[0] == ioas for o in self.ref.values())

    def _low(self, ioas: int) -> bool:
        """The IOAS maps below the mock aperture: a new domain cannot join it
        (``iopt_table_add_domain`` -> ``iopt_reserve_iova``: EADDRINUSE)."""
        return any(i < START for i in self.ref[ioas].areas)

    def _ioas_of(self, hwpt: int) -> int:
        o = self.ref[hwpt]
        while o.kind == "nested":
            o = self.ref[o.parent or self.ref[o.viommu].holds[0]]
        return o.holds[0]

    # ------------------------------------------------------------------ a starting scene
    @initialize(scene=st.integers(0, 4))
    def start(self, scene: int) -> None:
        """Deep graphs are rare from scratch: start from one of a few scenes: nothing; an
        IOAS with two areas and one below the mock aperture; or the two areas and a mock
        device on it with an access; + a nesting parent and a vIOMMU with its mmap region;
        + a vDEVICE, a nested HWPT on the vIOMMU and a HW queue."""
        if scene >= 1:
            self.ioas_alloc()
            self._map(1, START, 4 * PAGE, 0)
            self._map(1, START + 0x10000, 2 * PAGE, 0x10000)
        if scene == 1:  # below the mock aperture: no domain can join IOAS 1 now
            self._map(1, LOW, PAGE, 0)
        if scene >= 2:
            self._mock_domain(1, False)  # sobj 2, DEVICE 3, auto HWPT 4
            self._create_access(1, t.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)  # 5
        if scene >= 3:
            self._hwpt_paging(3, 1, NEST_PARENT, 0)  # 6
            self._viommu(3, 6, t.IOMMU_VIOMMU_TYPE_SELFTEST, "full")  # 7
        if scene >= 4:
            self._vdevice(7, 3, 1)  # 8
            self._hwpt_nested(3, 7, 0, True)  # 9
            self._hw_queue(7, 0, START, 0)  # 10, its access 11

    # ------------------------------------------------------------------ IOAS
    @rule()
    def ioas_alloc(self) -> None:
        (want,) = self._free_ids(1)
        oid, err = self._call(self.env.fd.ioas_alloc)
        self._ok(err)
        assert oid == want
        self._new(want, Obj("ioas"))

    @rule(data=st.data(), iova=iovas, length=lengths, off=st.sampled_from([0, PAGE, 0x10000]))
    def ioas_map(self, data: st.DataObject, iova: int, length: int, off: int) -> None:
        self._map(self._pick(data, "ioas"), iova, length, off)

    def _map(self, oid: int, iova: int, length: int, off: int) -> None:
        _, err = self._call(lambda: self.env.fd.ioas_map(oid, self.env.buffer + off, length, iova))
        if self._kind(oid) != "ioas":
            return self._fails(err, errno.ENOENT)
        if not length:
            return self._fails(err, errno.EINVAL)
        areas = self.ref[oid].areas
        if iova < START and self._has_domain(oid):  # iopt_check_iova: reserved
            return self._fails(err, errno.EINVAL)
        if any(i < iova + length and iova < i + n for i, n in areas.items()):
            return self._fails(err, errno.EEXIST)
        self._ok(err)
        areas[iova] = length
        self.ref[oid].uptrs[iova] = self.env.buffer + off

    def _locked(self, ioas: int) -> set[int]:
        """IOVAs of areas a HW queue's internal access locks (``area->num_locks``)."""
        out = set()
        for o in self.ref.values():
            if o.kind == "hw_queue" and self._ioas_of(self.ref[o.viommu].holds[0]) == ioas:
                out |= {i for i, n in self.ref[ioas].areas.items() if i <= o.locked < i + n}
        return out

    def _unmapped(self, ioas: int, iova: int, length: int) -> None:
        """An unmap of ``[iova, iova + length)`` tells the accesses
        (``iommufd_test_access_unmap``): their items there are unpinned."""
        for o in self.ref.values():
            if o.kind == "access" and o.holds == [ioas]:
                for k, (i, n) in list(o.items.items()):
                    if i < iova + length and iova < i + n:
                        del o.items[k]

    @rule(data=st.data(), whole=st.booleans())
    def ioas_unmap(self, data: st.DataObject, whole: bool) -> None:
        """``iopt_unmap_iova_range``: areas in IOVA order; a locked one stops it (EBUSY,
        keeping what was unmapped before it); nothing there is ENOENT."""
        oid = self._pick(data, "ioas")
        areas = self.ref[oid].areas if self._kind(oid) == "ioas" else {}
        if whole or not areas:
            iova, length = 0, U64
        else:
            iova = data.draw(st.sampled_from(sorted(areas)))
            length = areas[iova]
        before = selftest_snapshot(self.env)
        try:
            got, err = self.env.fd.ioas_unmap(oid, iova, length), None
        except ApiError as e:
            got, err = None, e
        if self._kind(oid) != "ioas":
            self._fails(err, errno.ENOENT)
            assert selftest_snapshot(self.env) == before
            return
        locked, done = self._locked(oid), 0
        for i in sorted(areas):
            if not iova <= i < iova + length:
                continue
            if i in locked:
                break
            n = areas.pop(i)
            done += n
            self._unmapped(oid, i, n)
        if any(iova <= i < iova + length for i in locked):
            self._fails(err, errno.EBUSY)
        elif not done and length != U64:
            self._fails(err, errno.ENOENT)
        else:
            self._ok(err)
            assert got == done
        if not done:
            assert selftest_snapshot(self.env) == before

    # ------------------------------------------------------------------ mock devices
    def _pt_result(self, pt: int, dev: Obj | None) -> tuple[int, int]:
        """What attaching (a new device, or ``dev``) to ``pt`` does: (errno or 0, the HWPT:
        an existing one, or -1 for a new auto HWPT)."""
        kind = self._kind(pt)
        if not kind:
            return errno.ENOENT, 0
        if kind == "ioas":
            autos = [
                i
                for i, o in sorted(self.ref.items(), key=lambda kv: kv[1].seq)
                if o.kind == "paging" and o.auto and o.holds[0] == pt
            ]
            if not autos and self._low(pt):
                return errno.EADDRINUSE, 0
            return 0, autos[0] if autos else -1
        if kind not in ("paging", "nested"):
            return errno.EINVAL, 0
        h = self.ref[pt]
        if dev is not None and dev.attached == pt:
            return 0, pt  # iommufd_device_do_replace: the same HWPT changes nothing
        no_dirty = dev.no_dirty if dev is not None else False
        if h.dirty and no_dirty:
            return errno.EINVAL, 0  # mock_domain_nop_attach
        if h.viommu and (dev is None or not dev.vdev or self.ref[dev.vdev].viommu != h.viommu):
            return errno.ENOENT, 0  # iommufd_viommu_get_vdev_id
        return 0, pt

    @rule(data=st.data(), no_dirty=st.booleans(), more=st.integers(0, 6))
    def mock_domain(self, data: st.DataObject, no_dirty: bool, more: int) -> None:
        pt = self._pick(data, "ioas", "paging", "nested")
        self._mock_domain(pt, no_dirty, bad_flags=not more, pasid=more == 1)

    def _mock_domain(
        self, pt: int, no_dirty: bool, bad_flags: bool = False, pasid: bool = False
    ) -> None:
        """``iommufd_test_mock_domain``: the SELFTEST object, then ``mock_dev_create``
        (EINVAL for unknown flags), ``iommufd_device_bind``, ``iommufd_device_attach``."""
        flags = t.MOCK_FLAGS_DEVICE_NO_DIRTY if no_dirty else 0
        if pasid:
            flags |= t.MOCK_FLAGS_DEVICE_PASID
        if bad_flags:
            flags |= 1 << 9
        sobj, idev, auto = self._free_ids(3)
        code, hwpt = self._pt_result(pt, Obj("dev", no_dirty=no_dirty))
        if pt == idev:  # iommufd_device_bind has published the new DEVICE: not an HWPT
            code = errno.EINVAL
        if bad_flags:
            code = errno.EINVAL
        got, err = self._call(lambda: self.env.mock_domain(pt, flags))
        if code:
            return self._fails(err, code)
        self._ok(err)
        hwpt = auto if hwpt == -1 else hwpt
        ids = (got.stdev_id, got.idev_id, got.hwpt_id)  # type: ignore[attr-defined]
        assert ids == (sobj, idev, hwpt), (ids, pt, self.ref.get(pt))
        self._new(sobj, Obj("sobj", dev=idev))
        self._new(idev, Obj("dev", sobj=sobj, no_dirty=no_dirty))
        if hwpt == auto:
            self._new(auto, Obj("paging", holds=[pt], auto=True))
        self._attach(idev, hwpt)

    @rule(data=st.data())
    def mock_domain_replace(self, data: st.DataObject) -> None:
        sobj = self._pick(data, "sobj")
        pt = self._pick(data, "ioas", "paging", "nested")
        (auto,) = self._free_ids(1)
        out, err = self._call(
            lambda: self.env.test_cmd(t.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, sobj, pt_id=pt)
        )
        if self._kind(sobj) != "sobj":
            return self._fails(err, errno.ENOENT)
        dev = self.ref[self.ref[sobj].dev]
        code, hwpt = self._pt_result(pt, dev)
        if code:
            return self._fails(err, code)
        self._ok(err)
        hwpt = auto if hwpt == -1 else hwpt
        assert out["pt_id"] == hwpt  # type: ignore[index]
        if hwpt == auto:
            self._new(auto, Obj("paging", holds=[pt], auto=True))
        self._attach(self.ref[sobj].dev, hwpt)

    # ------------------------------------------------------------------ HWPTs
    @rule(
        data=st.data(),
        flags=st.sampled_from(
            [0, NEST_PARENT, DIRTY, NEST_PARENT | DIRTY, uapi.IOMMU_HWPT_ALLOC_PASID, 1 << 30]
        ),
        with_fault=st.integers(0, 3),
    )
    def hwpt_alloc_paging(self, data: st.DataObject, flags: int, with_fault: int) -> None:
        """``iommufd_hwpt_alloc`` on an IOAS: ``iommufd_hwpt_paging_alloc``'s checks, then
        the fault queue (ENOENT aborts the new HWPT)."""
        fault = self._pick(data, "fault") if with_fault == 3 else 0
        self._hwpt_paging(self._pick(data, "dev"), self._pick(data, "ioas"), flags, fault)

    def _hwpt_paging(self, dev: int, pt: int, flags: int, fault: int) -> None:
        if fault:
            flags |= FAULT_ID_VALID
        (want,) = self._free_ids(1)
        got, err = self._call(
            lambda: self.env.raw(
                uapi.IOMMU_HWPT_ALLOC, flags=flags, dev_id=dev, pt_id=pt, fault_id=fault
            )
        )
        if self._kind(dev) != "dev":
            return self._fails(err, errno.ENOENT)
        if self._kind(pt) in ("paging", "viommu"):  # the nested paths: no data
            return self._fails(err, errno.EOPNOTSUPP)
        if self._kind(pt) != "ioas":
            return self._fails(err, errno.EINVAL)
        if flags & (1 << 30) or (flags & FAULT_ID_VALID and flags & NEST_PARENT):
            return self._fails(err, errno.EOPNOTSUPP)
        if flags & DIRTY and self.ref[dev].no_dirty:
            return self._fails(err, errno.EOPNOTSUPP)
        if self._low(pt):
            return self._fails(err, errno.EADDRINUSE)
        if fault and self._kind(fault) != "fault":
            return self._fails(err, errno.ENOENT)
        self._ok(err)
        assert got["out_hwpt_id"] == want  # type: ignore[index]
        holds = [pt] + ([fault] if fault else [])
        self._new(
            want,
            Obj(
                "paging",
                holds=holds,
                nest_parent=bool(flags & NEST_PARENT),
                dirty=bool(flags & DIRTY),
                fault=fault,
            ),
        )

    @rule(data=st.data(), with_data=st.integers(0, 4), bad_flags=st.integers(0, 6))
    def hwpt_alloc_nested(self, data: st.DataObject, with_data: int, bad_flags: int) -> None:
        """``iommufd_hwpt_nested_alloc`` on a paging HWPT, or
        ``iommufd_viommu_alloc_hwpt_nested`` on a vIOMMU, with IOMMU_HWPT_DATA_SELFTEST."""
        # NEST_PARENT is no flag of a nested HWPT (EOPNOTSUPP); on an IOAS it is fine.
        flags = NEST_PARENT if not bad_flags else 0
        pt = self._pick(data, "paging", "viommu")
        fault = self._pick(data, "fault") if with_data == 4 else 0
        self._hwpt_nested(self._pick(data, "dev"), pt, flags, bool(with_data), fault)

    def _hwpt_nested(self, dev: int, pt: int, flags: int, with_data: bool, fault: int = 0) -> None:
        """The allocation's own checks first, then the fault queue (FAULT_ID_VALID with
        ``fault``: ENOENT aborts the new HWPT)."""
        payload = NESTED_DATA if with_data else b""
        (want,) = self._free_ids(1)
        got, err = self._call(
            lambda: self.env.fd.hwpt_alloc(
                dev,
                pt,
                flags=flags,
                data_type=t.IOMMU_HWPT_DATA_SELFTEST,
                data=payload,
                fault_id=fault,
            )
        )
        if not payload:  # data_type without data_len
            return self._fails(err, errno.EINVAL)
        if self._kind(dev) != "dev":
            return self._fails(err, errno.ENOENT)
        kind = self._kind(pt)
        if kind == "ioas" and fault and flags & NEST_PARENT:
            return self._fails(err, errno.EOPNOTSUPP)
        if kind == "ioas" and self._low(pt):
            return self._fails(err, errno.EADDRINUSE)
        if kind not in ("ioas", "paging", "viommu"):
            return self._fails(err, errno.EINVAL)
        if kind != "ioas" and flags:
            return self._fails(err, errno.EOPNOTSUPP)
        p = self.ref[pt]
        if kind == "paging" and (p.auto or not p.nest_parent):
            return self._fails(err, errno.EINVAL)
        if fault and self._kind(fault) != "fault":
            return self._fails(err, errno.ENOENT)
        self._ok(err)
        assert got == want
        faults = [fault] if fault else []
        if kind == "ioas":  # a paging HWPT with the selftest data (its pagetable_type)
            o = Obj("paging", holds=[pt, *faults], nest_parent=bool(flags), fault=fault)
        elif kind == "paging":
            o = Obj("nested", holds=[pt, *faults], parent=pt, fault=fault)
        else:
            o = Obj("nested", holds=[pt, *faults], viommu=pt, fault=fault)
        self._new(want, o)

    # ------------------------------------------------------------------ vIOMMU and friends
    @rule(
        data=st.data(),
        region=st.sampled_from(["none", "full", "short", "read-only", "unmapped"]),
        bad_type=st.integers(0, 5),
    )
    def viommu_alloc(self, data: st.DataObject, region: str, bad_type: int) -> None:
        """``iommufd_viommu_alloc_ioctl``: the type is checked (``get_viommu_size``) before
        the HWPT is looked up; the HWPT must be a nesting parent (EINVAL); then
        ``mock_viommu_init`` with the user data: EINVAL for a length below ``out_data``'s
        end, EFAULT for data it cannot read, or cannot write back into (after it made the
        mmap region, which goes again)."""
        dev = self._pick(data, "dev")
        hwpt = self._pick(data, "paging")
        vtype = t.IOMMU_VIOMMU_TYPE_SELFTEST
        if not bad_type:
            vtype = 0x1234  # another type: EOPNOTSUPP before the HWPT is looked at
        self._viommu(dev, hwpt, vtype, region)

    def _viommu(self, dev: int, hwpt: int, vtype: int, region: str) -> None:
        self.env.mm.write(self.vdata, bytes(VIOMMU_DATA.encode(in_data=0x55)))
        uptr, length = {
            "none": (0, 0),
            "full": (self.vdata, VIOMMU_DATA.size),
            "short": (self.vdata, 4),
            "read-only": (self.vdata_ro, VIOMMU_DATA.size),
            "unmapped": (0, VIOMMU_DATA.size),
        }[region]
        (want,) = self._free_ids(1)
        out, err = self._call(
            lambda: self.env.raw(
                uapi.IOMMU_VIOMMU_ALLOC,
                type=vtype,
                dev_id=dev,
                hwpt_id=hwpt,
                data_len=length,
                data_uptr=uptr,
            )
        )
        if self._kind(dev) != "dev":
            return self._fails(err, errno.ENOENT)
        if vtype != t.IOMMU_VIOMMU_TYPE_SELFTEST:
            return self._fails(err, errno.EOPNOTSUPP)
        if self._kind(hwpt) != "paging":
            return self._fails(err, errno.ENOENT)
        if not self.ref[hwpt].nest_parent:
            return self._fails(err, errno.EINVAL)
        if region == "short":
            return self._fails(err, errno.EINVAL)
        if region in ("read-only", "unmapped"):
            return self._fails(err, errno.EFAULT)
        self._ok(err)
        assert out["out_viommu_id"] == want  # type: ignore[index]
        v = Obj("viommu", holds=[hwpt])
        if region == "full":
            out = VIOMMU_DATA.decode(self.env.mm.read(self.vdata, VIOMMU_DATA.size))
            assert out["out_data"] == 0x55
            assert out["out_mmap_length"] == 2 * PAGE
            # _iommufd_alloc_mmap: mtree_alloc_range from PAGE_SIZE, first fit
            taken = [o.mmap_offset for o in self.ref.values() if o.mmap_offset]
            at = PAGE
            while any(at < x + 2 * PAGE and x < at + 2 * PAGE for x in taken):
                at += PAGE
            assert out["out_mmap_offset"] == at
            v.mmap_offset = at
        self._new(want, v)

    @precondition(lambda self: any(o.mmap_offset for o in self.ref.values()))
    @rule(
        data=st.data(),
        how=st.sampled_from(["map", "unmap", "short", "inner", "private", "exec"]),
    )
    def mmap(self, data: st.DataObject, how: str) -> None:
        """``iommufd_fops_mmap`` of a vIOMMU's region (up to two mappings, each holding
        the vIOMMU) or ``munmap`` of one; ENXIO for a length that is not the region's,
        EINVAL for a private mapping, EPERM for an executable one."""
        vid = data.draw(st.sampled_from([i for i, o in self.ref.items() if o.mmap_offset]))
        v = self.ref[vid]
        if (how == "unmap" and v.mmaps) or (how == "map" and v.mmaps == 2):
            self.env.file.munmap(v.mmap_offset)
            v.mmaps -= 1
            return
        offset, length, shared, exec_ = v.mmap_offset, 2 * PAGE, how != "private", how == "exec"
        if how in ("short", "inner"):  # not exactly the region: mtree_load, then ENXIO
            length = PAGE
            offset += PAGE if how == "inner" else 0
        _, err = self._call(lambda: self.env.file.mmap(offset, length, shared, exec_))
        if how in ("map", "unmap"):
            self._ok(err)
            v.mmaps += 1
        else:
            codes = {
                "short": errno.ENXIO,
                "inner": errno.ENXIO,
                "private": errno.EINVAL,
                "exec": errno.EPERM,
            }
            self._fails(err, codes[how])

    @rule(data=st.data(), virt_id=st.integers(0, 3))
    def vdevice_alloc(self, data: st.DataObject, virt_id: int) -> None:
        self._vdevice(self._pick(data, "viommu"), self._pick(data, "dev"), virt_id)

    def _vdevice(self, vid: int, dev: int, virt_id: int) -> None:
        (want,) = self._free_ids(1)
        got, err = self._call(lambda: self.env.fd.vdevice_alloc(vid, dev, virt_id))
        if self._kind(vid) != "viommu" or self._kind(dev) != "dev":
            return self._fails(err, errno.ENOENT)
        v, d = self.ref[vid], self.ref[dev]
        if d.vdev or virt_id in v.vdevs:
            return self._fails(err, errno.EEXIST)
        self._ok(err)
        assert got == want
        self._new(want, Obj("vdev", holds=[vid], viommu=vid, dev=dev))
        v.vdevs[virt_id] = want
        d.vdev = want

    @rule(
        data=st.data(),
        qtype=st.sampled_from([0, t.IOMMU_VEVENTQ_TYPE_SELFTEST, 7]),
        depth=st.sampled_from([0, 1, 4]),
    )
    def veventq_alloc(self, data: st.DataObject, qtype: int, depth: int) -> None:
        vid = self._pick(data, "viommu")
        (want,) = self._free_ids(1)
        (fd,) = [i for i in range(3, 64) if i not in self.env.file.fds][:1]
        got, err = self._call(lambda: self.env.fd.veventq_alloc(vid, qtype, depth))
        if not qtype:
            return self._fails(err, errno.EOPNOTSUPP)
        if not depth:
            return self._fails(err, errno.EINVAL)
        if self._kind(vid) != "viommu":
            return self._fails(err, errno.ENOENT)
        v = self.ref[vid]
        if qtype in v.veventq_types:
            return self._fails(err, errno.EEXIST)
        self._ok(err)
        assert got == (want, fd)
        self._new(want, Obj("veventq", holds=[vid], viommu=vid, fd=fd, qtype=qtype))
        v.veventq_types[qtype] = want

    @rule(bad=st.integers(0, 4))
    def fault_queue_alloc(self, bad: int) -> None:
        (want,) = self._free_ids(1)
        (fd,) = [i for i in range(3, 64) if i not in self.env.file.fds][:1]
        flags = 0 if bad else 1
        got, err = self._call(lambda: self.env.raw(uapi.IOMMU_FAULT_QUEUE_ALLOC, flags=flags))
        if flags:
            return self._fails(err, errno.EOPNOTSUPP)
        self._ok(err)
        assert (got["out_fault_id"], got["out_fault_fd"]) == (want, fd)  # type: ignore[index]
        self._new(want, Obj("fault", fd=fd))

    @precondition(lambda self: any(o.fd for o in self.ref.values()))
    @rule(data=st.data())
    def close_fd(self, data: st.DataObject) -> None:
        """``close()`` of a fault queue, vEVENTQ or selftest access fd: the file's release
        drops its reference (an access is destroyed)."""
        oid = data.draw(st.sampled_from(sorted(i for i, o in self.ref.items() if o.fd)))
        o = self.ref[oid]
        self.env.file.fds.close(o.fd)
        o.fd = 0
        if o.kind == "access":
            self._remove(oid)

    @rule(data=st.data(), index=st.integers(0, 2), iova=iovas, off=st.sampled_from([0, 8]))
    def hw_queue_alloc(self, data: st.DataObject, index: int, iova: int, off: int) -> None:
        """``iommufd_hw_queue_alloc_ioctl``: the queue object, then an internal access
        pinning the page (ENOENT unmapped), then ``mock_hw_queue_init_phys`` (EINVAL index,
        EEXIST in use, EIO without queue ``index - 1``)."""
        self._hw_queue(self._pick(data, "viommu"), index, iova, off)

    def _hw_queue(self, vid: int, index: int, iova: int, off: int) -> None:
        qid, aid = self._free_ids(2)
        got, err = self._call(
            lambda: self.env.raw(
                uapi.IOMMU_HW_QUEUE_ALLOC,
                viommu_id=vid,
                type=t.IOMMU_HW_QUEUE_TYPE_SELFTEST,
                index=index,
                nesting_parent_iova=iova + off,
                length=PAGE - off,
            )
        )
        if self._kind(vid) != "viommu":
            return self._fails(err, errno.ENOENT)
        v = self.ref[vid]
        ioas = self._ioas_of(v.holds[0])
        if not any(i <= iova < i + n for i, n in self.ref[ioas].areas.items()):
            return self._fails(err, errno.ENOENT)
        if index >= t.IOMMU_TEST_HW_QUEUE_MAX:
            return self._fails(err, errno.EINVAL)
        if index in v.queues:
            return self._fails(err, errno.EEXIST)
        if index and index - 1 not in v.queues:
            return self._fails(err, errno.EIO)
        self._ok(err)
        assert got["out_hw_queue_id"] == qid  # type: ignore[index]
        holds = [vid] + ([v.queues[index - 1]] if index else [])
        self._new(
            qid, Obj("hw_queue", holds=holds, viommu=vid, index=index, access=aid, locked=iova)
        )
        self._new(aid, Obj("iaccess", holds=[ioas]))
        v.queues[index] = qid

    # ------------------------------------------------------------------ accesses
    @rule(data=st.data(), pin=st.integers(0, 3))
    def create_access(self, data: st.DataObject, pin: int) -> None:
        flags = [t.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES, 0, 1 << 5, 1][pin]
        self._create_access(self._pick(data, "ioas"), flags)

    def _create_access(self, ioas: int, flags: int) -> None:
        (want,) = self._free_ids(1)
        (fd,) = [i for i in range(3, 64) if i not in self.env.file.fds][:1]
        got, err = self._call(
            lambda: self.env.test_cmd(t.IOMMU_TEST_OP_CREATE_ACCESS, ioas, flags=flags)
        )
        if flags & ~t.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES:
            return self._fails(err, errno.EOPNOTSUPP)
        if self._kind(ioas) != "ioas":
            return self._fails(err, errno.ENOENT)
        self._ok(err)
        assert got["out_access_fd"] == fd  # type: ignore[index]
        got_id = self.env.file.fds[fd].ops.access.id  # type: ignore[attr-defined]
        assert got_id == want, (got_id, want, sorted(self.ref), self.tombstones)
        self._new(want, Obj("access", holds=[ioas], fd=fd, needs_pin=bool(flags)))

    @precondition(lambda self: any(o.kind == "access" for o in self.ref.values()))
    @rule(data=st.data(), iova=iovas, length=st.sampled_from([PAGE, 3 * PAGE]))
    def access_pages(self, data: st.DataObject, iova: int, length: int) -> None:
        aid = data.draw(st.sampled_from(self._ids("access")))
        a = self.ref[aid]
        areas = self.ref[a.holds[0]].areas
        if areas and data.draw(st.booleans()):
            iova = data.draw(st.sampled_from(sorted(areas)))
        out, err = self._call(
            lambda: self.env.test_cmd(
                t.IOMMU_TEST_OP_ACCESS_PAGES, a.fd, iova=iova, length=length, uptr=0
            )
        )
        if not a.needs_pin:
            return self._fails(err, errno.EOPNOTSUPP)
        areas = self.ref[a.holds[0]].areas
        if not any(i <= iova and iova + length <= i + n for i, n in areas.items()):
            return self._fails(err, errno.ENOENT)
        self._ok(err)
        a.items[out["out_access_pages_id"]] = (iova, length)  # type: ignore[index]

    @precondition(lambda self: any(o.kind == "access" for o in self.ref.values()))
    @rule(data=st.data())
    def access_replace_ioas(self, data: st.DataObject) -> None:
        """``iommufd_access_replace``: ENOENT for no IOAS; the same IOAS changes nothing;
        another one unpins everything first (``ops->unmap(0, ULONG_MAX)``)."""
        aid = data.draw(st.sampled_from(self._ids("access")))
        a = self.ref[aid]
        ioas = self._pick(data, "ioas")
        _, err = self._call(
            lambda: self.env.test_cmd(t.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, a.fd, ioas_id=ioas)
        )
        if self._kind(ioas) != "ioas":
            return self._fails(err, errno.ENOENT)
        self._ok(err)
        if a.holds != [ioas]:
            a.holds = [ioas]
            a.items.clear()

    @precondition(lambda self: any(o.kind == "access" for o in self.ref.values()))
    @rule(data=st.data(), item=st.integers(0, 3))
    def destroy_access_pages(self, data: st.DataObject, item: int) -> None:
        aid = data.draw(st.sampled_from(self._ids("access")))
        a = self.ref[aid]
        if a.items and data.draw(st.integers(0, 3)):
            item = data.draw(st.sampled_from(sorted(a.items)))
        _, err = self._call(
            lambda: self.env.test_cmd(
                t.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, a.fd, access_pages_id=item
            )
        )
        if item not in a.items:
            return self._fails(err, errno.ENOENT)
        self._ok(err)
        del a.items[item]

    # ------------------------------------------------------------------ bad structs
    @rule(
        data=st.data(),
        request=st.sampled_from(sorted(BAD_FLAG)),
        how=st.sampled_from(["short", "tail", "past the buffer", "flag"]),
    )
    def bad_struct(self, data: st.DataObject, request: int, how: str) -> None:
        """``iommufd_fops_ioctl``'s framing (EINVAL below ``min_size``, E2BIG for a
        non-zero tail, EFAULT past the buffer) and each ioctl's first check (EOPNOTSUPP for
        a flag or reserved field), with ids that exist: all fail, changing nothing."""
        s = uapi.IOCTLS[request]
        ids = {f.name: self._pick(data, *KINDS) for f in s.fields if f.name.endswith("_id")}
        arg = s.encode(ids)
        size, code = s.size, errno.EOPNOTSUPP
        if how == "short":
            size, code = s.min_size - 1, errno.EINVAL
        elif how == "tail":
            arg += bytes(7) + b"\x01"
            size, code = len(arg), errno.E2BIG
        elif how == "past the buffer":
            size, code = s.size + 8, errno.EFAULT
        else:
            f = s.field(BAD_FLAG[request])
            arg[f.offset : f.end] = (1 << 8 * f.size - 1).to_bytes(f.size, "little")
        arg[:4] = size.to_bytes(4, "little")
        _, err = self._call(lambda: self.env.file.ioctl(request, arg))
        self._fails(err, code)

    # ------------------------------------------------------------------ DESTROY
    @rule(data=st.data())
    def destroy(self, data: st.DataObject) -> None:
        """IOMMU_DESTROY of any id: ENOENT for none (a tombstone included), EBUSY while
        anything holds it, else it goes with what it owns."""
        oid = data.draw(st.one_of(st.sampled_from(sorted(self.ref) or [0]), small_ids))
        _, err = self._call(lambda: self.env.fd.destroy(oid))
        if oid not in self.ref:
            return self._fails(err, errno.ENOENT)
        if self.users(oid) != 1:
            return self._fails(err, errno.EBUSY)
        self._ok(err)
        offset = self.ref[oid].mmap_offset
        self._remove(oid)
        if offset:  # mock_viommu_destroy -> iommufd_viommu_destroy_mmap: the region is gone
            _, err = self._call(lambda: self.env.file.mmap(offset, 2 * PAGE))
            self._fails(err, errno.ENXIO)

    # ------------------------------------------------------------------ invariants
    @invariant()
    def objects_and_users(self) -> None:
        objs = {o.id: o for o in self.env.file.objects}
        assert {i: o.type.value for i, o in objs.items()} == {
            i: {
                "sobj": "selftest",
                "dev": "device",
                "paging": "hwpt_paging",
                "nested": "hwpt_nested",
                "vdev": "vdevice",
                "iaccess": "access",
            }.get(o.kind, o.kind)
            for i, o in self.ref.items()
        }
        assert len(self.env.file.objects) == len(self.ref) + len(self.tombstones)
        for i in self.ref:
            assert objs[i].users == self.users(i), (i, self.ref[i].kind)

    @invariant()
    def areas_and_pins(self) -> None:
        for i in self._ids("ioas"):
            assert self._areas(i) == self.ref[i].areas
        got = {va: n for va, (_, n) in self.env.file.user.pins.items()}  # type: ignore[attr-defined]
        assert got == self._pins()
        for o in self.ref.values():
            if o.kind == "access":
                st_ = self.env.file.fds[o.fd].ops
                assert sorted(i.id for i in st_.items) == sorted(o.items)  # type: ignore[attr-defined]

    def teardown(self) -> None:
        f = self.env.file
        f.close()  # a mapped region keeps the file: the release waits for its munmap
        for o in self.ref.values():
            for _ in range(o.mmaps):
                f.munmap(o.mmap_offset)
        for fd in f.fds.fds():
            f.fds.close(fd)
        assert len(f.objects) == 0
        assert f.user.pins == {}  # type: ignore[attr-defined]
        assert f.mmaps.regions == {}
        assert f.selftest is not None and f.selftest.viommus == 0
        assert f.core is not None and f.core.devices == {} and f.core.groups == []
        assert all(d.freed for d in self.domains)


def test_object_graph_state_machine() -> None:
    run_state_machine_as_test(
        ObjectGraphMachine,
        settings=settings(max_examples=40, stateful_step_count=40, deadline=None, derandomize=True),
    )


# ---------------------------------------------------------------------- divergences fixed
# Each test below is the smallest sequence that showed where the model answered differently
# from Linux 7.3: VIOMMU_ALLOC asks get_viommu_size before it looks the HWPT up
# (iommufd_viommu_alloc_ioctl); a vDEVICE keeps the DEVICE reference its lookup took
# (iommufd_vdevice_alloc_ioctl puts it only on error); a mapped vIOMMU region keeps the file,
# so close() defers iommufd_fops_release to the munmap (iommufd_fops_mmap, vma->vm_file).


def _device_and_parent(env: SelftestEnv, nest_parent: bool) -> tuple[int, int]:
    ioas = env.fd.ioas_alloc()
    m = env.mock_domain(ioas)
    return m.idev_id, env.fd.hwpt_alloc(m.idev_id, ioas, flags=NEST_PARENT if nest_parent else 0)


@pytest.mark.parametrize("hwpt", ["no such object", "not a nesting parent"])
def test_viommu_alloc_checks_the_type_before_the_hwpt(hwpt: str) -> None:
    env = SelftestEnv()
    dev, plain = _device_and_parent(env, nest_parent=False)
    hwpt_id = 999 if hwpt == "no such object" else plain
    before = selftest_snapshot(env)
    with pytest.raises(ApiError) as e:
        env.fd.viommu_alloc(dev, hwpt_id, 0x1234)
    assert e.value.errno == errno.EOPNOTSUPP, errno.errorcode[e.value.errno]
    assert selftest_snapshot(env) == before


def test_vdevice_holds_a_users_reference_on_its_device() -> None:
    env = SelftestEnv()
    dev, parent = _device_and_parent(env, nest_parent=True)
    viommu = env.fd.viommu_alloc(dev, parent, t.IOMMU_VIOMMU_TYPE_SELFTEST)
    assert env.file.objects.get(dev).users == 3
    vdev = env.fd.vdevice_alloc(viommu, dev, 1)
    assert env.file.objects.get(dev).users == 4
    env.fd.destroy(vdev)
    assert env.file.objects.get(dev).users == 3


def test_close_with_a_viommu_region_mapped_releases_at_munmap() -> None:
    env = SelftestEnv()
    dev, parent = _device_and_parent(env, nest_parent=True)
    env.fd.viommu_alloc(dev, parent, t.IOMMU_VIOMMU_TYPE_SELFTEST, VIOMMU_DATA.encode())
    out = VIOMMU_DATA.decode(env.fd.scratch_read(VIOMMU_DATA.size))
    env.file.mmap(out["out_mmap_offset"], out["out_mmap_length"])
    env.file.close()  # the mapping keeps the file open: nothing is released yet
    assert len(env.file.objects) == 6
    env.file.munmap(out["out_mmap_offset"])  # the last reference: iommufd_fops_release
    assert len(env.file.objects) == 0
    assert env.file.mmaps.regions == {}
    assert env.file.core is not None and env.file.core.devices == {}
