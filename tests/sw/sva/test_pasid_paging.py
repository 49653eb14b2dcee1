"""Per-PASID attach of a paging domain with its own I/O page-fault handler (the way iommufd's
fault queue lets a user resolve faults): the handler maps the page and answers the group."""

from __future__ import annotations

import errno

import pytest
from tests.sw.sva.conftest import SvaMachine

from iommusim.errors import ApiError, InvalidArgument
from iommusim.sw.iopf import PERM_WRITE, RESP_SUCCESS, IopfGroup
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

PAGE = 4096


def test_user_fault_handler_on_a_pasid_paging_domain(m: SvaMachine) -> None:
    dev, ep = m.dev("acc"), m.ep("acc")
    dom = m.core.domain_alloc_paging(dev)
    seen: list[IopfGroup] = []

    def handler(group: IopfGroup) -> None:
        seen.append(group)
        for f in group.faults:
            m.core.map(dom, f.addr, m.kernel.pages.alloc_page(), PAGE, IOMMU_READ | IOMMU_WRITE)
        m.core.iopf.respond(group, RESP_SUCCESS)

    dom.iopf_handler = handler
    m.core.attach_device_pasid(dom, dev, 5)
    assert m.ep("acc").pri_enabled  # a domain with a fault handler turns PRI on
    assert ep.dma_write(0x40_0000, b"paged in", pasid=5).ok
    (g,) = seen
    assert g.faults[0].addr == 0x40_0000 and g.faults[0].perm & PERM_WRITE
    assert ep.dma_read(0x40_0000, 8, pasid=5).data == b"paged in"
    # Answering the same group again: EINVAL, and nothing reaches the device.
    answered = m.driver.stats["prgr"]
    with pytest.raises(InvalidArgument) as e:
        m.core.iopf.respond(g, RESP_SUCCESS)
    assert e.value.errno == errno.EINVAL
    assert m.driver.stats["prgr"] == answered and ep.stats.unexpected_prgr == 0
    # The RID's DMA domain is untouched by the PASID's faults.
    assert not ep.dma_read(0x40_0000, 8).ok
    m.core.detach_device_pasid(dom, dev, 5)
    assert not ep.dma_read(0x40_0000, 8, pasid=5).ok
    m.core.domain_free(dom)


def test_pasid_attach_errors(m: SvaMachine) -> None:
    dev = m.dev("acc")
    dom = m.core.domain_alloc_paging(dev)
    for pasid in (0, 1 << 20):
        with pytest.raises(InvalidArgument):
            m.core.attach_device_pasid(dom, dev, pasid)
    with pytest.raises(InvalidArgument, match="beyond"):
        m.core.attach_device_pasid(m.core.domain_alloc_paging(m.dev("small")), m.dev("small"), 4)
    with pytest.raises(ApiError) as e:
        m.core.attach_device_pasid(m.driver.identity_domain, dev, 3)
    assert e.value.errno == errno.EOPNOTSUPP
    m.core.attach_device_pasid(dom, dev, 3)
    with pytest.raises(ApiError) as e:
        m.core.domain_free(dom)  # still attached at PASID 3
    assert e.value.errno == errno.EBUSY
    m.core.detach_device_pasid(dom, dev, 3)
    m.core.detach_device_pasid(dom, dev, 3)  # detaching what is not attached: nothing
    m.core.domain_free(dom)
