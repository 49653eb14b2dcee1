"""The vEVENTQ object: a vIOMMU's events delivered to user space (Linux 7.3
``drivers/iommu/iommufd/eventq.c``, "IOMMUFD_OBJ_VEVENTQ Functions", and ``driver.c``'s
``iommufd_viommu_report_event``).

A vIOMMU has at most one queue per type (``viommu.veventqs``: type -> queue). Each event the
driver reports gets the queue's next ``sequence`` (``[0, INT_MAX]``, wrapping to 0) and waits
on the deliver list. Once ``depth`` events wait, further ones are dropped -- the sequence
still advances -- and one LOST_EVENTS header (``struct iommufd_vevent_header`` with
IOMMU_VEVENTQ_FLAG_LOST_EVENTS and no payload) stands at the tail of the list, carrying the
sequence of the latest dropped event. The header only ever stands last: the next event
queued (kept or dropped) takes it off first, so a later reader sees the gap in the
sequence numbers instead.

``read()`` returns whole events, header then payload: EINVAL for a count below a header;
as many events as fit; EINVAL when the first event does not fit; 0 bytes when empty.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

from iommusim.errors import (
    Exists,
    IllegalSeek,
    InvalidArgument,
    ModelError,
    NotSupported,
)
from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd.eventq import EventQueue
from iommusim.sw.iommufd.objects import IommufdObject, ObjType

if TYPE_CHECKING:
    from iommusim.sw.iommufd.file import IommufdFile
    from iommusim.sw.iommufd.ucmd import Ucmd

__all__ = [
    "INT_MAX",
    "VEVENTQ_MAX_DEPTH",
    "Veventq",
    "VeventqOwner",
    "veventq_alloc",
    "viommu_report_event",
]

_HEADER: Final = uapi.STRUCTS["iommufd_vevent_header"]
INT_MAX: Final = (1 << 31) - 1
#: ``VEVENTQ_MAX_DEPTH``: "an arbitrary upper bound for veventq_depth that fits all
#: existing HWs".
VEVENTQ_MAX_DEPTH: Final = 1 << 19


@runtime_checkable
class VeventqOwner(Protocol):
    """What a vEVENTQ needs of its VIOMMU object: the queues by type."""

    veventqs: dict[int, Veventq]


def _owner(viommu: IommufdObject) -> VeventqOwner:
    if not isinstance(viommu, VeventqOwner):
        raise ModelError(f"VIOMMU object {viommu.id} has no veventqs table")
    return viommu


class Veventq(EventQueue):
    """``struct iommufd_veventq`` of ``type`` on ``viommu``, holding up to ``depth``
    events. :attr:`events` is the deliver list's normal events as (sequence, payload);
    :attr:`lost` the sequence of the LOST_EVENTS header at its tail, or None."""

    __slots__ = ("_owner", "depth", "events", "lost", "sequence", "veventq_type", "viommu")
    type = ObjType.VEVENTQ
    file_name = "[iommufd-viommu-event]"

    def __init__(
        self, ictx: IommufdFile, viommu: IommufdObject, veventq_type: int, depth: int
    ) -> None:
        super().__init__(ictx)
        self.viommu = viommu
        self._owner = _owner(viommu)
        self.veventq_type = veventq_type
        self.depth = depth
        self.events: deque[tuple[int, bytes]] = deque()
        self.lost: int | None = None
        #: The sequence the next event gets.
        self.sequence = 0

    @property
    def num_events(self) -> int:
        """Normal events waiting (``veventq->num_events``)."""
        return len(self.events)

    def register(self) -> None:
        """Join the vIOMMU's queues, holding a reference on it."""
        self._owner.veventqs[self.veventq_type] = self
        self.ictx.objects.inc_users(self.viommu)

    def destroy(self) -> None:
        """``iommufd_veventq_destroy`` / ``_abort``: drop every event, leave the vIOMMU
        and its reference (a queue aborted before it joined holds none)."""
        self.events.clear()
        self.lost = None
        if self._owner.veventqs.get(self.veventq_type) is self:
            del self._owner.veventqs[self.veventq_type]
            self.ictx.objects.dec_users(self.viommu)

    # ------------------------------------------------------------------ the driver's side
    def report(self, data: bytes) -> None:
        """``iommufd_viommu_report_event`` on this queue: EINVAL for an empty payload (the
        kernel's WARN_ON); a full queue drops the event for the LOST_EVENTS header."""
        if not data:
            raise InvalidArgument("a vEVENT needs a payload")
        seq = self.sequence
        # iommufd_vevent_handler: the header leaves the tail, the new node joins it.
        self.lost = None
        if self.num_events == self.depth:
            self.lost = seq
        else:
            self.events.append((seq, bytes(data)))
        self.sequence = (seq + 1) & INT_MAX

    def pending(self) -> bool:
        return bool(self.events) or self.lost is not None

    # ------------------------------------------------------------------ file operations
    def fops_read(self, count: int, ppos: int) -> bytes:
        """``iommufd_veventq_fops_read``."""
        hsize = _HEADER.size
        if ppos:
            raise IllegalSeek(f"vEVENTQ reads need position 0, not {ppos}")
        if count < hsize:
            raise InvalidArgument(f"a vEVENTQ read needs at least {hsize} bytes, not {count}")
        out = bytearray()
        while self.pending():
            left = count - len(out)
            if len(out) >= count or hsize > left:
                break
            if not self.events and self.lost is not None:
                out += _HEADER.encode(flags=uapi.IOMMU_VEVENTQ_FLAG_LOST_EVENTS, sequence=self.lost)
                self.lost = None
                continue
            seq, data = self.events[0]
            if hsize + len(data) > left:
                if not out:
                    raise InvalidArgument(
                        f"a {hsize + len(data)}-byte vEVENT does not fit {count} bytes"
                    )
                break
            self.events.popleft()
            out += _HEADER.encode(flags=0, sequence=seq) + data
        return bytes(out)


def viommu_report_event(viommu: IommufdObject, veventq_type: int, data: bytes) -> None:
    """``iommufd_viommu_report_event``: EOPNOTSUPP when ``viommu`` has no queue of that
    type; else :meth:`Veventq.report`."""
    veventq = _owner(viommu).veventqs.get(veventq_type)
    if veventq is None:
        raise NotSupported(f"vIOMMU {viommu.id} has no vEVENTQ of type {veventq_type}")
    veventq.report(data)


def veventq_alloc(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_VEVENTQ_ALLOC (``iommufd_veventq_alloc``), checks in the kernel's order:
    EOPNOTSUPP for flags, ``__reserved`` or type DEFAULT; EINVAL for a depth of 0 or above
    :data:`VEVENTQ_MAX_DEPTH`; ENOENT for no such VIOMMU; EEXIST when it has a queue of the
    type; EMFILE when no fd is free. The queue holds a reference on its vIOMMU."""
    cmd = ucmd.cmd
    if cmd["flags"] or cmd["__reserved"] or cmd["type"] == uapi.IOMMU_VEVENTQ_TYPE_DEFAULT:
        raise NotSupported(
            f"VEVENTQ_ALLOC flags {cmd['flags']:#x} / __reserved {cmd['__reserved']:#x} must "
            f"be 0 and the type not DEFAULT, not {cmd['type']}"
        )
    if not 0 < cmd["veventq_depth"] <= VEVENTQ_MAX_DEPTH:
        raise InvalidArgument(
            f"veventq_depth must be in 1..{VEVENTQ_MAX_DEPTH}, not {cmd['veventq_depth']}"
        )
    viommu = ictx.objects.get(cmd["viommu_id"], ObjType.VIOMMU)
    if cmd["type"] in _owner(viommu).veventqs:
        raise Exists(f"vIOMMU {viommu.id} already has a vEVENTQ of type {cmd['type']}")
    veventq = Veventq(ictx, viommu, cmd["type"], cmd["veventq_depth"])
    ictx.objects.reserve(veventq)
    ucmd.new_obj = veventq
    cmd["out_veventq_fd"] = veventq.init_file()
    veventq.register()
    cmd["out_veventq_id"] = veventq.id
    ucmd.respond()
