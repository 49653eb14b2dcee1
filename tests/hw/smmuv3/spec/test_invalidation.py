"""IHI 0070 4.3 "Configuration structures and configuration invalidation", 4.4 "TLB
invalidation" (every scope, range invalidation by TG/NUM/SCALE) and 3.17 broadcast TLB
maintenance: a cached translation stays until the right invalidation removes it, and no
other."""

from __future__ import annotations

from typing import Final

import pytest

from iommusim.hw.pgtable import VmsaLeaf, VmsaWalker
from iommusim.hw.smmuv3.maintenance import Tlbi
from iommusim.sw.pgtable import IotlbGather
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE
from testsupport.smmuv3_scene import Scene

RW: Final = IOMMU_READ | IOMMU_WRITE
DATA: Final = 0x8000_0000
NEW: Final = 0x9000_0000


def remapped_s1(asid: int = 1, vmid: int = 0) -> tuple[Scene, int]:
    """A stage 1 stream whose page 0x1000 was cached, then remapped in memory (no TLBI)."""
    s = Scene()
    t = s.s1()
    t.map(0x1000, DATA, 0x1000, RW)
    ptr = s.cd_table({0: s.cd_image(t, asid)})
    s.put_ste(1, config=0b101, s1contextptr=ptr >> 6, s2vmid=vmid)
    assert s.go(1, 0x1000).pa == DATA
    t.unmap(0x1000, 0x1000, IotlbGather())
    t.map(0x1000, NEW, 0x1000, RW)
    return s, 1


@pytest.mark.parametrize(
    ("tlbi", "gone"),
    [
        (Tlbi("nh_va", vmid=0, asid=1, addr=0x1000), True),
        (Tlbi("nh_va", vmid=0, asid=2, addr=0x1000), False),
        (Tlbi("nh_va", vmid=0, asid=1, addr=0x2000), False),
        (Tlbi("nh_vaa", vmid=0, addr=0x1000), True),
        (Tlbi("nh_vaa", vmid=3, addr=0x1000), False),
        (Tlbi("nh_asid", vmid=0, asid=1), True),
        (Tlbi("nh_asid", vmid=0, asid=7), False),
        (Tlbi("nh_all", vmid=0), True),
        (Tlbi("nh_all", vmid=1), False),
        (Tlbi("s12_vmall", vmid=0), True),
        (Tlbi("nsnh_all"), True),
        (Tlbi("el2_all"), False),
        (Tlbi("s2_ipa", vmid=0, addr=0x1000), False),
        # range: (NUM + 1) * 2^SCALE 4KB granules -- 2 from 0 cover 0x1000, by NUM or SCALE ...
        (Tlbi("nh_va", vmid=0, asid=1, addr=0, tg=1, num=1, scale=0), True),
        (Tlbi("nh_va", vmid=0, asid=1, addr=0, tg=1, num=0, scale=1), True),
        # ... one from 0 does not, nor 2^31 from 0x2000.
        (Tlbi("nh_va", vmid=0, asid=1, addr=0, tg=1, num=0, scale=0), False),
        (Tlbi("nh_va", vmid=0, asid=1, addr=0x2000, tg=1, num=0, scale=31), False),
    ],
)
def test_tlbi_scopes(tlbi: Tlbi, gone: bool) -> None:
    """4.4: each TLBI removes the entries its scope names (by VMID, ASID, address range)."""
    s, sid = remapped_s1()
    s.t.tlbi(tlbi)
    assert s.go(sid, 0x1000).pa == (NEW if gone else DATA)


def test_tlbi_s2_ipa_and_s12_vmall_for_stage2() -> None:
    s = Scene()
    t = s.s2()
    t.map(0x1000, DATA, 0x1000, RW)
    s.stream_s2(1, t, vmid=5)
    assert s.go(1, 0x1000).pa == DATA
    t.unmap(0x1000, 0x1000, IotlbGather())
    t.map(0x1000, NEW, 0x1000, RW)
    s.t.tlbi(Tlbi("nh_all", vmid=5))  # stage 1 scope: stage 2 entries stay
    assert s.go(1, 0x1000).pa == DATA
    s.t.tlbi(Tlbi("s2_ipa", vmid=5, addr=0x1000))
    assert s.go(1, 0x1000).pa == NEW


def test_global_entries_survive_tlbi_by_asid() -> None:
    """DDI 0487 D8: an entry with nG = 0 matches every ASID, and TLBI by ASID leaves it."""
    s = Scene()
    t = s.s1()
    t.map(0x1000, DATA, 0x1000, RW)
    ng = t.pt.pte.mask("ng")
    ptr = s.cd_table({0: s.cd_image(t, 4)})
    s.put_ste(1, config=0b101, s1contextptr=ptr >> 6)
    w = VmsaWalker(t.pt, s.mem, 48, False, False)
    r = w.walk(t.root_pa, 0x1000, 0, True, False)
    assert isinstance(r, VmsaLeaf)
    s.mem.write64(r.pa, r.pte & ~ng)
    assert s.go(1, 0x1000).pa == DATA
    s.mem.write64(r.pa, 0)
    s.t.tlbi(Tlbi("nh_asid", vmid=0, asid=4))
    assert s.go(1, 0x1000).pa == DATA
    s.t.tlbi(Tlbi("nh_va", vmid=0, asid=9, addr=0x1000))  # by VA: any ASID's global entry
    assert s.go(1, 0x1000).outcome == "abort"


def test_broadcast_tlbi_needs_btm_and_not_ptm() -> None:
    """3.17: a broadcast TLBI reaches the TLB only when IDR0.BTM = 1 and SMMU_CR2.PTM = 0."""
    s, sid = remapped_s1()
    s.t.ptm = True
    s.t.tlbi(Tlbi("nh_asid", vmid=0, asid=1, broadcast=True))
    assert s.go(sid, 0x1000).pa == DATA
    s.t.ptm = False
    s.t.tlbi(Tlbi("nh_asid", vmid=0, asid=1, broadcast=True))
    assert s.go(sid, 0x1000).pa == NEW


def test_configuration_invalidation() -> None:
    """4.3: a changed STE or CD is used only after CMD_CFGI_STE / CFGI_CD (cached until then);
    CFGI_STE_RANGE with Range = 31 (CFGI_ALL) drops every STE."""
    s = Scene()
    ta, tb = s.s1(), s.s1()
    ta.map(0x1000, DATA, 0x1000, RW)
    tb.map(0x1000, NEW, 0x1000, RW)
    ptr = s.cd_table({0: s.cd_image(ta, 1)})
    s.put_ste(1, config=0b101, s1contextptr=ptr >> 6)
    assert s.go(1, 0x1000).pa == DATA
    s.write(ptr, s.cd_image(tb, 2), 64)
    assert s.go(1, 0x1000).pa == DATA  # the old CD is still cached
    s.t.cfgi_cd(1, 0, True)
    assert s.go(1, 0x1000).pa == NEW
    s.stream_bypass(1)
    assert s.go(1, 0x1000).pa == NEW
    s.t.cfgi_ste_range(0, 31)
    assert s.go(1, 0x1000).outcome == "bypass"
    s.put_ste(1, config=0b000)
    s.t.cfgi_ste_range(0, 0)  # StreamIDs 0 and 1
    assert s.go(1, 0x1000).outcome == "abort"


def test_ng_changed_without_invalidation_is_a_tlb_conflict() -> None:
    """IHI 0070 7.3 F_TLB_CONFLICT: a global entry is cached read-only; software makes the
    page writable and process-specific (nG = 1) without a TLBI; the write's walk finds a
    second entry for the page: a conflict, aborted and recorded."""
    s = Scene()
    t = s.s1()
    t.map(0x1000, DATA, 0x1000, IOMMU_READ)
    ptr = s.cd_table({0: s.cd_image(t, 4)})
    s.put_ste(1, config=0b101, s1contextptr=ptr >> 6)
    ng = t.pt.pte.mask("ng")
    r = VmsaWalker(t.pt, s.mem, 48, False, False).walk(t.root_pa, 0x1000, 0, True, False)
    assert isinstance(r, VmsaLeaf)
    s.mem.write64(r.pa, r.pte & ~ng)
    assert s.go(1, 0x1000).pa == DATA  # cached as a global entry
    ap2 = t.pt.pte.mask("ap2")
    s.mem.write64(r.pa, (r.pte | ng) & ~ap2)  # writable, nG = 1, no TLBI
    out = s.go(1, 0x1000, is_write=True)
    assert out.outcome == "abort" and out.event is not None and out.event.name == "F_TLB_CONFLICT"
