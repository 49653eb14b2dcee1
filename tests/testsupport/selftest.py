"""A model process with ``/dev/iommu`` of a CONFIG_IOMMUFD_TEST kernel, and the helpers of the
kernel's ``tools/testing/selftests/iommu/iommufd_utils.h`` (``test_cmd_mock_domain`` and
friends) as methods: each builds ``struct iommu_test_cmd`` with the op's view and issues
IOMMU_TEST_CMD, exactly as the C helpers do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from iommusim.mem import SparseMemory
from iommusim.sw.iommufd import Iommufd, uapi
from iommusim.sw.iommufd import selftest_uapi as t
from iommusim.sw.iommufd.api import SCRATCH_SIZE
from iommusim.sw.iommufd.selftest import open_selftest
from iommusim.sw.iommufd.user import MmUserMemory
from iommusim.sw.mm import PROT_READ, PROT_WRITE, Mm
from iommusim.sw.pages import PageAllocator

POOL: Final = 0x8000_0000
PAGE: Final = 4096
BUFFER_SIZE: Final = 2 << 20


@dataclass
class Mock:
    """Ids ``test_cmd_mock_domain`` returns."""

    stdev_id: int
    hwpt_id: int
    idev_id: int


class SelftestEnv:
    """The process (``mm``), its iommufd (``fd``: the Pythonic face; ``fd.file``: the file)
    and a 2 MiB-aligned read-write ``buffer`` of BUFFER_SIZE bytes."""

    def __init__(self) -> None:
        mem = SparseMemory()
        pages = PageAllocator(mem, POOL, 8192 * PAGE)
        self.mm = Mm(mem, pages, "sv48")
        scratch = self.mm.mmap(SCRATCH_SIZE, PROT_READ | PROT_WRITE)
        self.fd = Iommufd(open_selftest(MmUserMemory(self.mm), pages), scratch, SCRATCH_SIZE)
        self.buffer = self.mm.mmap(
            BUFFER_SIZE, PROT_READ | PROT_WRITE, addr=0x4000_0000, fixed=True
        )

    @property
    def file(self):  # type: ignore[no-untyped-def]
        return self.fd.file

    def test_cmd(self, op: int, obj: int = 0, **member: int) -> dict[str, int]:
        """IOMMU_TEST_CMD ``op`` on object ``obj`` (the struct's ``id``) with the op's member
        fields (named without the member prefix); returns the decoded view after the call."""
        view = t.test_cmd_view(op)
        name = t.TEST_OP_MEMBER[op]
        fields = {f"{name}.{k}": v for k, v in member.items()}
        arg = view.encode(fields, size=t.TEST_CMD.size, op=op, id=obj)
        self.fd.file.ioctl(t.IOMMU_TEST_CMD, arg)
        out = view.decode(arg)
        return {k.split(".", 1)[-1]: v for k, v in out.items() if "." in k}

    def mock_domain(self, pt_id: int, flags: int = 0) -> Mock:
        if flags:
            out = self.test_cmd(t.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, pt_id, dev_flags=flags)
        else:
            out = self.test_cmd(t.IOMMU_TEST_OP_MOCK_DOMAIN, pt_id)
        return Mock(out["out_stdev_id"], out["out_hwpt_id"], out["out_idev_id"])

    def check_map(self, hwpt_id: int, iova: int, length: int, uptr: int) -> None:
        self.test_cmd(t.IOMMU_TEST_OP_MD_CHECK_MAP, hwpt_id, iova=iova, length=length, uptr=uptr)

    def check_refs(self, uptr: int, length: int, refs: int) -> None:
        self.test_cmd(t.IOMMU_TEST_OP_MD_CHECK_REFS, 0, uptr=uptr, length=length, refs=refs)

    def raw(self, request: int, **fields: int) -> dict[str, int]:
        s = uapi.IOCTLS[request]
        arg = s.encode(fields, size=s.size)
        self.fd.file.ioctl(request, arg)
        return s.decode(arg)


def selftest_snapshot(env: SelftestEnv) -> dict[str, object]:
    """Everything an ioctl of :class:`SelftestEnv`'s file may change: the object table (ids,
    types, users, and how many ids are taken), each IOAS's areas with their pages' pins and
    locks, the process's pin counts, the open fds, the mmap regions, each device's
    attachments, the mock driver's vIOMMUs, the pages allocated (vIOMMU regions; fault the
    process's pages in first) and the IOMMU core's devices and groups. A failed ioctl must
    leave all of it unchanged."""
    from iommusim.sw.iommufd.device import IommufdDevice
    from iommusim.sw.iommufd.ioas import Ioas

    f = env.file
    ioases = {}
    attached = {}
    for o in f.objects:
        if isinstance(o, Ioas):
            ioases[o.id] = [
                (a.iova, a.last, id(a.pages), a.num_accesses, a.num_locks, a.pages.npinned)
                for a in o.iopt.areas
            ]
        elif isinstance(o, IommufdDevice) and o.igroup is not None:
            attached[o.id] = {
                p: (att.hwpt.id if att.hwpt else 0, sorted(att.devices))
                for p, att in o.igroup.pasid_attach.items()
            }
    core = f.core
    assert core is not None and f.selftest is not None
    return {
        "objects": [(o.id, o.type, o.users) for o in f.objects],
        "ids": len(f.objects),
        "ioas": ioases,
        "attached": attached,
        "pins": f.user.pins,  # type: ignore[attr-defined]
        "fds": f.fds.fds(),
        "mmaps": sorted((off, r.owner.id, r.length) for off, r in f.mmaps.regions.items()),
        "devices": sorted(core.devices),
        "groups": [(g.id, [d.name for d in g.devices], g.owner_cnt) for g in core.groups],
        "viommus": f.selftest.viommus,
        "pages": f.selftest.pages.nr_allocated,
    }
