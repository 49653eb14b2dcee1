"""IOMMU_FAULT_QUEUE_ALLOC and the fault queue file (Linux 7.3 ``eventq.c``: the
``iommufd_fault_*`` functions): whole page-request groups read as ``struct
iommu_hwpt_pgfault`` records, answered by ``struct iommu_hwpt_page_response`` writes."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from iommusim.errors import (
    BadFileDescriptor,
    Busy,
    IllegalSeek,
    InvalidArgument,
    ModelError,
    NotSupported,
    TooManyOpenFiles,
)
from iommusim.sw.core.device import Device
from iommusim.sw.core.domain import DOMAIN_NESTED, Domain
from iommusim.sw.core.ida import Ida
from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd.fault import FaultHooks, IommufdFault
from iommusim.sw.iommufd.fds import FD_BASE, POLLIN, POLLOUT, POLLRDNORM, FdTable
from iommusim.sw.iommufd.objects import ObjType
from iommusim.sw.iopf import (
    PERM_EXEC,
    PERM_PRIV,
    PERM_READ,
    PERM_WRITE,
    RESP_INVALID,
    RESP_SUCCESS,
    Iopf,
    IopfGroup,
    PageFault,
)

PGFAULT = uapi.STRUCTS["iommu_hwpt_pgfault"]
RESPONSE = uapi.STRUCTS["iommu_hwpt_page_response"]
DEV_IDS = {"nic": 7, "gpu": 9}


class Machine:
    """A fault core with one faultable domain, answers recorded as (dev, pasid, grpid,
    code); ``attach`` names the domain a (device, pasid) faults on."""

    def __init__(self, env: Any) -> None:
        self.nic = Device("nic", 0x10, pasid_bits=8)
        self.gpu = Device("gpu", 0x20, pasid_bits=8)
        self.domain = Domain(DOMAIN_NESTED, object())
        self.other = Domain(DOMAIN_NESTED, object())
        self.sent: list[tuple[str, int | None, int, int]] = []
        self.attach: dict[tuple[str, int | None], Domain] = {}
        self.iopf = Iopf(
            lambda dev, pasid: self.attach.get((dev.name, pasid)),
            lambda dev, f, code: self.sent.append((dev.name, f.pasid, f.grpid, code)),
        )
        env.fd.file.fault_hooks = FaultHooks(self.iopf, lambda dev: DEV_IDS[dev.name])
        self.fault_id, self.fault_fd = env.fd.fault_queue_alloc()
        fault = env.fd.file.objects.get(self.fault_id, ObjType.FAULT)
        assert isinstance(fault, IommufdFault)
        self.fault = fault
        self.domain.iopf_handler = fault.iopf_handler
        self.other.iopf_handler = fault.iopf_handler
        self.attach[("nic", None)] = self.domain
        self.attach[("nic", 3)] = self.domain
        self.attach[("gpu", None)] = self.domain
        self.attach[("gpu", 4)] = self.other
        self.file = env.fd.file.fds[self.fault_fd]

    def group(
        self,
        dev: Device,
        grpid: int,
        addrs: list[int],
        pasid: int | None = None,
        perm: int = PERM_READ,
    ) -> None:
        for i, addr in enumerate(addrs):
            self.iopf.report(dev, PageFault(pasid, grpid, perm, addr, i == len(addrs) - 1))


def records(data: bytes) -> list[dict[str, int]]:
    assert len(data) % PGFAULT.size == 0
    return [PGFAULT.decode(data[i : i + PGFAULT.size]) for i in range(0, len(data), 40)]


def responses(*pairs: tuple[int, int]) -> bytes:
    return b"".join(bytes(RESPONSE.encode(cookie=c, code=k)) for c, k in pairs)


def state(m: Machine) -> tuple[object, ...]:
    return (
        [g.cookie for g in m.fault.deliver],
        {c: g.cookie for c, g in m.fault.response.items()},
        list(m.sent),
        sorted(m.iopf.pending),
        m.fault.users,
    )


@pytest.fixture
def m(env: Any) -> Machine:
    return Machine(env)


# ------------------------------------------------------------------ the struct layouts
def test_record_layouts_are_the_headers() -> None:
    """``struct iommu_hwpt_pgfault`` is 40 bytes, ``iommu_hwpt_page_response`` 8."""
    assert PGFAULT.size == 40 and RESPONSE.size == 8
    offsets = {f.name: f.offset for f in PGFAULT.fields}
    assert offsets == {
        "flags": 0,
        "dev_id": 4,
        "pasid": 8,
        "grpid": 12,
        "perm": 16,
        "__reserved": 20,
        "addr": 24,
        "length": 32,
        "cookie": 36,
    }


# ------------------------------------------------------------------ FAULT_QUEUE_ALLOC
def test_alloc_gives_an_object_and_the_lowest_free_fd(env: Any) -> None:
    rc, out = env.ioctl(uapi.IOMMU_FAULT_QUEUE_ALLOC)
    assert rc == 0 and out["out_fault_id"] == 1 and out["out_fault_fd"] == FD_BASE
    fault = env.fd.file.objects.get(1, ObjType.FAULT)
    # The table's reference and the file's.
    assert fault.users == 2
    f = env.fd.file.fds[FD_BASE]
    assert f.name == "[iommufd-pgfault]" and f.ops is fault
    _, out2 = env.ioctl(uapi.IOMMU_FAULT_QUEUE_ALLOC)
    assert (out2["out_fault_id"], out2["out_fault_fd"]) == (2, FD_BASE + 1)
    f.close()
    _, out3 = env.ioctl(uapi.IOMMU_FAULT_QUEUE_ALLOC)
    assert out3["out_fault_fd"] == FD_BASE  # lowest free, as alloc_fd


def test_alloc_with_flags_is_eopnotsupp(env: Any) -> None:
    env.fails(
        NotSupported, errno.EOPNOTSUPP, lambda: env.ioctl(uapi.IOMMU_FAULT_QUEUE_ALLOC, flags=1)
    )
    assert len(env.fd.file.fds) == 0


def test_alloc_with_no_free_fd_is_emfile_and_leaves_nothing(env: Any) -> None:
    env.fd.file.fds = FdTable(FD_BASE, FD_BASE + 1)
    env.ioctl(uapi.IOMMU_FAULT_QUEUE_ALLOC)
    env.fails(TooManyOpenFiles, errno.EMFILE, lambda: env.ioctl(uapi.IOMMU_FAULT_QUEUE_ALLOC))
    assert env.fd.file.fds.fds() == [FD_BASE] and len(env.fd.file.objects) == 1
    # The aborted id is free again.
    env.fd.file.fds[FD_BASE].close()
    assert env.ioctl(uapi.IOMMU_FAULT_QUEUE_ALLOC)[1]["out_fault_id"] == 2


def test_alloc_short_struct_is_einval(env: Any) -> None:
    s = uapi.IOCTLS[uapi.IOMMU_FAULT_QUEUE_ALLOC]
    arg = s.encode(size=12)
    env.fails(InvalidArgument, errno.EINVAL, lambda: env.fd.file.ioctl(s.ioctl or 0, arg))


# ------------------------------------------------------------------ lifetime
def test_destroy_while_the_fd_is_open_is_ebusy(env: Any, m: Machine) -> None:
    env.fails(Busy, errno.EBUSY, lambda: env.fd.destroy(m.fault_id))
    m.file.close()
    assert m.fault.users == 1
    env.fd.destroy(m.fault_id)
    assert len(env.fd.file.objects) == 0


def test_closing_the_fd_twice_is_ebadf(m: Machine) -> None:
    m.file.close()
    with pytest.raises(BadFileDescriptor) as e:
        m.file.close()
    assert e.value.errno == errno.EBADF
    for call in (lambda: m.file.read(40), lambda: m.file.write(b""), m.file.poll):
        with pytest.raises(BadFileDescriptor):
            call()


def test_the_fd_keeps_the_context_alive_after_the_iommufd_closes(env: Any, m: Machine) -> None:
    """``iommufd_eventq_init`` takes a context reference: ``iommufd_fops_release`` waits
    for the queue file's release."""
    m.group(m.nic, 1, [0x1000])
    env.fd.close()
    assert env.fd.file.closed
    assert m.fault.id in [o.id for o in env.fd.file.objects]
    (rec,) = records(m.file.read(40))
    assert rec["dev_id"] == 7
    m.file.close()
    assert len(env.fd.file.objects) == 0
    # Release answered the group that was read but not answered.
    assert m.sent == [("nic", None, 1, RESP_INVALID)]


# ------------------------------------------------------------------ read
def test_read_gives_whole_groups_with_one_cookie_each(m: Machine) -> None:
    m.group(m.nic, 5, [0x1000, 0x2000, 0x3000], pasid=3, perm=PERM_WRITE | PERM_EXEC)
    m.group(m.gpu, 6, [0x8000])
    data = m.file.read(40 * 8)
    recs = records(data)
    assert len(recs) == 4
    assert [r["cookie"] for r in recs] == [1, 1, 1, 2]
    last = uapi.IOMMU_PGFAULT_FLAGS_LAST_PAGE
    pasid_valid = uapi.IOMMU_PGFAULT_FLAGS_PASID_VALID
    assert recs[0] == {
        "flags": pasid_valid,
        "dev_id": 7,
        "pasid": 3,
        "grpid": 5,
        "perm": PERM_WRITE | PERM_EXEC,
        "__reserved": 0,
        "addr": 0x1000,
        "length": 0,
        "cookie": 1,
    }
    assert recs[2]["flags"] == pasid_valid | last
    assert recs[3] == dict(recs[3], flags=last, dev_id=9, pasid=0, grpid=6, addr=0x8000)
    # Golden bytes of the last record.
    assert data[120:] == bytes.fromhex(
        "02000000" "09000000" "00000000" "06000000" "01000000" "00000000"
        "0080000000000000" "00000000" "02000000"
    )  # fmt: skip
    assert m.fault.deliver == [] and sorted(m.fault.response) == [1, 2]


def test_perm_bits_carry_over(m: Machine) -> None:
    m.group(m.nic, 1, [0x1000], perm=PERM_READ | PERM_PRIV)
    (rec,) = records(m.file.read(40))
    assert rec["perm"] == uapi.IOMMU_PGFAULT_PERM_READ | uapi.IOMMU_PGFAULT_PERM_PRIV


def test_read_of_an_empty_queue_is_zero_bytes(m: Machine) -> None:
    assert m.file.read(40) == b""
    assert m.file.read(0) == b""


def test_read_stops_before_a_group_that_does_not_fit(m: Machine) -> None:
    m.group(m.nic, 1, [0x1000])
    m.group(m.nic, 2, [0x2000, 0x3000])
    recs = records(m.file.read(80))
    assert [r["grpid"] for r in recs] == [1]
    assert [g.last.grpid for g in m.fault.deliver] == [2]
    assert [r["grpid"] for r in records(m.file.read(80))] == [2, 2]


@pytest.mark.parametrize("count", [0, 40])
def test_read_too_small_for_the_first_group_is_einval(m: Machine, count: int) -> None:
    m.group(m.nic, 1, [0x1000, 0x2000])
    before = state(m)
    with pytest.raises(InvalidArgument) as e:
        m.file.read(count)
    assert e.value.errno == errno.EINVAL and state(m) == before


@pytest.mark.parametrize(("count", "offset"), [(41, 0), (39, 0), (40, 40), (80, 1)])
def test_read_at_an_offset_or_of_a_partial_record_is_espipe(
    m: Machine, count: int, offset: int
) -> None:
    m.group(m.nic, 1, [0x1000])
    before = state(m)
    with pytest.raises(IllegalSeek) as e:
        m.file.read(count, offset)
    assert e.value.errno == errno.ESPIPE and state(m) == before


def test_pread_and_pwrite_are_espipe_and_negative_positions_einval(m: Machine) -> None:
    m.group(m.nic, 1, [0x1000])
    before = state(m)
    with pytest.raises(IllegalSeek):
        m.file.pread(40, 0)
    with pytest.raises(IllegalSeek):
        m.file.pwrite(responses((1, 0)), 0)
    for call in (lambda: m.file.pread(40, -1), lambda: m.file.read(40, -1)):
        with pytest.raises(InvalidArgument):
            call()
    assert state(m) == before


def test_a_count_above_max_rw_count_is_cut_to_it(m: Machine) -> None:
    """``vfs_read`` cuts the count to MAX_RW_COUNT (0x7ffff000, not a multiple of 40: so
    ESPIPE) before the fault read checks it; above SSIZE_MAX it is EINVAL."""
    m.group(m.nic, 1, [0x1000])
    with pytest.raises(IllegalSeek):
        m.file.read(0x7FFF_F000 + 40 * 1000)
    with pytest.raises(InvalidArgument):
        m.file.read(1 << 63)
    with pytest.raises(InvalidArgument):
        m.file.read(-1)


def test_cookie_exhaustion_is_ebusy_on_the_first_group(m: Machine) -> None:
    """``xa_alloc`` over ``xa_limit_32b`` fails -EBUSY; the group stays queued."""
    m.fault._cookies = Ida(1, 1)
    m.group(m.nic, 1, [0x1000])
    m.group(m.nic, 2, [0x2000])
    assert [r["grpid"] for r in records(m.file.read(80))] == [1]
    before = state(m)
    with pytest.raises(Busy):
        m.file.read(40)
    assert state(m) == before


# ------------------------------------------------------------------ write
def test_write_answers_groups_by_cookie(m: Machine) -> None:
    m.group(m.nic, 1, [0x1000], pasid=3)
    m.group(m.gpu, 2, [0x2000])
    m.file.read(80)
    assert m.file.write(responses((2, RESP_SUCCESS), (1, RESP_INVALID))) == 16
    assert m.sent == [("gpu", None, 2, RESP_SUCCESS), ("nic", 3, 1, RESP_INVALID)]
    assert m.fault.response == {} and m.iopf.pending == {}
    # The cookies are free again: the next group gets 1.
    m.group(m.nic, 3, [0x3000])
    assert records(m.file.read(40))[0]["cookie"] == 1


def test_write_of_nothing_is_zero(m: Machine) -> None:
    assert m.file.write(b"") == 0


@pytest.mark.parametrize(
    "bad",
    [
        responses((9, RESP_SUCCESS)),  # no such cookie
        responses((1, 2)),  # RESP_FAILURE is not a user answer
        responses((1, 0xFFFF_FFFF)),
    ],
)
def test_a_bad_first_response_is_einval_and_answers_nothing(m: Machine, bad: bytes) -> None:
    m.group(m.nic, 1, [0x1000])
    m.file.read(40)
    before = state(m)
    with pytest.raises(InvalidArgument) as e:
        m.file.write(bad + responses((1, RESP_SUCCESS)))
    assert e.value.errno == errno.EINVAL and state(m) == before


def test_a_bad_later_response_returns_the_count_before_it(m: Machine) -> None:
    m.group(m.nic, 1, [0x1000])
    m.group(m.nic, 2, [0x2000])
    m.file.read(80)
    assert m.file.write(responses((1, RESP_SUCCESS), (1, RESP_SUCCESS), (2, 0))) == 8
    assert m.sent == [("nic", None, 1, RESP_SUCCESS)] and list(m.fault.response) == [2]


@pytest.mark.parametrize(("data", "offset"), [(b"\0" * 7, 0), (b"\0" * 12, 0), (b"\0" * 8, 8)])
def test_write_at_an_offset_or_of_a_partial_response_is_espipe(
    m: Machine, data: bytes, offset: int
) -> None:
    m.group(m.nic, 1, [0x1000])
    m.file.read(40)
    before = state(m)
    with pytest.raises(IllegalSeek) as e:
        m.file.write(data, offset)
    assert e.value.errno == errno.ESPIPE and state(m) == before


def test_an_undelivered_group_cannot_be_answered(m: Machine) -> None:
    m.group(m.nic, 1, [0x1000])
    with pytest.raises(InvalidArgument):
        m.file.write(responses((1, RESP_SUCCESS)))
    assert m.sent == []


# ------------------------------------------------------------------ poll
def test_poll_is_always_writable_and_readable_while_groups_wait(m: Machine) -> None:
    assert m.file.poll() == POLLOUT
    m.group(m.nic, 1, [0x1000])
    assert m.file.poll() == POLLOUT | POLLIN | POLLRDNORM
    m.file.read(40)
    assert m.file.poll() == POLLOUT  # read but unanswered groups are not "readable"


# ------------------------------------------------------------------ auto-response, destroy
def test_auto_respond_answers_only_that_attach(m: Machine) -> None:
    m.group(m.nic, 1, [0x1000])  # nic, no PASID: delivered, unanswered
    m.group(m.nic, 2, [0x2000], pasid=3)  # nic PASID 3: another attach
    m.group(m.gpu, 3, [0x3000])  # gpu: another device
    m.file.read(120)
    m.group(m.nic, 4, [0x4000])  # nic again: undelivered
    m.group(m.gpu, 5, [0x5000], pasid=4)  # gpu PASID 4 on the other domain
    m.fault.auto_respond(m.domain, m.nic, None)
    assert m.sent == [("nic", None, 4, RESP_INVALID), ("nic", None, 1, RESP_INVALID)]
    assert [g.last.grpid for g in m.fault.deliver] == [5]
    assert sorted(g.last.grpid for g in m.fault.response.values()) == [2, 3]
    m.fault.auto_respond(m.domain, m.gpu, 4)  # wrong domain for gpu PASID 4: nothing
    assert len(m.sent) == 2
    m.fault.auto_respond(m.other, m.gpu, 4)
    assert m.sent[2:] == [("gpu", 4, 5, RESP_INVALID)]


def test_auto_respond_skips_groups_the_core_already_answered(m: Machine) -> None:
    m.group(m.nic, 1, [0x1000])
    m.file.read(40)
    m.group(m.nic, 2, [0x2000])
    m.iopf.remove_device(m.nic)  # the core answers every pending group of the device
    assert len(m.sent) == 2
    m.fault.auto_respond(m.domain, m.nic, None)
    assert len(m.sent) == 2 and m.fault.deliver == [] and m.fault.response == {}


def test_a_response_for_a_group_the_core_answered_is_not_sent_twice(m: Machine) -> None:
    m.group(m.nic, 1, [0x1000])
    m.file.read(40)
    m.iopf.remove_device(m.nic)
    assert m.file.write(responses((1, RESP_SUCCESS))) == 8
    assert m.sent == [("nic", None, 1, RESP_INVALID)] and m.fault.response == {}


def test_destroy_answers_everything_outstanding(env: Any, m: Machine) -> None:
    m.group(m.nic, 1, [0x1000])
    m.group(m.gpu, 2, [0x2000])
    m.file.read(40)
    m.group(m.nic, 3, [0x3000], pasid=3)
    m.file.close()
    env.fd.destroy(m.fault_id)
    assert m.sent == [
        ("gpu", None, 2, RESP_INVALID),
        ("nic", 3, 3, RESP_INVALID),
        ("nic", None, 1, RESP_INVALID),
    ]
    assert m.iopf.pending == {}


def test_a_file_without_hooks_cannot_deliver(env: Any) -> None:
    fault_id, fd = env.fd.fault_queue_alloc()
    fault = env.fd.file.objects.get(fault_id, ObjType.FAULT)
    assert isinstance(fault, IommufdFault)
    dev = Device("nic", 1)
    fault.iopf_handler(
        IopfGroup(dev, [PageFault(None, 1, PERM_READ, 0x1000, True)], Domain(DOMAIN_NESTED, 0), 1)
    )
    with pytest.raises(ModelError, match="fault_hooks"):
        env.fd.file.fds[fd].read(40)
    assert len(fault.deliver) == 1 and fault.response == {}
