"""The vEVENTQ against a literal transcription of the kernel's list code (Linux 7.3
``iommufd_vevent_handler``, ``iommufd_viommu_report_event``, ``iommufd_veventq_fops_read``
with its fetch/restore of the LOST_EVENTS header): random report and read sequences give the
same bytes, the same errors and the same queue."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.errors import ApiError
from iommusim.mem import SparseMemory
from iommusim.sw.iommufd import IommufdFile, MmUserMemory, uapi
from iommusim.sw.iommufd.objects import IommufdObject, ObjType
from iommusim.sw.iommufd.veventq import INT_MAX, Veventq
from iommusim.sw.mm import Mm
from iommusim.sw.pages import PageAllocator

HEADER = uapi.STRUCTS["iommufd_vevent_header"]
LOST = uapi.IOMMU_VEVENTQ_FLAG_LOST_EVENTS


@dataclass(eq=False)
class Node:
    flags: int
    sequence: int = 0
    data: bytes = b""


@dataclass
class KernelQueue:
    """``struct iommufd_veventq`` with its deliver list as a Python list of nodes and the
    one ``lost_events_header`` node."""

    depth: int
    sequence: int = 0
    num_events: int = 0
    deliver: list[Node] = field(default_factory=list)
    header: Node = field(default_factory=lambda: Node(LOST))

    def handler(self, vevent: Node) -> None:
        if self.deliver and self.deliver[-1] is self.header:  # list_is_last
            self.deliver.pop()
        self.deliver.append(vevent)
        vevent.sequence = self.sequence
        self.sequence = (self.sequence + 1) & INT_MAX

    def report(self, data: bytes) -> None:
        if self.num_events == self.depth:
            self.handler(self.header)
            return
        self.num_events += 1
        self.handler(Node(0, data=data))

    def fetch(self) -> Node | None:
        if not self.deliver:
            return None
        node = self.deliver.pop(0)
        return Node(node.flags, node.sequence) if node is self.header else node

    def restore(self, node: Node) -> None:
        if node.flags & LOST:
            if not self.deliver:
                self.deliver.insert(0, self.header)
            return
        self.deliver.insert(0, node)

    def read(self, count: int) -> bytes | int:
        if count < 8:
            return errno.EINVAL
        out = b""
        while (cur := self.fetch()) is not None:
            done = len(out)
            if done >= count or count - done < 8:
                self.restore(cur)
                break
            if not cur.flags & LOST and 8 + len(cur.data) > count - done:
                self.restore(cur)
                if done == 0:
                    return errno.EINVAL
                break
            out += bytes(HEADER.encode(flags=cur.flags, sequence=cur.sequence)) + cur.data
            if not cur.flags & LOST:
                self.num_events -= 1
        return out

    def view(self) -> tuple[list[tuple[int, bytes]], int | None, int]:
        events = [(n.sequence, n.data) for n in self.deliver if not n.flags & LOST]
        lost = [n.sequence for n in self.deliver if n.flags & LOST]
        assert len(lost) <= 1 and (not lost or self.deliver[-1] is self.header)
        return events, (lost[0] if lost else None), self.sequence


class StandInViommu(IommufdObject):
    type = ObjType.VIOMMU

    def __init__(self) -> None:
        super().__init__()
        self.veventqs: dict[int, Veventq] = {}


def queue(depth: int) -> Veventq:
    """A queue on a file of its own (its fd is never opened: reads go to the file
    operation)."""
    mem = SparseMemory()
    ictx = IommufdFile(MmUserMemory(Mm(mem, PageAllocator(mem, 0, 16 << 12), "sv48")))
    return Veventq(ictx, StandInViommu(), uapi.IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, depth)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("report"), st.integers(1, 24)),
        st.tuples(st.just("read"), st.integers(0, 120)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(depth=st.integers(1, 4), start=st.sampled_from([0, INT_MAX - 2]), script=ops)
def test_the_model_reads_as_the_kernel_list_code(
    depth: int, start: int, script: list[tuple[str, int]]
) -> None:
    ref = KernelQueue(depth, sequence=start)
    q = queue(depth)
    q.sequence = start
    for k, (op, n) in enumerate(script):
        if op == "report":
            data = bytes([k & 0xFF]) * n
            ref.report(data)
            q.report(data)
        else:
            want = ref.read(n)
            try:
                got: bytes | int = q.fops_read(n, 0)
            except ApiError as e:
                got = e.errno
            assert got == want
        assert (list(q.events), q.lost, q.sequence) == ref.view()
