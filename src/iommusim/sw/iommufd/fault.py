"""The FAULT object: I/O page faults delivered to user space (Linux 7.3
``drivers/iommu/iommufd/eventq.c``, "IOMMUFD_OBJ_FAULT Functions").

An HWPT allocated with IOMMU_HWPT_FAULT_ID_VALID installs :meth:`IommufdFault.iopf_handler`
as its domain's ``iopf_handler``: each page-request group of a fault on that domain joins the
deliver list. ``read()`` of the queue's file takes whole groups off the list, one
``struct iommu_hwpt_pgfault`` record per request, every record of a group carrying the
cookie the group got (lowest free from 1, ``xa_alloc`` into ``fault->response`` with
``xa_limit_32b``); ``write()`` of ``struct iommu_hwpt_page_response`` records answers groups
by cookie. Detaching a device from the HWPT answers its groups "invalid"
(:meth:`IommufdFault.auto_respond`), and so does destroying the object (every group left).

Answering goes through :class:`FaultHooks`, which the integrator sets on the iommufd file
(``IommufdFile.fault_hooks``): ``iopf`` is the machine's fault core
(:class:`~iommusim.sw.iopf.Iopf`: its ``pending`` groups and ``respond``), ``dev_id`` names
the iommufd DEVICE object of a faulting device for the records' ``dev_id``. A group the core
answered by itself already (it answers every pending group of a device it removes) is not
answered twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from iommusim.errors import (
    ApiError,
    Busy,
    IllegalSeek,
    InvalidArgument,
    ModelError,
    NotSupported,
)
from iommusim.sw.core.ida import Ida
from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd.eventq import EventQueue
from iommusim.sw.iommufd.objects import ObjType
from iommusim.sw.iopf.queue import RESP_INVALID, IopfGroup

if TYPE_CHECKING:
    from iommusim.sw.core.device import Device
    from iommusim.sw.core.domain import Domain
    from iommusim.sw.iommufd.file import IommufdFile
    from iommusim.sw.iommufd.ucmd import Ucmd

__all__ = ["FaultHooks", "IommufdFault", "IopfResponder", "fault_alloc"]

_PGFAULT: Final = uapi.STRUCTS["iommu_hwpt_pgfault"]
_RESPONSE: Final = uapi.STRUCTS["iommu_hwpt_page_response"]
#: ``xa_limit_32b`` of ``fault->response`` (allocated from 1: XA_FLAGS_ALLOC1).
_COOKIE_MAX: Final = (1 << 32) - 1


class IopfResponder(Protocol):
    """What a FAULT object needs of the fault core: the groups still waiting for an
    answer, by the core's own key, and ``iopf_group_response``."""

    @property
    def pending(self) -> Mapping[int, IopfGroup]: ...

    def respond(self, group: IopfGroup, code: int) -> None: ...


@dataclass(frozen=True, slots=True)
class FaultHooks:
    """How the FAULT objects of one iommufd file reach the machine."""

    #: The fault core that handed the groups out (``IommuCore.iopf``).
    iopf: IopfResponder
    #: The iommufd DEVICE object id of a device (``idev->obj.id`` of the attach handle).
    dev_id: Callable[[Device], int]


class IommufdFault(EventQueue):
    """``struct iommufd_fault``: the deliver list and the cookie -> group ``response``
    table of groups read but not yet answered."""

    __slots__ = ("_cookies", "deliver", "response")
    type = ObjType.FAULT
    file_name = "[iommufd-pgfault]"
    poll_out = True

    def __init__(self, ictx: IommufdFile) -> None:
        super().__init__(ictx)
        #: Groups not read yet, oldest first (``fault->common.deliver``).
        self.deliver: list[IopfGroup] = []
        #: Cookie -> group read but not answered (``fault->response``).
        self.response: dict[int, IopfGroup] = {}
        self._cookies = Ida(1, _COOKIE_MAX)

    def _hooks(self) -> FaultHooks:
        hooks = self.ictx.fault_hooks
        if hooks is None:
            raise ModelError("the iommufd file has no fault_hooks: it is wired to no machine")
        return hooks

    def _answer(self, group: IopfGroup, code: int) -> None:
        """``iopf_group_response`` + ``iopf_free_group``, unless the core already answered
        the group."""
        iopf = self._hooks().iopf
        if iopf.pending.get(group.cookie) is group:
            iopf.respond(group, code)

    # ------------------------------------------------------------------ the domain's side
    def iopf_handler(self, group: IopfGroup) -> None:
        """``iommufd_fault_iopf_handler``: queue the group for user space (it cannot fail)."""
        self.deliver.append(group)

    def pending(self) -> bool:
        return bool(self.deliver)

    def auto_respond(self, domain: Domain, dev: Device, pasid: int | None) -> None:
        """``iommufd_auto_response_faults`` for the attach of ``dev`` (at ``pasid``, None
        without one) to ``domain``, after it detached or was replaced: answer "invalid"
        every group of that attach, the undelivered ones first, then those read but not
        answered, in cookie order."""

        def mine(g: IopfGroup) -> bool:
            return g.domain is domain and g.dev is dev and g.last.pasid == pasid

        undelivered = [g for g in self.deliver if mine(g)]
        self.deliver = [g for g in self.deliver if not mine(g)]
        for g in undelivered:
            self._answer(g, RESP_INVALID)
        for cookie in sorted(c for c, g in self.response.items() if mine(g)):
            self._answer(self._take(cookie), RESP_INVALID)

    def _take(self, cookie: int) -> IopfGroup:
        group = self.response.pop(cookie)
        self._cookies.free(cookie)
        return group

    def destroy(self) -> None:
        """``iommufd_fault_destroy``: answer every group left "invalid"."""
        undelivered, self.deliver = self.deliver, []
        for g in undelivered:
            self._answer(g, RESP_INVALID)
        for cookie in sorted(self.response):
            self._answer(self._take(cookie), RESP_INVALID)

    # ------------------------------------------------------------------ file operations
    def fops_read(self, count: int, ppos: int) -> bytes:
        """``iommufd_fault_fops_read``: ESPIPE for a non-zero position or a count that is
        not a multiple of the record; then as many whole groups as fit, each getting its
        cookie. EINVAL when not even the first group fits; an empty queue reads 0 bytes."""
        size = _PGFAULT.size
        if ppos or count % size:
            raise IllegalSeek(
                f"fault reads need position 0 and a count of whole {size}-byte "
                f"records, not position {ppos}, count {count}"
            )
        out = bytearray()
        while self.deliver:
            group = self.deliver[0]
            if len(out) >= count or len(group.faults) * size > count - len(out):
                if not out:
                    raise InvalidArgument(
                        f"a group of {len(group.faults)} records does not fit {count} bytes"
                    )
                break
            dev_id = self._hooks().dev_id(group.dev)
            cookie = self._cookies.alloc()
            if cookie is None:
                if not out:
                    raise Busy("every fault cookie is in use")
                break
            self.deliver.pop(0)
            self.response[cookie] = group
            for f in group.faults:
                flags = uapi.IOMMU_PGFAULT_FLAGS_LAST_PAGE if f.last else 0
                if f.pasid is not None:
                    flags |= uapi.IOMMU_PGFAULT_FLAGS_PASID_VALID
                out += _PGFAULT.encode(
                    flags=flags,
                    dev_id=dev_id,
                    pasid=f.pasid or 0,
                    grpid=f.grpid,
                    perm=f.perm,
                    addr=f.addr,
                    length=0,
                    cookie=cookie,
                )
        return bytes(out)

    def fops_write(self, data: bytes, ppos: int) -> int:
        """``iommufd_fault_fops_write``: ESPIPE for a non-zero position or a partial
        record; then each response in turn: a code other than SUCCESS or INVALID, or a
        cookie no group has, stops there -- EINVAL if it is the first, else the count of
        the responses before it (those are answered)."""
        size = _RESPONSE.size
        if ppos or len(data) % size:
            raise IllegalSeek(
                f"fault writes need position 0 and whole {size}-byte "
                f"responses, not position {ppos}, {len(data)} bytes"
            )
        done = 0
        err: ApiError | None = None
        while len(data) > done:
            resp = _RESPONSE.decode(data[done : done + size])
            if resp["code"] not in (uapi.IOMMUFD_PAGE_RESP_SUCCESS, uapi.IOMMUFD_PAGE_RESP_INVALID):
                err = InvalidArgument(
                    f"response code must be SUCCESS or INVALID, not {resp['code']}"
                )
                break
            if resp["cookie"] not in self.response:
                err = InvalidArgument(f"no group has cookie {resp['cookie']}")
                break
            self._answer(self._take(resp["cookie"]), resp["code"])
            done += size
        if not done and err is not None:
            raise err
        return done


def fault_alloc(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_FAULT_QUEUE_ALLOC (``iommufd_fault_alloc``): EOPNOTSUPP for any flag; EMFILE
    when no fd is free. The object is published by the ioctl core once this returns."""
    cmd = ucmd.cmd
    if cmd["flags"]:
        raise NotSupported(f"FAULT_QUEUE_ALLOC flags must be 0, not {cmd['flags']:#x}")
    fault = IommufdFault(ictx)
    ictx.objects.reserve(fault)
    ucmd.new_obj = fault
    cmd["out_fault_fd"] = fault.init_file()
    cmd["out_fault_id"] = fault.id
    ucmd.respond()
