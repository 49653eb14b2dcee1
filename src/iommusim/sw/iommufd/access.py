"""``struct iommufd_access`` (``drivers/iommu/iommufd/device.c``, ``include/linux/iommufd.h``
``iommufd_access_*``): an in-kernel user of an IOAS -- an emulated device (mdev) or the
selftest -- that reaches the IOAS's memory by CPU, not by DMA.

An access is an object (:data:`ObjType.ACCESS`) created with its driver's
:class:`AccessOps` and attached to one IOAS at a time (it holds a ``users`` reference on it).
It pins pages by IOVA (:meth:`Access.pin_pages`, which returns their physical addresses and
counts the access in each area's ``num_accesses``) and copies through the IOAS
(:meth:`Access.rw`). An unmap of an area it pins calls its ``unmap(iova, length)``, which
must unpin: the unmap then proceeds (:meth:`IoPagetable.unmap_range`). An *internal* access
(``iommufd_access_create_internal``, for the vIOMMU's queues) has no ops, is not told of
unmaps, and its pins lock the areas (``num_locks``: unmap is EBUSY).
"""

from __future__ import annotations

from typing import Final, Protocol

from iommusim.addr import PhysAddr
from iommusim.errors import ApiError, InvalidArgument, ModelError, NotFound, NotPermitted, Overflow
from iommusim.sw.iommufd.ioas import Ioas
from iommusim.sw.iommufd.iopt import ULONG_MAX, ContigSpan
from iommusim.sw.iommufd.objects import IommufdObject, ObjectTable, ObjType
from iommusim.sw.pages import PAGE_SIZE
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

__all__ = [
    "ACCESS_RW_KTHREAD",
    "ACCESS_RW_READ",
    "ACCESS_RW_SLOW_PATH",
    "ACCESS_RW_WRITE",
    "Access",
    "AccessOps",
]

# enum iommufd_access_rw_flags (include/linux/iommufd.h).
ACCESS_RW_READ: Final = 0
ACCESS_RW_WRITE: Final = 1 << 0
#: The caller is a kthread: copy_to_user may use the pages' mm.
ACCESS_RW_KTHREAD: Final = 1 << 1
#: (CONFIG_IOMMUFD_TEST) take the slow path: pin, copy, unpin.
ACCESS_RW_SLOW_PATH: Final = 1 << 2


class AccessOps(Protocol):
    """``struct iommufd_access_ops``: ``needs_pin_pages`` (the access pins, so its IOAS
    must be PAGE_SIZE aligned) and the unmap callback, which must unpin every pin the
    access holds in ``[iova, iova + length)`` before it returns."""

    @property
    def needs_pin_pages(self) -> bool: ...

    def unmap(self, iova: int, length: int) -> None: ...


class Access(IommufdObject):
    """An in-kernel access; create it with :meth:`create` or :meth:`create_internal`,
    destroy it with :meth:`destroy_user`."""

    __slots__ = ("internal", "ioas", "ioas_unpin", "iova_alignment", "objects", "ops")
    type = ObjType.ACCESS

    def __init__(self, objects: ObjectTable, ops: AccessOps | None) -> None:
        super().__init__()
        self.objects = objects
        self.ops = ops
        self.internal = ops is None
        #: The IOAS pins come from (``access->ioas``); None while detached or changing.
        self.ioas: Ioas | None = None
        #: The IOAS unpins go to (``access->ioas_unpin``).
        self.ioas_unpin: Ioas | None = None
        self.iova_alignment = PAGE_SIZE if ops is None or ops.needs_pin_pages else 1

    # ------------------------------------------------------------------ life
    @classmethod
    def create(cls, objects: ObjectTable, ops: AccessOps) -> Access:
        """``iommufd_access_create``: a published access (its ``id`` is the one user
        space sees) with one more ``users`` reference, the driver's."""
        access = cls(objects, ops)
        objects.reserve(access)
        ObjectTable.inc_users(access)
        objects.finalize(access)
        return access

    @classmethod
    def create_internal(cls, objects: ObjectTable) -> Access:
        """``iommufd_access_create_internal``: no ops, PAGE_SIZE alignment, pins lock."""
        access = cls(objects, None)
        objects.reserve(access)
        ObjectTable.inc_users(access)
        objects.finalize(access)
        return access

    def destroy_user(self) -> None:
        """``iommufd_access_destroy``: drop the driver's reference and destroy the object
        (detaching it: its driver is told to unmap everything first)."""
        ObjectTable.dec_users(self)
        self.objects.remove(self.id)

    def destroy(self) -> None:
        """``iommufd_access_destroy_object``."""
        if self.ioas is not None:
            self._change_ioas(None)

    # ------------------------------------------------------------------ IOAS
    def _change_ioas(self, new: Ioas | None) -> None:
        """``iommufd_access_change_ioas``: add to ``new`` (EADDRINUSE, nothing changed, when
        one of its areas does not fit the access's alignment), then tell the driver to
        unmap everything of the old IOAS and leave it."""
        cur = self.ioas
        if cur is new:
            return
        if new is not None:
            new.iopt.add_access(self)
            ObjectTable.inc_users(new)
        if cur is not None:
            self.ioas = None  # blocks pins while the driver unpins
            if self.ops is not None:
                self.ops.unmap(0, ULONG_MAX)
            cur.iopt.remove_access(self)
            ObjectTable.dec_users(cur)
        self.ioas = self.ioas_unpin = new

    def _lookup(self, ioas_id: int) -> Ioas:
        obj = self.objects.get(ioas_id, ObjType.IOAS)
        if not isinstance(obj, Ioas):  # pragma: no cover - the type says so
            raise NotFound(f"object {ioas_id} is not an IOAS")
        return obj

    def attach(self, ioas_id: int) -> None:
        """``iommufd_access_attach``: EINVAL when attached already, ENOENT for no such
        IOAS, EADDRINUSE for an IOAS whose areas do not fit the access's alignment."""
        if self.ioas is not None:
            raise InvalidArgument(f"access {self.id} is attached already")
        self._change_ioas(self._lookup(ioas_id))

    def attach_internal(self, ioas: Ioas) -> None:
        """``iommufd_access_attach_internal``: as :meth:`attach`, by object."""
        if self.ioas is not None:
            raise InvalidArgument(f"access {self.id} is attached already")
        self._change_ioas(ioas)

    def replace(self, ioas_id: int) -> None:
        """``iommufd_access_replace``: ENOENT when not attached or for no such IOAS; the
        same IOAS again is a no-op."""
        if self.ioas is None:
            raise NotFound(f"access {self.id} is not attached")
        self._change_ioas(self._lookup(ioas_id))

    def detach(self) -> None:
        """``iommufd_access_detach``; a detached access is a :class:`ModelError` (the
        kernel's WARN)."""
        if self.ioas is None:
            raise ModelError(f"access {self.id} is not attached")
        self._change_ioas(None)

    def notify_unmap(self, iova: int, length: int) -> None:
        """``iommufd_access_notify_unmap`` for this access: the driver's unmap."""
        if self.ops is not None:
            self.ops.unmap(iova, length)

    # ------------------------------------------------------------------ pins
    def _range(self, iova: int, length: int) -> int:
        if not length:
            raise InvalidArgument("length must not be 0")
        last = iova + length - 1
        if last > ULONG_MAX:
            raise Overflow(f"iova {iova:#x} + length {length:#x} overflows")
        return last

    def _attached(self) -> Ioas:
        if self.ioas is None:
            raise NotFound(f"access {self.id} is not attached to an IOAS")
        return self.ioas

    def pin_pages(self, iova: int, length: int, write: bool = False) -> list[PhysAddr]:
        """``iommufd_access_pin_pages``: the physical address of every page under
        ``[iova, iova + length)``, pinned until :meth:`unpin_pages` of the same range.

        EINVAL for an access that does not pin (no ``needs_pin_pages``), length 0, a range
        not page-aligned in its pages or an area being unmapped; EOVERFLOW past the end;
        ENOENT when not attached or the range is not fully mapped; EPERM to write an area
        mapped read-only or read-only pages. Nothing pinned on failure."""
        if self.ops is not None and not self.ops.needs_pin_pages:
            raise InvalidArgument(f"access {self.id} was not created to pin pages")
        last = self._range(iova, length)
        spans, done = self._attached().iopt.contig_areas(iova, last)
        added: list[ContigSpan] = []
        out: list[PhysAddr] = []
        try:
            for k, span in enumerate(spans):
                area = span.area
                to_end = done and k == len(spans) - 1
                if (
                    area.prevent_access
                    or area.start_byte_at(span.first) % PAGE_SIZE
                    or (not to_end and area.start_byte_at(area.last) % PAGE_SIZE != PAGE_SIZE - 1)
                ):
                    raise InvalidArgument(f"area at {area.iova:#x} cannot be pinned from here")
                _check_prot(area.prot, write)
                pas = area.pages.add_access(
                    area.index_at(span.first), area.index_at(span.last), write
                )
                area.num_accesses += 1
                if self.internal:
                    area.num_locks += 1
                added.append(span)
                out += [PhysAddr(pa) for pa in pas]
            if not done:
                raise NotFound(f"range {iova:#x}..{last:#x} is not fully mapped")
        except ApiError:
            self._remove(added)
            raise
        return out

    def _remove(self, spans: list[ContigSpan]) -> None:
        for area, first, last in spans:
            area.pages.remove_access(area.index_at(first), area.index_at(last))
            area.num_accesses -= 1
            if self.internal:
                area.num_locks -= 1

    def unpin_pages(self, iova: int, length: int) -> None:
        """``iommufd_access_unpin_pages``: undo :meth:`pin_pages` of exactly this range.
        A range that was not pinned so is InvalidArgument, nothing changed (the kernel
        WARNs)."""
        last = self._range(iova, length)
        if self.ioas_unpin is None:
            raise InvalidArgument(f"access {self.id} was never attached")
        spans, done = self.ioas_unpin.iopt.contig_areas(iova, last)
        if not done or not all(
            a.num_accesses and a.pages.has_access(a.index_at(f), a.index_at(e)) for a, f, e in spans
        ):
            raise InvalidArgument(f"range {iova:#x}..{last:#x} was not pinned")
        self._remove(spans)

    # ------------------------------------------------------------------ copies
    def rw(self, iova: int, data: bytearray, flags: int = ACCESS_RW_READ) -> None:
        """``iommufd_access_rw``: read ``len(data)`` bytes at ``iova`` into ``data``, or
        write them with ACCESS_RW_WRITE. EINVAL for length 0 or an area being unmapped,
        EOVERFLOW past the end, ENOENT when not attached or not fully mapped, EPERM against
        the area's or the pages' protection, EFAULT from the memory. Areas are copied in
        order: an error leaves the earlier ones copied, as in the kernel."""
        last = self._range(iova, len(data))
        write = bool(flags & ACCESS_RW_WRITE)
        slow = bool(flags & ACCESS_RW_SLOW_PATH)
        spans, done = self._attached().iopt.contig_areas(iova, last)
        for area, first, end in spans:
            if area.prevent_access:
                raise InvalidArgument(f"area at {area.iova:#x} is being unmapped")
            _check_prot(area.prot, write)
            off = first - iova
            chunk = bytearray(data[off : off + end - first + 1])
            area.pages.rw(area.start_byte_at(first), chunk, write, slow)
            data[off : off + len(chunk)] = chunk
        if not done:
            raise NotFound(f"range {iova:#x}..{last:#x} is not fully mapped")


def _check_prot(prot: int, write: bool) -> None:
    """``check_area_prot``."""
    if not prot & (IOMMU_WRITE if write else IOMMU_READ):
        raise NotPermitted(f"the area is not mapped for {'write' if write else 'read'}")
