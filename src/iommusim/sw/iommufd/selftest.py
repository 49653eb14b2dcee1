"""IOMMU_TEST_CMD: the selftest's ioctl (``drivers/iommu/iommufd/selftest.c``,
CONFIG_IOMMUFD_TEST), over the mock driver (:mod:`iommusim.sw.drivers.mock`).

:func:`open_selftest` is a kernel built with CONFIG_IOMMUFD_TEST: an IOMMU core with the mock
IOMMU registered, and ``/dev/iommu`` opened over it with the test ioctl enabled. Each op below
follows the ``iommufd_test_*`` function of the same name: the same checks in the same order,
the same objects created in the same order (so ids match the kernel's), the same errno.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from iommusim.errors import (
    InvalidArgument,
    IoError,
    NotFound,
    NotSupported,
    OutOfMemory,
    Overflow,
)
from iommusim.sim.clock import VirtualClock
from iommusim.sw.core.device import Device
from iommusim.sw.core.iommu import IommuCore
from iommusim.sw.drivers.mock import testops
from iommusim.sw.drivers.mock.driver import MockIommuDriver
from iommusim.sw.iommufd import selftest_uapi as t
from iommusim.sw.iommufd.access import Access
from iommusim.sw.iommufd.device import NO_PASID, IommufdDevice
from iommusim.sw.iommufd.dmabuf import DMABUF_NAME, DmaBuf
from iommusim.sw.iommufd.hwpt import Hwpt, HwptNested, HwptPaging
from iommusim.sw.iommufd.ioas import Ioas
from iommusim.sw.iommufd.iopt import ULONG_MAX
from iommusim.sw.iommufd.objects import IommufdObject, ObjType
from iommusim.sw.iommufd.selftest_access import STACCESS_NAME, SelftestAccess, staccess_get
from iommusim.sw.iommufd.uapi import Struct
from iommusim.sw.pages import PAGE_SIZE, PageAllocator

if TYPE_CHECKING:
    from iommusim.sw.iommufd.file import IommufdFile, IommufdParams
    from iommusim.sw.iommufd.ucmd import Ucmd
    from iommusim.sw.iommufd.user import UserMemory

__all__ = ["SelftestObj", "iommufd_test", "open_selftest"]

#: ``SZ_16M``: the most bytes ACCESS_PAGES and ACCESS_RW take at once.
_ACCESS_MAX: Final = 16 << 20


class SelftestObj(IommufdObject):
    """``struct selftest_obj`` of TYPE_IDEV: a mock device, bound and attached."""

    __slots__ = ("dev", "ictx", "idev")
    type = ObjType.SELFTEST

    def __init__(self, ictx: IommufdFile) -> None:
        super().__init__()
        self.ictx = ictx
        self.dev: Device | None = None
        self.idev: IommufdDevice | None = None

    def destroy(self) -> None:
        """``iommufd_selftest_destroy``: detach the RID, unbind, destroy the mock device."""
        api = self.ictx.device_api()
        if self.idev is not None:
            api.detach(self.idev, NO_PASID)
            api.unbind(self.idev)
            self.idev = None
        if self.dev is not None:
            _destroy_mock_dev(self.ictx, self.dev)
            self.dev = None


def _mock(ictx: IommufdFile) -> MockIommuDriver:
    drv = ictx.selftest
    if drv is None:  # pragma: no cover - TEST_CMD is only dispatched with a mock driver
        raise NotSupported("this kernel has no CONFIG_IOMMUFD_TEST")
    return drv


def _destroy_mock_dev(ictx: IommufdFile, dev: Device) -> None:
    """``mock_dev_destroy``: the device leaves the core, its id goes back."""
    ictx.need_core().release_device(dev)
    _mock(ictx).destroy_device(dev)


def _respond(ucmd: Ucmd, view: Struct, values: dict[str, int]) -> None:
    """``iommufd_ucmd_respond`` of the op's view of the union."""
    merged = {f.name: ucmd.cmd.get(f.name, 0) for f in view.fields}
    merged.update(values)
    n = min(ucmd.user_size, view.size)
    ucmd.arg[:n] = view.encode(merged)[:n]


def _sobj(ictx: IommufdFile, oid: int) -> SelftestObj:
    """``iommufd_test_get_selftest_obj``: ENOENT unless ``oid`` is a SELFTEST object."""
    return cast("SelftestObj", ictx.objects.get(oid, ObjType.SELFTEST))


def _user_pa(ictx: IommufdFile) -> Callable[[int], int]:
    """``get_user_pages_fast`` + ``put_page`` of one page: its physical address."""

    def pa(va: int) -> int:
        got = ictx.user.pin_pages(va & ~(PAGE_SIZE - 1), 1, False)
        ictx.user.unpin_pages(va & ~(PAGE_SIZE - 1), 1)
        return got[0]

    return pa


def _md_hwpt(ictx: IommufdFile, oid: int) -> Hwpt:
    """``get_md_pagetable``'s lookup: ENOENT unless ``oid`` is an HWPT of the kind."""
    obj = ictx.objects.get(oid)
    if not isinstance(obj, (HwptPaging, HwptNested)) or obj.domain is None:
        raise NotFound(f"object {oid} is not an HWPT")
    return obj


# ---------------------------------------------------------------------- the ops
def _mock_domain(ictx: IommufdFile, ucmd: Ucmd, flags: int) -> None:
    """``iommufd_test_mock_domain``: a SELFTEST object, a mock device bound and attached to
    ``id`` (an HWPT or an IOAS); out: the object, HWPT and DEVICE ids."""
    cmd = ucmd.cmd
    core = ictx.need_core()
    sobj = SelftestObj(ictx)
    ictx.objects.reserve(sobj)
    try:
        dev = _mock(ictx).create_device(flags)
        try:
            core.probe_device(dev)
        except BaseException:
            _mock(ictx).destroy_device(dev)
            raise
        sobj.dev = dev
        api = ictx.device_api()
        idev = api.bind(dev, release_on_close=False)
        sobj.idev = idev
        try:
            hwpt_id = api.attach(idev, cmd["id"], NO_PASID)
        except BaseException:
            api.unbind(idev)
            sobj.idev = None
            raise
    except BaseException:
        ictx.objects.abort(sobj)
        raise
    member = t.TEST_OP_MEMBER[t.IOMMU_TEST_OP_MOCK_DOMAIN]
    out = {
        f"{member}.out_stdev_id": sobj.id,
        f"{member}.out_hwpt_id": hwpt_id,
        f"{member}.out_idev_id": idev.id,
    }
    _respond(ucmd, t.TEST_CMD_VIEWS[member], out)
    ictx.objects.finalize(sobj)


def _mock_domain_replace(ictx: IommufdFile, ucmd: Ucmd) -> None:
    cmd = ucmd.cmd
    sobj = _sobj(ictx, cmd["id"])
    assert sobj.idev is not None
    pt = ictx.device_api().replace(sobj.idev, cmd["mock_domain_replace.pt_id"], NO_PASID)
    _respond(ucmd, t.TEST_CMD_VIEWS["mock_domain_replace"], {"mock_domain_replace.pt_id": pt})


def _add_reserved(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """``iommufd_test_add_reserved``: EINVAL for length 0, EOVERFLOW past the end, ENOENT
    for no IOAS, then ``iopt_reserve_iova`` (EADDRINUSE)."""
    cmd = ucmd.cmd
    start, length = cmd["add_reserved.start"], cmd["add_reserved.length"]
    if not length:
        raise InvalidArgument("ADD_RESERVED length must not be 0")
    if start + length - 1 > ULONG_MAX:
        raise Overflow("ADD_RESERVED range overflows")
    ioas = cast("Ioas", ictx.objects.get(cmd["id"], ObjType.IOAS))
    ioas.iopt.reserve_iova(start, start + length - 1, None)


def _check_map(ictx: IommufdFile, ucmd: Ucmd) -> None:
    cmd = ucmd.cmd
    hwpt = _md_hwpt(ictx, cmd["id"])
    assert hwpt.domain is not None
    testops.md_check_map(
        _mock(ictx),
        hwpt.domain,
        cmd["check_map.iova"],
        cmd["check_map.length"],
        cmd["check_map.uptr"],
        _user_pa(ictx),
    )


def _check_refs(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """``iommufd_test_md_check_refs``: every page's pin count is ``refs`` (EIO otherwise);
    EINVAL for a range not page aligned or wrapping."""
    cmd = ucmd.cmd
    uptr, length, refs = cmd["check_refs.uptr"], cmd["check_refs.length"], cmd["check_refs.refs"]
    if length % PAGE_SIZE or uptr % PAGE_SIZE or uptr + length > ULONG_MAX:
        raise InvalidArgument("CHECK_REFS needs a page-aligned range")
    for va in range(uptr, uptr + length, PAGE_SIZE):
        ictx.user.read(va, 1)  # get_user_pages_fast: EFAULT for no page
        if ictx.user.pin_count(va) != refs:
            raise IoError(f"page {va:#x} has {ictx.user.pin_count(va)} pins, not {refs}")


def _check_iotlb(ictx: IommufdFile, ucmd: Ucmd) -> None:
    cmd = ucmd.cmd
    hwpt = _md_hwpt(ictx, cmd["id"])
    assert hwpt.domain is not None
    testops.md_check_iotlb(
        _mock(ictx), hwpt.domain, cmd["check_iotlb.id"], cmd["check_iotlb.iotlb"]
    )


def _check_dev_cache(ictx: IommufdFile, ucmd: Ucmd) -> None:
    cmd = ucmd.cmd
    idev = ictx.get_device(cmd["id"])
    testops.dev_check_cache(
        _mock(ictx), idev.dev, cmd["check_dev_cache.id"], cmd["check_dev_cache.cache"]
    )


def _create_access(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """``iommufd_test_create_access``: EOPNOTSUPP for unknown flags; an access on IOAS
    ``id`` (its errors), and a file standing for it."""
    cmd = ucmd.cmd
    flags = cmd["create_access.flags"]
    if flags & ~t.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES:
        raise NotSupported(f"CREATE_ACCESS flags {flags:#x}")
    st = SelftestAccess(bool(flags & t.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES))
    f = ictx.fds.install(STACCESS_NAME, st)
    try:
        access = Access.create(ictx.objects, st)
        try:
            access.attach(cmd["id"])
        except BaseException:
            access.destroy_user()
            raise
    except BaseException:
        ictx.fds.close(f.fd)
        raise
    st.access = access
    st.ictx = ictx
    ictx.ctx_get()
    _respond(ucmd, t.TEST_CMD_VIEWS["create_access"], {"create_access.out_access_fd": f.fd})


def _access_replace_ioas(ictx: IommufdFile, ucmd: Ucmd) -> None:
    cmd = ucmd.cmd
    st = staccess_get(ictx, cmd["id"])
    assert st.access is not None
    st.access.replace(cmd["access_replace_ioas.ioas_id"])


def _access_pages(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """``iommufd_test_access_pages``: ENOMEM above 16 MiB, EOPNOTSUPP for unknown flags or
    an access without NEEDS_PIN_PAGES; pin, check the pages are the user's (EBADE), keep an
    item."""
    cmd = ucmd.cmd
    iova, length = cmd["access_pages.iova"], cmd["access_pages.length"]
    flags, uptr = cmd["access_pages.flags"], cmd["access_pages.uptr"]
    if length > _ACCESS_MAX:
        raise OutOfMemory("ACCESS_PAGES of more than 16 MiB")
    if flags & ~(t.MOCK_FLAGS_ACCESS_WRITE | t.MOCK_FLAGS_ACCESS_SYZ):
        raise NotSupported(f"ACCESS_PAGES flags {flags:#x}")
    if flags & t.MOCK_FLAGS_ACCESS_SYZ:
        raise NotSupported("MOCK_FLAGS_ACCESS_SYZ (syzkaller's IOVA encoding) is not modelled")
    st = staccess_get(ictx, cmd["id"])
    if not st.needs_pin_pages or st.access is None:
        raise NotSupported("the access was not created with NEEDS_PIN_PAGES")
    pas = st.access.pin_pages(iova, length, bool(flags & t.MOCK_FLAGS_ACCESS_WRITE))
    try:
        if uptr:
            st.check_pages(ictx, uptr - (iova % PAGE_SIZE), [int(p) for p in pas])
    except BaseException:
        st.access.unpin_pages(iova, length)
        raise
    item = st.add(iova, length)
    _respond(ucmd, t.TEST_CMD_VIEWS["access_pages"], {"access_pages.out_access_pages_id": item})


def _access_rw(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """``iommufd_test_access_rw``: ENOMEM above 16 MiB, EOPNOTSUPP for unknown flags,
    EFAULT for the user buffer, then ``iommufd_access_rw``."""
    cmd = ucmd.cmd
    iova, length = cmd["access_rw.iova"], cmd["access_rw.length"]
    flags, uptr = cmd["access_rw.flags"], cmd["access_rw.uptr"]
    if length > _ACCESS_MAX:
        raise OutOfMemory("ACCESS_RW of more than 16 MiB")
    allowed = t.MOCK_ACCESS_RW_WRITE | t.MOCK_ACCESS_RW_SLOW_PATH | t.MOCK_FLAGS_ACCESS_SYZ
    if flags & ~allowed:
        raise NotSupported(f"ACCESS_RW flags {flags:#x}")
    st = staccess_get(ictx, cmd["id"])
    assert st.access is not None
    write = bool(flags & t.MOCK_ACCESS_RW_WRITE)
    buf = bytearray(ictx.user.read(uptr, length) if write and length else bytes(length))
    if flags & t.MOCK_FLAGS_ACCESS_SYZ:
        raise NotSupported("MOCK_FLAGS_ACCESS_SYZ (syzkaller's IOVA encoding) is not modelled")
    st.access.rw(iova, buf, flags & ~t.MOCK_FLAGS_ACCESS_SYZ)
    if not write and length:
        ictx.user.write(uptr, bytes(buf))


def _destroy_access_pages(ictx: IommufdFile, ucmd: Ucmd) -> None:
    cmd = ucmd.cmd
    staccess_get(ictx, cmd["id"]).destroy_item(cmd["destroy_access_pages.access_pages_id"])


def _memory_limit(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """SET_TEMP_MEMORY_LIMIT: EINVAL below 12 bytes. The limit bounds the kernel's batch
    buffer, which the model does not have: results never depend on it."""
    if ucmd.cmd["memory_limit.limit"] < 12:
        raise InvalidArgument("the memory limit must be at least 12")
    ictx.test_memory_limit = ucmd.cmd["memory_limit.limit"]


def _dirty(ictx: IommufdFile, ucmd: Ucmd) -> None:
    cmd = ucmd.cmd
    iova, length = cmd["dirty.iova"], cmd["dirty.length"]
    page_size, uptr = cmd["dirty.page_size"], cmd["dirty.uptr"]
    nbits = testops.dirty_check_args(iova, length, page_size, uptr)
    hwpt = _md_hwpt(ictx, cmd["id"])
    assert hwpt.domain is not None
    n = testops.dirty_set(
        _mock(ictx), hwpt.domain, iova, page_size, nbits, lambda k: ictx.user.read(uptr, k)
    )
    _respond(ucmd, t.TEST_CMD_VIEWS["dirty"], {"dirty.out_nr_dirty": n})


def _trigger_iopf(ictx: IommufdFile, ucmd: Ucmd) -> None:
    cmd = ucmd.cmd
    idev = ictx.get_device(cmd["trigger_iopf.dev_id"])
    testops.trigger_iopf(
        _mock(ictx),
        idev.dev,
        cmd["trigger_iopf.pasid"],
        cmd["trigger_iopf.grpid"],
        cmd["trigger_iopf.perm"],
        cmd["trigger_iopf.addr"],
    )


def _trigger_vevent(ictx: IommufdFile, ucmd: Ucmd) -> None:
    idev = ictx.get_device(ucmd.cmd["trigger_vevent.dev_id"])
    testops.trigger_vevent(_mock(ictx), idev.dev)


def _pasid_check_hwpt(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """``iommufd_test_pasid_check_hwpt``: EINVAL unless the PASID is attached to exactly
    ``hwpt_id``'s domain (0: detached)."""
    cmd = ucmd.cmd
    sobj = _sobj(ictx, cmd["id"])
    assert sobj.dev is not None and sobj.dev.group is not None
    pasid, hwpt_id = cmd["pasid_check.pasid"], cmd["pasid_check.hwpt_id"]
    group = sobj.dev.group
    attached = group.domain if pasid == NO_PASID else group.pasid_array.get(pasid)
    if pasid == NO_PASID and attached is sobj.dev.iommu.blocked_domain:  # type: ignore[union-attr]
        attached = None
    if not hwpt_id:
        if attached is not None:
            raise InvalidArgument(f"PASID {pasid} is attached")
        return
    obj = ictx.objects.get(hwpt_id)
    if not isinstance(obj, Hwpt):
        raise InvalidArgument(f"object {hwpt_id} is not an HWPT")
    if attached is not obj.domain:
        raise InvalidArgument(f"PASID {pasid} is not attached to HWPT {hwpt_id}")


def _pasid_attach(ictx: IommufdFile, ucmd: Ucmd, replace: bool) -> None:
    cmd = ucmd.cmd
    sobj = _sobj(ictx, cmd["id"])
    assert sobj.idev is not None
    api = ictx.device_api()
    pasid, pt_id = cmd["pasid_attach.pasid"], cmd["pasid_attach.pt_id"]
    if replace:
        pt = api.replace(sobj.idev, pt_id, pasid)
    else:
        pt = api.attach(sobj.idev, pt_id, pasid)
    _respond(ucmd, t.TEST_CMD_VIEWS["pasid_attach"], {"pasid_attach.pt_id": pt})


def _pasid_detach(ictx: IommufdFile, ucmd: Ucmd) -> None:
    cmd = ucmd.cmd
    sobj = _sobj(ictx, cmd["id"])
    assert sobj.idev is not None
    ictx.device_api().detach(sobj.idev, cmd["pasid_detach.pasid"])


def _dmabuf_get(ictx: IommufdFile, ucmd: Ucmd) -> int:
    """``iommufd_test_dmabuf_get``: ``length`` rounded up to pages, EINVAL for 0 or more than
    512 pages; zeroed, physically contiguous memory exported as a dma-buf; the ioctl returns
    its fd."""
    length = -(-ucmd.cmd["dmabuf_get.length"] // PAGE_SIZE) * PAGE_SIZE
    if not length or length > 512 * PAGE_SIZE:
        raise InvalidArgument(f"dma-buf length {length:#x} must be 1..512 pages")
    pages = _mock(ictx).pages
    order = (length // PAGE_SIZE - 1).bit_length()
    pa = pages.alloc_pages(order)
    mem = pages.mem
    mem.write(pa, bytes(length))
    buf = DmaBuf(mem, pa, length)
    try:
        return ictx.fds.install(DMABUF_NAME, buf).fd
    except BaseException:
        pages.free_pages(pa, order)
        raise


def _dmabuf_revoke(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """``iommufd_test_dmabuf_revoke``: EBADF for an fd not open, EINVAL for a file that is
    not a dma-buf (``dma_buf_get``); set ``revoked`` and invalidate every mapping of it
    (``dma_buf_invalidate_mappings``: each IOAS area on it leaves its domains)."""
    fd = ucmd.cmd["dmabuf_revoke.dmabuf_fd"]
    buf = ictx.fds[fd].ops
    if not isinstance(buf, DmaBuf):
        raise InvalidArgument(f"fd {fd} is not a dma-buf")
    buf.revoked = bool(ucmd.cmd["dmabuf_revoke.revoked"])
    if not buf.revoked:
        return
    for pages in list(buf.users):
        if pages.revoked:
            continue
        for obj in ictx.objects:
            if isinstance(obj, Ioas):
                obj.iopt.revoke(pages)
        pages.revoked = True


_OPS: Final[dict[int, Callable[[IommufdFile, Ucmd], int | None]]] = {
    t.IOMMU_TEST_OP_ADD_RESERVED: _add_reserved,
    t.IOMMU_TEST_OP_MOCK_DOMAIN: lambda i, u: _mock_domain(i, u, 0),
    t.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: lambda i, u: _mock_domain(
        i, u, u.cmd["mock_domain_flags.dev_flags"]
    ),
    t.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: _mock_domain_replace,
    t.IOMMU_TEST_OP_MD_CHECK_MAP: _check_map,
    t.IOMMU_TEST_OP_MD_CHECK_REFS: _check_refs,
    t.IOMMU_TEST_OP_MD_CHECK_IOTLB: _check_iotlb,
    t.IOMMU_TEST_OP_DEV_CHECK_CACHE: _check_dev_cache,
    t.IOMMU_TEST_OP_CREATE_ACCESS: _create_access,
    t.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: _access_replace_ioas,
    t.IOMMU_TEST_OP_ACCESS_PAGES: _access_pages,
    t.IOMMU_TEST_OP_ACCESS_RW: _access_rw,
    t.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: _destroy_access_pages,
    t.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: _memory_limit,
    t.IOMMU_TEST_OP_DIRTY: _dirty,
    t.IOMMU_TEST_OP_TRIGGER_IOPF: _trigger_iopf,
    t.IOMMU_TEST_OP_TRIGGER_VEVENT: _trigger_vevent,
    t.IOMMU_TEST_OP_PASID_ATTACH: lambda i, u: _pasid_attach(i, u, False),
    t.IOMMU_TEST_OP_PASID_REPLACE: lambda i, u: _pasid_attach(i, u, True),
    t.IOMMU_TEST_OP_PASID_DETACH: _pasid_detach,
    t.IOMMU_TEST_OP_PASID_CHECK_HWPT: _pasid_check_hwpt,
    t.IOMMU_TEST_OP_DMABUF_GET: _dmabuf_get,
    t.IOMMU_TEST_OP_DMABUF_REVOKE: _dmabuf_revoke,
}


def iommufd_test(ictx: IommufdFile, ucmd: Ucmd) -> int:
    """``iommufd_test``: EOPNOTSUPP for an op the header does not define; the op's return
    value (DMABUF_GET's fd, else 0)."""
    op = _OPS.get(ucmd.cmd["op"])
    if op is None:
        raise NotSupported(f"no test op {ucmd.cmd['op']}")
    return op(ictx, ucmd) or 0


def open_selftest(
    user: UserMemory, pages: PageAllocator, params: IommufdParams | None = None
) -> IommufdFile:
    """``/dev/iommu`` of a kernel with CONFIG_IOMMUFD_TEST: a fresh IOMMU core with the mock
    IOMMU registered (its vIOMMU pages from ``pages``), the file opened by ``user``."""
    from iommusim.sw.iommufd.file import IommufdFile

    core = IommuCore(VirtualClock())
    mock = MockIommuDriver(pages)
    core.register(mock)
    return IommufdFile(user, params, core, selftest=mock)
