"""The iommufd object table (``drivers/iommu/iommufd/main.c``: ``ictx->objects``).

Ids come from an xarray allocated from 1 (``XA_FLAGS_ALLOC1``, limit 31 bits): the lowest
free id is taken, so a destroyed object's id is reused. An object is first *reserved* (its
id taken, invisible to lookups), then *finalized* once its creation cannot fail, or
*aborted*, which frees the id as if nothing happened. Every object starts with one ``users``
reference, the table's; another object that depends on it (an HWPT on its IOAS, a device on
its HWPT) takes one more and drops it when destroyed, so DESTROY of a used object is EBUSY
and close() can destroy leaf-first.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Iterator
from typing import Final

from iommusim.errors import Busy, ModelError, NotFound

__all__ = ["ID_LIMIT", "IommufdObject", "ObjType", "ObjectTable"]

#: Highest object id (``xa_limit_31b``).
ID_LIMIT: Final = (1 << 31) - 1


class ObjType(enum.Enum):
    """``enum iommufd_object_type`` (include/linux/iommufd.h)."""

    DEVICE = "device"
    HWPT_PAGING = "hwpt_paging"
    HWPT_NESTED = "hwpt_nested"
    IOAS = "ioas"
    ACCESS = "access"
    FAULT = "fault"
    VIOMMU = "viommu"
    VDEVICE = "vdevice"
    VEVENTQ = "veventq"
    HW_QUEUE = "hw_queue"
    #: The selftest's own objects (CONFIG_IOMMUFD_TEST).
    SELFTEST = "selftest"


class IommufdObject:
    """Base of every object: its ``type``, ``id`` (0 until reserved) and ``users``.

    Subclasses implement :meth:`destroy` (``iommufd_object_ops[type].destroy``): release
    what the object holds, including the ``users`` references it took on other objects.
    """

    __slots__ = ("id", "users")

    type: ObjType

    def __init__(self) -> None:
        self.id = 0
        self.users = 1

    def destroy(self) -> None:
        """Release everything the object holds; it cannot fail."""


class ObjectTable:
    """``ictx->objects``: id -> object, with reserved (not yet published) entries."""

    __slots__ = ("_free", "_high", "_objs", "_published", "_tombstones")

    def __init__(self) -> None:
        self._objs: dict[int, IommufdObject] = {}
        self._published: set[int] = set()
        #: Ids of objects destroyed with a tombstone: taken until the file is closed.
        self._tombstones: set[int] = set()
        self._free: list[int] = []  # heap of ids below _high that are free
        self._high = 0

    # ------------------------------------------------------------------ allocation
    def reserve(self, obj: IommufdObject) -> int:
        """``_iommufd_object_alloc``: take the lowest free id for ``obj``, not yet visible.
        :class:`Busy` when all 2**31 - 1 ids are taken (``xa_alloc``'s -EBUSY)."""
        if obj.id:
            raise ModelError(f"object already has id {obj.id}")
        if self._free:
            oid = heapq.heappop(self._free)
        elif self._high < ID_LIMIT:
            self._high += 1
            oid = self._high
        else:
            raise Busy("no free iommufd object id")
        obj.id = oid
        self._objs[oid] = obj
        return oid

    def finalize(self, obj: IommufdObject) -> None:
        """``iommufd_object_finalize``: publish a reserved object."""
        if self._objs.get(obj.id) is not obj or obj.id in self._published:
            raise ModelError(f"object {obj.id} is not reserved")
        self._published.add(obj.id)

    def abort(self, obj: IommufdObject) -> None:
        """``iommufd_object_abort_and_destroy``: destroy a reserved object, free its id."""
        if self._objs.get(obj.id) is not obj or obj.id in self._published:
            raise ModelError(f"object {obj.id} is not reserved")
        obj.destroy()
        self._release_id(obj.id)
        obj.id = 0

    def _release_id(self, oid: int) -> None:
        # Every id up to _high is in use or in the heap, so the heap's minimum is the
        # lowest free id (xa_alloc's first fit).
        del self._objs[oid]
        self._published.discard(oid)
        heapq.heappush(self._free, oid)

    # ------------------------------------------------------------------ lookup
    def get(self, oid: int, type_: ObjType | None = None) -> IommufdObject:
        """``iommufd_get_object``: a published object of ``type_`` (any when None), else
        :class:`NotFound` (ENOENT) -- a reserved id, a wrong type or no object alike."""
        obj = self._objs.get(oid)
        if obj is None or oid not in self._published or (type_ and obj.type is not type_):
            raise NotFound(f"no {type_.value if type_ else 'object'} with id {oid}")
        return obj

    def __iter__(self) -> Iterator[IommufdObject]:
        """Published objects in id order."""
        return iter([self._objs[i] for i in sorted(self._published)])

    def __len__(self) -> int:
        """Every id in use, reserved ones and tombstones included (``xa_empty`` sees
        them)."""
        return len(self._objs) + len(self._tombstones)

    # ------------------------------------------------------------------ references
    @staticmethod
    def inc_users(obj: IommufdObject) -> None:
        """A dependent object takes a reference (``refcount_inc(&obj->users)``)."""
        obj.users += 1

    @staticmethod
    def dec_users(obj: IommufdObject) -> None:
        if obj.users <= 1:
            raise ModelError(f"object {obj.id} has no reference to drop")
        obj.users -= 1

    # ------------------------------------------------------------------ removal
    def remove(self, oid: int) -> None:
        """``iommufd_object_remove`` for IOMMU_DESTROY: ENOENT for a free or reserved id,
        EBUSY while another object uses it; else unpublish and destroy."""
        obj = self._objs.get(oid)
        if obj is None or oid not in self._published:
            raise NotFound(f"no object with id {oid}")
        if obj.users != 1:
            raise Busy(f"object {oid} is used by {obj.users - 1} other reference(s)")
        self._release_id(oid)
        obj.users = 0
        obj.destroy()

    def tombstone(self, oid: int) -> None:
        """``iommufd_object_tombstone_user``: destroy a published object the kernel takes
        away (a vDEVICE whose device is unbound) and keep its id taken, so the user's stale id
        names nothing (ENOENT) and is not handed out again before close. EBUSY while used."""
        obj = self._objs.get(oid)
        if obj is None or oid not in self._published:
            raise NotFound(f"no object with id {oid}")
        if obj.users != 1:
            raise Busy(f"object {oid} is used by {obj.users - 1} other reference(s)")
        del self._objs[oid]
        self._published.discard(oid)
        self._tombstones.add(oid)
        obj.users = 0
        obj.destroy()

    def destroy_all(self) -> None:
        """``iommufd_fops_release``: repeatedly destroy every object only the table holds,
        in id order, until none is left. A reference cycle is a :class:`ModelError`."""
        while self._published:
            destroyed = 0
            for oid in sorted(self._published):
                obj = self._objs.get(oid)
                if obj is not None and obj.users == 1:
                    self.remove(oid)
                    destroyed += 1
            if not destroyed:
                raise ModelError(f"objects {sorted(self._published)} hold each other")
        for oid in sorted(self._tombstones):  # xa_destroy: the tombstones go last
            heapq.heappush(self._free, oid)
        self._tombstones.clear()
