"""IOMMU_TEST_CMD end to end: mock domains, accesses, dirty tracking, nested and vIOMMU
objects, fault and event queues, PASID attach -- the flows of the kernel's own selftest
(``tools/testing/selftests/iommu/iommufd.c``), restated against the model's /dev/iommu with
the same helpers (``iommufd_utils.h``) and the same expectations."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Final

import pytest

from iommusim.errors import ApiError
from iommusim.sw.iommufd import selftest_uapi as t
from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd.selftest_uapi import STRUCTS as TS
from testsupport.selftest import BUFFER_SIZE, PAGE, SelftestEnv

START: Final = t.MOCK_APERTURE_START
NESTED_DATA: Final = TS["iommu_hwpt_selftest"]
INV: Final = TS["iommu_hwpt_invalidate_selftest"]


@pytest.fixture
def env() -> SelftestEnv:
    return SelftestEnv()


def fails(code: int, call: Callable[[], object]) -> None:
    with pytest.raises(ApiError) as e:
        call()
    assert e.value.errno == code, errno.errorcode.get(e.value.errno)


def test_mock_domain_creates_selftest_device_and_auto_hwpt_ids_in_kernel_order(
    env: SelftestEnv,
) -> None:
    ioas = env.fd.ioas_alloc()
    m = env.mock_domain(ioas)
    # sobj is reserved first, then the device binds, then the auto HWPT: ids 2, 3, 4.
    assert (m.stdev_id, m.idev_id, m.hwpt_id) == (ioas + 1, ioas + 2, ioas + 3)
    for i in range(t.MOCK_DEV_CACHE_NUM):
        env.test_cmd(
            t.IOMMU_TEST_OP_DEV_CHECK_CACHE, m.idev_id, id=i, cache=t.IOMMU_TEST_DEV_CACHE_DEFAULT
        )
    # The mock aperture is reserved in the IOAS; a map goes to the domain and pins.
    iova = env.fd.ioas_map(ioas, env.buffer, BUFFER_SIZE, iova=START)
    env.check_map(m.hwpt_id, iova, BUFFER_SIZE, env.buffer)
    env.check_refs(env.buffer, BUFFER_SIZE, 1)
    fails(errno.EINVAL, lambda: env.check_map(m.hwpt_id, iova + PAGE, PAGE, env.buffer))
    fails(errno.EIO, lambda: env.check_refs(env.buffer, PAGE, 2))
    # Below the aperture is reserved.
    fails(errno.EINVAL, lambda: env.fd.ioas_map(ioas, env.buffer, PAGE, iova=PAGE))
    env.fd.ioas_unmap(ioas, iova, BUFFER_SIZE)
    env.check_refs(env.buffer, BUFFER_SIZE, 0)
    # Destroying the selftest object detaches and unbinds: then the IOAS can go.
    fails(errno.EBUSY, lambda: env.fd.destroy(ioas))
    env.fd.destroy(m.stdev_id)
    env.fd.destroy(ioas)
    assert len(env.file.objects) == 0


def test_two_mock_domains_share_pins_and_replace(env: SelftestEnv) -> None:
    ioas = env.fd.ioas_alloc()
    a = env.mock_domain(ioas)
    b = env.mock_domain(ioas)
    assert a.hwpt_id == b.hwpt_id  # the auto domain is reused
    env.fd.ioas_map(ioas, env.buffer, PAGE * 4, iova=START)
    env.check_refs(env.buffer, PAGE * 4, 1)
    other = env.fd.hwpt_alloc(a.idev_id, ioas)
    out = env.test_cmd(t.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, a.stdev_id, pt_id=other)
    assert out["pt_id"] == other
    # Replacing onto the IOAS again picks the existing auto domain.
    out = env.test_cmd(t.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, a.stdev_id, pt_id=ioas)
    assert out["pt_id"] == a.hwpt_id
    env.test_cmd(t.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, a.stdev_id, pt_id=other)
    env.check_map(other, START, PAGE * 4, env.buffer)
    env.check_refs(env.buffer, PAGE * 4, 1)  # still one pin per page, whatever the domains


def test_access_pages_pin_and_unmap_notifies(env: SelftestEnv) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buffer, BUFFER_SIZE, iova=START)
    fd = env.test_cmd(
        t.IOMMU_TEST_OP_CREATE_ACCESS, ioas, flags=t.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES
    )["out_access_fd"]
    item = env.test_cmd(
        t.IOMMU_TEST_OP_ACCESS_PAGES, fd, iova=START, length=PAGE * 2, uptr=env.buffer
    )["out_access_pages_id"]
    env.check_refs(env.buffer, PAGE * 2, 1)
    # A wrong uptr: the pinned pages are not those of the VA (EBADE), nothing stays pinned.
    fails(
        errno.EBADE,
        lambda: env.test_cmd(
            t.IOMMU_TEST_OP_ACCESS_PAGES, fd, iova=START, length=PAGE, uptr=env.buffer + PAGE
        ),
    )
    env.check_refs(env.buffer, PAGE * 2, 1)
    # Unmapping the IOAS tells the access, which unpins its item.
    env.fd.ioas_unmap(ioas, START, BUFFER_SIZE)
    env.check_refs(env.buffer, PAGE * 2, 0)
    fails(
        errno.ENOENT,
        lambda: env.test_cmd(t.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, fd, access_pages_id=item),
    )
    fails(errno.EBADFD, lambda: env.test_cmd(t.IOMMU_TEST_OP_ACCESS_PAGES, 999))
    env.file.fds.close(fd)
    env.fd.destroy(ioas)


def test_access_rw_reads_and_writes_through_the_ioas(env: SelftestEnv) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buffer, PAGE * 4, iova=START)
    fd = env.test_cmd(t.IOMMU_TEST_OP_CREATE_ACCESS, ioas, flags=0)["out_access_fd"]
    env.mm.write(env.buffer + 100, b"written by the process")
    tmp = env.mm.mmap(PAGE, 3)
    env.test_cmd(t.IOMMU_TEST_OP_ACCESS_RW, fd, iova=START + 100, length=22, uptr=tmp)
    assert env.mm.read(tmp, 22) == b"written by the process"
    env.mm.write(tmp, b"by the access")
    for flags in (t.MOCK_ACCESS_RW_WRITE, t.MOCK_ACCESS_RW_WRITE | t.MOCK_ACCESS_RW_SLOW_PATH):
        env.test_cmd(
            t.IOMMU_TEST_OP_ACCESS_RW, fd, iova=START + PAGE * 2, length=13, uptr=tmp, flags=flags
        )
        assert env.mm.read(env.buffer + PAGE * 2, 13) == b"by the access"
    fails(
        errno.ENOENT,
        lambda: env.test_cmd(t.IOMMU_TEST_OP_ACCESS_RW, fd, iova=8, length=1, uptr=tmp),
    )
    fails(errno.EOPNOTSUPP, lambda: env.test_cmd(t.IOMMU_TEST_OP_ACCESS_RW, fd, flags=1 << 8))


def test_dirty_tracking_reports_what_the_mock_device_dirtied(env: SelftestEnv) -> None:
    """``iommufd_dirty_tracking``'s setup and ``test_mock_dirty_bitmaps``: huge pages off,
    so the IOAS maps in PAGE_SIZE leaves (two MOCK_PAGE_SIZE entries each); a leaf dirtied
    anywhere is reported whole."""
    ioas = env.fd.ioas_alloc()
    env.fd.option_set(uapi.IOMMU_OPTION_HUGE_PAGES, 0, ioas)
    dev = env.mock_domain(ioas).idev_id
    hwpt = env.fd.hwpt_alloc(dev, ioas, flags=uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    env.fd.ioas_map(ioas, env.buffer, PAGE * 4, iova=START)
    env.raw(
        uapi.IOMMU_HWPT_SET_DIRTY_TRACKING,
        hwpt_id=hwpt,
        flags=uapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
    )
    ps, nbits = t.MOCK_PAGE_SIZE, PAGE * 4 // t.MOCK_PAGE_SIZE  # 8 bits, pteset = 4
    bitmap = env.mm.mmap(PAGE, 3)
    env.mm.write(bitmap, bytes([0b0001_0001]))  # every pteset-th bit
    out = env.test_cmd(
        t.IOMMU_TEST_OP_DIRTY, hwpt, iova=START, length=PAGE * 4, page_size=ps, uptr=bitmap
    )
    assert out["out_nr_dirty"] == 2

    def get(flags: int = 0) -> int:
        env.mm.write(bitmap, bytes(8))
        env.raw(
            uapi.IOMMU_HWPT_GET_DIRTY_BITMAP,
            hwpt_id=hwpt,
            flags=flags,
            iova=START,
            length=nbits * ps,
            page_size=ps,
            data=bitmap,
        )
        return env.mm.read(bitmap, 1)[0]

    no_clear = uapi.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR
    assert get(no_clear) == 0b0011_0011  # each dirty 4 KiB leaf is two 2 KiB bits
    assert get() == 0b0011_0011
    assert get() == 0  # read and cleared
    # A NO_DIRTY device cannot use a dirty-tracking HWPT (EINVAL), nor make one.
    nodirty = env.mock_domain(ioas, t.MOCK_FLAGS_DEVICE_NO_DIRTY)
    fails(errno.EINVAL, lambda: env.fd.file.replace_device(nodirty.idev_id, hwpt))
    fails(
        errno.EOPNOTSUPP,
        lambda: env.fd.hwpt_alloc(
            nodirty.idev_id, ioas, flags=uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
        ),
    )


def _nested(env: SelftestEnv, dev: int, parent: int) -> int:
    data = bytes(NESTED_DATA.encode(iotlb=t.IOMMU_TEST_IOTLB_DEFAULT))
    return env.fd.hwpt_alloc(dev, parent, data_type=t.IOMMU_HWPT_DATA_SELFTEST, data=data)


def test_nested_mock_hwpt_and_user_invalidation(env: SelftestEnv) -> None:
    ioas = env.fd.ioas_alloc()
    m = env.mock_domain(ioas)
    parent = env.fd.hwpt_alloc(m.idev_id, ioas, flags=uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
    nested = _nested(env, m.idev_id, parent)
    for i in range(t.MOCK_NESTED_DOMAIN_IOTLB_NUM):
        env.test_cmd(t.IOMMU_TEST_OP_MD_CHECK_IOTLB, nested, id=i, iotlb=t.IOMMU_TEST_IOTLB_DEFAULT)
    inv = t.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST
    done, err = env.fd.hwpt_invalidate(
        nested, inv, [bytes(INV.encode(iotlb_id=1)), bytes(INV.encode(iotlb_id=9))]
    )
    assert done == 1 and err is not None and err.errno == errno.EINVAL
    env.test_cmd(t.IOMMU_TEST_OP_MD_CHECK_IOTLB, nested, id=1, iotlb=0)
    env.test_cmd(t.IOMMU_TEST_OP_MD_CHECK_IOTLB, nested, id=2, iotlb=t.IOMMU_TEST_IOTLB_DEFAULT)
    done, err = env.fd.hwpt_invalidate(
        nested, inv, [bytes(INV.encode(flags=t.IOMMU_TEST_INVALIDATE_FLAG_ALL))]
    )
    assert (done, err) == (1, None)
    env.test_cmd(t.IOMMU_TEST_OP_MD_CHECK_IOTLB, nested, id=3, iotlb=0)
    # Attach the device to it; the parent cannot go while the nested HWPT lives.
    env.test_cmd(t.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, m.stdev_id, pt_id=nested)
    fails(errno.EBUSY, lambda: env.fd.destroy(parent))
    fails(errno.EBUSY, lambda: env.fd.destroy(nested))
    env.test_cmd(t.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, m.stdev_id, pt_id=parent)
    env.fd.destroy(nested)
    env.fd.destroy(m.stdev_id)
    env.fd.destroy(parent)


def test_viommu_vdevice_veventq_and_hw_queue(env: SelftestEnv) -> None:
    ioas = env.fd.ioas_alloc()
    m = env.mock_domain(ioas)
    parent = env.fd.hwpt_alloc(m.idev_id, ioas, flags=uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
    vdata = TS["iommu_viommu_selftest"]
    viommu = env.fd.viommu_alloc(
        m.idev_id, parent, t.IOMMU_VIOMMU_TYPE_SELFTEST, bytes(vdata.encode(in_data=0x1234))
    )
    out = vdata.decode(env.fd.scratch_read(vdata.size))
    assert out["out_data"] == 0x1234 and out["out_mmap_length"] == 2 * PAGE
    base = env.file.mmap(out["out_mmap_offset"], out["out_mmap_length"])
    fails(errno.ENXIO, lambda: env.file.mmap(out["out_mmap_offset"], PAGE))
    fails(errno.EBUSY, lambda: env.fd.destroy(viommu))  # the mapping holds it
    env.file.munmap(out["out_mmap_offset"])
    assert base % PAGE == 0
    fails(errno.EOPNOTSUPP, lambda: env.fd.viommu_alloc(m.idev_id, parent, 0))
    plain = env.fd.hwpt_alloc(m.idev_id, ioas)
    fails(errno.EINVAL, lambda: env.fd.viommu_alloc(m.idev_id, plain, t.IOMMU_VIOMMU_TYPE_SELFTEST))
    # A vDEVICE, then its vEVENTQ event.
    vdev = env.fd.vdevice_alloc(viommu, m.idev_id, 0x99)
    fails(errno.EEXIST, lambda: env.fd.vdevice_alloc(viommu, m.idev_id, 0x98))
    nested = env.fd.hwpt_alloc(
        m.idev_id,
        viommu,
        data_type=t.IOMMU_HWPT_DATA_SELFTEST,
        data=bytes(NESTED_DATA.encode(iotlb=t.IOMMU_TEST_IOTLB_DEFAULT)),
    )
    env.test_cmd(t.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, m.stdev_id, pt_id=nested)
    fails(errno.EOPNOTSUPP, lambda: env.test_cmd(t.IOMMU_TEST_OP_TRIGGER_VEVENT, dev_id=m.idev_id))
    qid, qfd = env.fd.veventq_alloc(viommu, t.IOMMU_VEVENTQ_TYPE_SELFTEST, 2)
    env.test_cmd(t.IOMMU_TEST_OP_TRIGGER_VEVENT, dev_id=m.idev_id)
    hdr = uapi.STRUCTS["iommufd_vevent_header"]
    ev = TS["iommu_viommu_event_selftest"]
    got = env.file.fds[qfd].read(hdr.size + ev.size)
    assert hdr.decode(got[: hdr.size]) == {"flags": 0, "sequence": 0}
    assert ev.decode(got[hdr.size :])["virt_id"] == 0x99
    # A hardware queue in the parent IOAS: it locks the area against unmap.
    env.fd.ioas_map(ioas, env.buffer, PAGE * 2, iova=START)
    hq = env.raw(
        uapi.IOMMU_HW_QUEUE_ALLOC,
        viommu_id=viommu,
        type=t.IOMMU_HW_QUEUE_TYPE_SELFTEST,
        index=0,
        nesting_parent_iova=START,
        length=PAGE,
    )["out_hw_queue_id"]
    fails(errno.EBUSY, lambda: env.fd.ioas_unmap(ioas, START, PAGE * 2))
    env.fd.destroy(hq)
    env.fd.ioas_unmap(ioas, START, PAGE * 2)
    env.file.fds[qfd].close()
    env.fd.destroy(qid)
    env.test_cmd(t.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, m.stdev_id, pt_id=parent)
    env.fd.destroy(nested)
    env.fd.destroy(vdev)
    env.fd.destroy(viommu)


def test_fault_queue_delivers_a_mock_iopf_and_takes_the_response(env: SelftestEnv) -> None:
    ioas = env.fd.ioas_alloc()
    m = env.mock_domain(ioas)
    fault_id, fault_fd = env.fd.fault_queue_alloc()
    hwpt = env.fd.hwpt_alloc(m.idev_id, ioas, fault_id=fault_id)
    env.test_cmd(t.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, m.stdev_id, pt_id=hwpt)
    env.test_cmd(
        t.IOMMU_TEST_OP_TRIGGER_IOPF,
        dev_id=m.idev_id,
        pasid=0,
        grpid=7,
        perm=uapi.IOMMU_PGFAULT_PERM_READ,
        addr=START + PAGE,
    )
    rec = uapi.STRUCTS["iommu_hwpt_pgfault"]
    f = env.file.fds[fault_fd]
    got = rec.decode(f.read(rec.size))
    assert got["dev_id"] == m.idev_id and got["grpid"] == 7 and got["addr"] == START + PAGE
    assert got["flags"] & uapi.IOMMU_PGFAULT_FLAGS_LAST_PAGE
    resp = uapi.STRUCTS["iommu_hwpt_page_response"]
    assert f.write(bytes(resp.encode(cookie=got["cookie"], code=0))) == resp.size
    drv = env.file.selftest
    assert drv is not None and [r.grpid for r in drv.page_responses] == [7]
    fails(errno.EINVAL, lambda: f.write(bytes(resp.encode(cookie=got["cookie"], code=0))))


def test_unbinding_a_device_tombstones_its_vdevice(env: SelftestEnv) -> None:
    """``iommufd_device_remove_vdev``: the vDEVICE goes with its device and its id stays
    taken (ENOENT, never reused) until the file is closed."""
    ioas = env.fd.ioas_alloc()
    m = env.mock_domain(ioas)
    parent = env.fd.hwpt_alloc(m.idev_id, ioas, flags=uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
    viommu = env.fd.viommu_alloc(m.idev_id, parent, t.IOMMU_VIOMMU_TYPE_SELFTEST)
    vdev = env.fd.vdevice_alloc(viommu, m.idev_id, 3)
    fails(errno.EBUSY, lambda: env.fd.destroy(viommu))  # the vDEVICE holds it
    env.fd.destroy(m.stdev_id)
    fails(errno.ENOENT, lambda: env.fd.destroy(vdev))
    fresh = [env.fd.ioas_alloc() for _ in range(3)]
    assert vdev not in fresh
    env.fd.destroy(viommu)


def _dmabuf_get(env: SelftestEnv, length: int) -> int:
    view = t.test_cmd_view(t.IOMMU_TEST_OP_DMABUF_GET)
    arg = view.encode(
        {"dmabuf_get.length": length}, size=t.TEST_CMD.size, op=t.IOMMU_TEST_OP_DMABUF_GET
    )
    return env.file.ioctl(t.IOMMU_TEST_CMD, arg)


def test_dmabuf_map_file_and_revoke(env: SelftestEnv) -> None:
    """``dmabuf_simple`` and ``dmabuf_revoke``: IOAS_MAP_FILE of a dma-buf maps its memory
    (no pins, no charge); a revoked buffer leaves every domain and cannot be mapped again
    (ENODEV) until the exporter un-revokes it."""
    ioas = env.fd.ioas_alloc()
    m = env.mock_domain(ioas)
    size = PAGE * 4
    dfd = _dmabuf_get(env, size)
    assert dfd in env.file.fds
    fails(errno.EINVAL, lambda: env.fd.ioas_map_file(ioas, dfd, 0, 0))
    fails(errno.EINVAL, lambda: env.fd.ioas_map_file(ioas, dfd, size, size))
    fails(errno.EINVAL, lambda: env.fd.ioas_map_file(ioas, dfd, 0, size + 1))
    iova = env.fd.ioas_map_file(ioas, dfd, 0, size)
    hwpt = env.file.objects.get(m.hwpt_id)
    dom = hwpt.domain  # type: ignore[attr-defined]
    buf = env.file.fds[dfd].ops
    assert dom.iova_to_phys(iova + PAGE) == buf.pa + PAGE  # type: ignore[attr-defined]
    revoke = t.IOMMU_TEST_OP_DMABUF_REVOKE
    env.test_cmd(revoke, dmabuf_fd=dfd, revoked=1)
    assert dom.iova_to_phys(iova) is None  # gone from the domain, the area stays
    env.fd.hwpt_alloc(m.idev_id, ioas)  # a new domain skips the revoked area
    fails(errno.ENODEV, lambda: env.fd.ioas_map_file(ioas, dfd, 0, size))
    env.test_cmd(revoke, dmabuf_fd=dfd, revoked=0)
    iova2 = env.fd.ioas_map_file(ioas, dfd, 0, size)
    assert dom.iova_to_phys(iova2) == buf.pa  # type: ignore[attr-defined]
    env.fd.ioas_unmap(ioas, iova, size)
    env.fd.ioas_map_file(ioas, dfd, 0, size, iova=iova)
    env.file.fds.close(dfd)
    fails(errno.EBADF, lambda: env.test_cmd(revoke, dmabuf_fd=dfd, revoked=1))
    fails(errno.EINVAL, lambda: _dmabuf_get(env, 513 * PAGE))
