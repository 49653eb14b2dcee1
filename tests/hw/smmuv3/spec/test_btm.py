"""IHI 0070 3.17 "Broadcast TLB maintenance": the CPU side's TLBIs reach the SMMU's TLB only
when IDR0.BTM is 1 and CR2.PTM is 0."""

from __future__ import annotations

from iommusim.bits.arm.smmuv3_regs import CR2, OFF
from iommusim.hw.smmuv3.maintenance import Tlbi


def test_broadcast_tlbi_forwarded_when_participating(make_bench):
    """IHI 0070 3.17 / 6.3 SMMU_CR2.PTM = 0: the broadcast reaches the translator, marked."""
    b = make_bench(enable=False)
    assert b.smmu.broadcast_tlbi(Tlbi("nh_asid", vmid=1, asid=2))
    assert b.calls("tlbi") == [("tlbi", Tlbi("nh_asid", vmid=1, asid=2, broadcast=True))]


def test_private_tlb_maintenance_ignores_broadcasts(make_bench):
    """IHI 0070 6.3 SMMU_CR2.PTM = 1: broadcast TLB maintenance is ignored."""
    b = make_bench(enable=False)
    b.write(OFF.CR2, 4, CR2.encode(ptm=1))
    assert not b.smmu.broadcast_tlbi(Tlbi("nsnh_all"))
    assert b.calls("tlbi") == []


def test_no_btm_no_broadcasts(make_bench):
    """IHI 0070 6.3 SMMU_IDR0.BTM = 0: the SMMU never takes part."""
    b = make_bench("qemu-like")
    b.write(OFF.CR2, 4, 0)
    assert not b.smmu.broadcast_tlbi(Tlbi("nsnh_all"))
    assert b.calls("tlbi") == []
