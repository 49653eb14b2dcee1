"""IOMMU_VEVENTQ_ALLOC and the vEVENTQ file (Linux 7.3 ``eventq.c``: the
``iommufd_veventq_*`` functions; ``driver.c``: ``iommufd_viommu_report_event``), against a
stand-in VIOMMU object with the ``veventqs`` table the real one carries."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from iommusim.errors import (
    ApiError,
    Busy,
    Exists,
    IllegalSeek,
    InvalidArgument,
    NotFound,
    NotSupported,
    TooManyOpenFiles,
)
from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd.fds import FD_BASE, POLLIN, POLLRDNORM, FdTable
from iommusim.sw.iommufd.objects import IommufdObject, ObjType
from iommusim.sw.iommufd.veventq import (
    INT_MAX,
    VEVENTQ_MAX_DEPTH,
    Veventq,
    viommu_report_event,
)

HEADER = uapi.STRUCTS["iommufd_vevent_header"]
LOST = uapi.IOMMU_VEVENTQ_FLAG_LOST_EVENTS
SMMU = uapi.IOMMU_VEVENTQ_TYPE_ARM_SMMUV3
CMDQV = uapi.IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV


class StandInViommu(IommufdObject):
    """The VIOMMU object as far as a vEVENTQ sees it."""

    type = ObjType.VIOMMU

    def __init__(self) -> None:
        super().__init__()
        self.veventqs: dict[int, Veventq] = {}


def add_viommu(env: Any) -> StandInViommu:
    v = StandInViommu()
    env.fd.file.objects.reserve(v)
    env.fd.file.objects.finalize(v)
    return v


def alloc(env: Any, viommu_id: int, **kw: int) -> dict[str, int]:
    fields = {"viommu_id": viommu_id, "type": SMMU, "veventq_depth": 4, **kw}
    return env.ioctl(uapi.IOMMU_VEVENTQ_ALLOC, **fields)[1]


def events(data: bytes, payload: int) -> list[tuple[int, int, bytes]]:
    """(flags, sequence, payload) of each event; ``payload`` bytes follow a normal one."""
    out = []
    at = 0
    while at < len(data):
        h = HEADER.decode(data[at : at + 8])
        at += 8
        n = 0 if h["flags"] & LOST else payload
        out.append((h["flags"], h["sequence"], data[at : at + n]))
        at += n
    return out


class Q:
    def __init__(self, env: Any, depth: int = 4) -> None:
        self.viommu = add_viommu(env)
        out = alloc(env, self.viommu.id, veventq_depth=depth)
        q = env.fd.file.objects.get(out["out_veventq_id"], ObjType.VEVENTQ)
        assert isinstance(q, Veventq)
        self.q = q
        self.id = out["out_veventq_id"]
        self.file = env.fd.file.fds[out["out_veventq_fd"]]

    def state(self) -> tuple[object, ...]:
        return (list(self.q.events), self.q.lost, self.q.sequence, self.q.users)


def ev(i: int) -> bytes:
    return bytes([i]) * 32  # struct iommu_vevent_arm_smmuv3: 4 x u64


@pytest.fixture
def q(env: Any) -> Q:
    return Q(env)


def vstate(env: Any, v: StandInViommu) -> tuple[object, ...]:
    return (dict(v.veventqs), v.users, env.fd.file.fds.fds())


# ------------------------------------------------------------------ layouts
def test_header_layout() -> None:
    assert HEADER.size == 8
    assert [(f.name, f.offset, f.size) for f in HEADER.fields] == [
        ("flags", 0, 4),
        ("sequence", 4, 4),
    ]
    assert uapi.STRUCTS["iommu_vevent_arm_smmuv3"].size == 32
    s = uapi.IOCTLS[uapi.IOMMU_VEVENTQ_ALLOC]
    assert (s.size, s.min_size) == (32, 28)


# ------------------------------------------------------------------ VEVENTQ_ALLOC
def test_alloc_joins_the_viommu_and_holds_it(env: Any) -> None:
    v = add_viommu(env)
    out = alloc(env, v.id)
    assert out["out_veventq_id"] == 2 and out["out_veventq_fd"] == FD_BASE
    q = env.fd.file.objects.get(2, ObjType.VEVENTQ)
    assert v.veventqs == {SMMU: q} and v.users == 2 and q.users == 2
    assert q.depth == 4 and q.veventq_type == SMMU
    assert env.fd.file.fds[FD_BASE].name == "[iommufd-viommu-event]"
    # Another type on the same vIOMMU is fine; the same type is EEXIST.
    out2 = alloc(env, v.id, type=CMDQV)
    assert out2["out_veventq_fd"] == FD_BASE + 1 and set(v.veventqs) == {SMMU, CMDQV}
    # The vIOMMU cannot go while a queue holds it.
    env.fails(Busy, errno.EBUSY, lambda: env.fd.destroy(v.id))


def test_alloc_via_the_pythonic_face(env: Any) -> None:
    v = add_viommu(env)
    assert env.fd.veventq_alloc(v.id, SMMU, 8) == (2, FD_BASE)


@pytest.mark.parametrize(
    ("fields", "exc", "code"),
    [
        ({"flags": 1}, NotSupported, errno.EOPNOTSUPP),
        ({"__reserved": 1}, NotSupported, errno.EOPNOTSUPP),
        ({"type": uapi.IOMMU_VEVENTQ_TYPE_DEFAULT}, NotSupported, errno.EOPNOTSUPP),
        ({"veventq_depth": 0}, InvalidArgument, errno.EINVAL),
        ({"veventq_depth": VEVENTQ_MAX_DEPTH + 1}, InvalidArgument, errno.EINVAL),
        ({"viommu_id": 99}, NotFound, errno.ENOENT),
        # The flags come first: EOPNOTSUPP even with a bad depth and no vIOMMU.
        ({"flags": 1, "veventq_depth": 0, "viommu_id": 99}, NotSupported, errno.EOPNOTSUPP),
        ({"veventq_depth": 0, "viommu_id": 99}, InvalidArgument, errno.EINVAL),
    ],
)
def test_alloc_errnos_change_nothing(
    env: Any, fields: dict[str, int], exc: type[ApiError], code: int
) -> None:
    v = add_viommu(env)
    before = vstate(env, v)
    env.fails(exc, code, lambda: alloc(env, fields.pop("viommu_id", v.id), **fields))
    assert vstate(env, v) == before


def test_alloc_on_an_object_that_is_not_a_viommu_is_enoent(env: Any) -> None:
    ioas_id = env.fd.ioas_alloc()
    env.fails(NotFound, errno.ENOENT, lambda: alloc(env, ioas_id))


def test_the_deepest_queue_is_allowed(env: Any) -> None:
    v = add_viommu(env)
    assert alloc(env, v.id, veventq_depth=VEVENTQ_MAX_DEPTH)["out_veventq_id"] == 2


def test_alloc_of_an_existing_type_is_eexist(env: Any) -> None:
    v = add_viommu(env)
    alloc(env, v.id)
    before = vstate(env, v)
    env.fails(Exists, errno.EEXIST, lambda: alloc(env, v.id))
    assert vstate(env, v) == before


def test_alloc_with_no_free_fd_is_emfile_and_leaves_the_viommu_alone(env: Any) -> None:
    env.fd.file.fds = FdTable(FD_BASE, FD_BASE + 1)
    env.fd.fault_queue_alloc()  # takes the only fd
    v = add_viommu(env)
    before = vstate(env, v)
    env.fails(TooManyOpenFiles, errno.EMFILE, lambda: alloc(env, v.id))
    assert vstate(env, v) == before and len(env.fd.file.objects) == 2


def test_destroy_leaves_the_viommu(env: Any, q: Q) -> None:
    q.q.report(ev(1))
    env.fails(Busy, errno.EBUSY, lambda: env.fd.destroy(q.id))
    q.file.close()
    env.fd.destroy(q.id)
    assert q.viommu.veventqs == {} and q.viommu.users == 1 and not q.q.events
    env.fd.destroy(q.viommu.id)


def test_close_of_the_iommufd_waits_for_the_queue_file(env: Any, q: Q) -> None:
    q.q.report(ev(1))
    env.fd.close()
    assert len(env.fd.file.objects) == 2
    assert events(q.file.read(64), 32) == [(0, 0, ev(1))]
    q.file.close()
    assert len(env.fd.file.objects) == 0 and q.viommu.veventqs == {}


# ------------------------------------------------------------------ report, sequence
def test_events_read_back_with_their_sequence(q: Q) -> None:
    for i in range(3):
        q.q.report(ev(i))
    data = q.file.read(1000)
    assert len(data) == 3 * 40
    assert events(data, 32) == [(0, i, ev(i)) for i in range(3)]
    assert data[:8] == bytes.fromhex("00000000" "00000000")  # fmt: skip
    assert data[40:48] == bytes.fromhex("00000000" "01000000")  # fmt: skip
    assert q.q.num_events == 0 and q.file.read(1000) == b""


def test_report_of_nothing_is_einval(q: Q) -> None:
    before = q.state()
    with pytest.raises(InvalidArgument):
        q.q.report(b"")
    assert q.state() == before


def test_the_sequence_wraps_from_int_max_to_zero(q: Q) -> None:
    q.q.sequence = INT_MAX - 1
    for i in range(3):
        q.q.report(ev(i))
    assert [s for _, s, _ in events(q.file.read(1000), 32)] == [INT_MAX - 1, INT_MAX, 0]
    assert q.q.sequence == 1


def test_report_by_type_through_the_viommu(q: Q) -> None:
    viommu_report_event(q.viommu, SMMU, ev(5))
    assert list(q.q.events) == [(0, ev(5))]
    with pytest.raises(NotSupported) as e:
        viommu_report_event(q.viommu, CMDQV, ev(5))
    assert e.value.errno == errno.EOPNOTSUPP and len(q.q.events) == 1


# ------------------------------------------------------------------ overflow
def test_overflow_drops_events_and_queues_one_lost_header(q: Q) -> None:
    for i in range(7):  # depth 4: 4 kept, 3 dropped
        q.q.report(ev(i))
    assert q.q.num_events == 4 and q.q.lost == 6 and q.q.sequence == 7
    got = events(q.file.read(1000), 32)
    assert got == [*[(0, i, ev(i)) for i in range(4)], (LOST, 6, b"")]
    assert q.file.read(1000) == b""


def test_a_new_event_takes_the_lost_header_off_the_tail(q: Q) -> None:
    """``iommufd_vevent_handler``: the header stands only last; the user then sees the gap
    in the sequence instead."""
    for i in range(6):
        q.q.report(ev(i))
    assert events(q.file.read(40), 32) == [(0, 0, ev(0))]  # room for one more
    q.q.report(ev(6))
    assert q.q.lost is None
    got = events(q.file.read(1000), 32)
    assert [s for _, s, _ in got] == [1, 2, 3, 6] and all(f == 0 for f, _, _ in got)


def test_the_lost_header_alone_reads_in_eight_bytes(env: Any) -> None:
    q = Q(env, depth=1)
    q.q.report(ev(0))
    q.q.report(ev(1))
    assert events(q.file.read(40), 32) == [(0, 0, ev(0))]
    assert q.file.read(8) == bytes(HEADER.encode(flags=LOST, sequence=1))
    assert not q.q.pending()


# ------------------------------------------------------------------ read rules
def test_a_read_below_a_header_is_einval_even_when_empty(q: Q) -> None:
    for n in (0, 7):
        with pytest.raises(InvalidArgument) as e:
            q.file.read(n)
        assert e.value.errno == errno.EINVAL


def test_a_read_at_an_offset_is_espipe(q: Q) -> None:
    q.q.report(ev(0))
    before = q.state()
    with pytest.raises(IllegalSeek) as e:
        q.file.read(40, 8)
    assert e.value.errno == errno.ESPIPE and q.state() == before
    with pytest.raises(IllegalSeek):
        q.file.pread(40, 0)


@pytest.mark.parametrize("count", [8, 39])
def test_a_read_too_small_for_the_first_event_is_einval(q: Q, count: int) -> None:
    q.q.report(ev(0))
    before = q.state()
    with pytest.raises(InvalidArgument) as e:
        q.file.read(count)
    assert e.value.errno == errno.EINVAL and q.state() == before


def test_a_partial_buffer_gets_the_events_that_fit_whole(q: Q) -> None:
    for i in range(3):
        q.q.report(ev(i))
    assert events(q.file.read(40 + 39), 32) == [(0, 0, ev(0))]
    assert q.q.num_events == 2
    assert events(q.file.read(80), 32) == [(0, 1, ev(1)), (0, 2, ev(2))]


def test_the_lost_header_fits_where_an_event_would_not(q: Q) -> None:
    for i in range(5):
        q.q.report(ev(i))
    got = events(q.file.read(4 * 40 + 8), 32)
    assert got[-1] == (LOST, 4, b"") and len(got) == 5
    for i in range(5, 10):
        q.q.report(ev(i))
    # 4 events and the header wait; 4 events and 7 bytes: the header does not fit.
    assert len(q.file.read(4 * 40 + 7)) == 160 and q.q.lost == 9


def test_events_of_different_sizes(q: Q) -> None:
    q.q.report(b"\x01" * 16)
    q.q.report(b"\x02" * 4)
    data = q.file.read(24)
    assert data == bytes(HEADER.encode(sequence=0)) + b"\x01" * 16
    assert q.file.read(12) == bytes(HEADER.encode(sequence=1)) + b"\x02" * 4


def test_the_file_has_no_write(q: Q) -> None:
    with pytest.raises(InvalidArgument):
        q.file.write(b"\0" * 8)


def test_poll_is_readable_while_anything_waits(env: Any) -> None:
    q = Q(env, depth=1)
    assert q.file.poll() == 0
    q.q.report(ev(0))
    assert q.file.poll() == POLLIN | POLLRDNORM
    q.q.report(ev(1))
    q.file.read(40)
    assert q.q.num_events == 0 and q.file.poll() == POLLIN | POLLRDNORM  # the header
    q.file.read(8)
    assert q.file.poll() == 0
