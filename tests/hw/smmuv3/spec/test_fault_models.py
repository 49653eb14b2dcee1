"""IHI 0070 3.12 "Fault models, recording and reporting": the terminate model (abort or
RAZ/WI by CD.A), the stall model (CD.S, STE.S2S; CMD_RESUME and CMD_STALL_TERM as the
translator's resume / stall_term), record suppression by CD.R and STE.S2R, and the walk
faults of 7.3 -- F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_PERMISSION, F_WALK_EABT -- with
hardware Access flag and dirty state updates (3.13 "Translation table entries and Access/Dirty
flags")."""

from __future__ import annotations

from typing import Final

from iommusim.bits.arm.smmuv3_queues import (
    F_ACCESS,
    F_ADDR_SIZE,
    F_PERMISSION,
    F_TRANSLATION,
    F_WALK_EABT,
)
from iommusim.bits.arm.vmsa import S1_DESC, S2_DESC
from iommusim.hw.pgtable import VmsaLeaf, VmsaWalker
from iommusim.hw.smmuv3.params import PRESETS
from iommusim.mem.faults import ACCESS, FaultInjectingMemory
from iommusim.sw.pgtable import ArmLpaePageTable
from iommusim.sw.prot import IOMMU_PRIV, IOMMU_READ, IOMMU_WRITE
from testsupport.smmuv3_scene import Scene

RW: Final = IOMMU_READ | IOMMU_WRITE
DATA: Final = 0x8000_0000
AF: Final = S1_DESC[4].mask("af")
AP2: Final = S1_DESC[4].mask("ap2")
DBM: Final = S1_DESC[4].mask("dbm")
S2AP_W: Final = S2_DESC[4].mask("s2ap_w")


def leaf_pa(t: ArmLpaePageTable, iova: int) -> int:
    """Where the leaf descriptor of ``iova`` is (a walk that changes nothing)."""
    leaf = VmsaWalker(t.pt, t.mem, 48, False, False, affd=True).walk(
        t.root_pa, iova, 0, True, False
    )
    assert isinstance(leaf, VmsaLeaf)
    return leaf.pa


def test_terminate_abort_or_raz_wi_by_cd_a() -> None:
    """3.12.1: a terminated stage 1 fault aborts when CD.A = 1 and is RAZ/WI when CD.A = 0
    (IDR0.TERM_MODEL = 0); recorded when CD.R = 1, suppressed when CD.R = 0."""
    s = Scene()
    t = s.s1()
    s.stream_s1(1, t, a=1)
    s.stream_s1(2, t, a=0, r=0)
    r = s.go(1, 0x5000)
    assert (r.outcome, r.recorded) == ("abort", True)
    assert r.event is not None and r.event.type == F_TRANSLATION and not r.event.stall
    r = s.go(2, 0x5000)
    assert (r.outcome, r.recorded) == ("raz_wi", False)


def test_term_model_1_always_aborts() -> None:
    """IDR0.TERM_MODEL = 1: RAZ/WI is not supported; CD.A = 0 behaves as 1."""
    s = Scene(params=PRESETS["qemu-like"])
    t = s.s1()
    s.stream_s1(1, t, a=0)
    assert s.go(1, 0x5000).outcome == "abort"


def test_stage2_fault_recording_follows_s2r() -> None:
    s = Scene()
    t = s.s2()
    s.stream_s2(1, t, s2r=0)
    r = s.go(1, 0x5000)
    assert (r.outcome, r.recorded) == ("abort", False) and r.event is not None


def test_stall_resume_retry_and_abort() -> None:
    """3.12.2: with CD.S = 1 a translation fault stalls: the event has STALL = 1 and a STAG,
    and is recorded even with CD.R = 0; CMD_RESUME retries (after software fixed the table)
    or aborts; a RESUME for no stalled transaction is ignored."""
    s = Scene()
    t = s.s1()
    s.stream_s1(1, t, s=1, r=0)
    r = s.go(1, 0x5008, is_write=True)
    assert r.outcome == "stalled" and r.recorded and r.event is not None
    assert r.event.stall and r.event.stag == r.stag
    assert [(sid, stag) for sid, stag, _ in s.t.stalled()] == [(1, r.stag)]
    t.map(0x5000, DATA, 0x1000, RW)
    done = s.t.resume(1, r.stag, retry=True)
    assert done is not None and (done.outcome, done.pa) == ("ok", DATA + 8)
    assert s.t.stalled() == []
    assert s.t.resume(1, r.stag, retry=True) is None
    r2 = s.go(1, 0x9000)
    aborted = s.t.resume(1, r2.stag, retry=False)
    assert aborted is not None and aborted.outcome == "abort"


def test_stall_term_drops_every_stall_of_the_stream() -> None:
    s = Scene()
    t = s.s1()
    s.stream_s1(1, t, s=1)
    s.stream_s1(2, t, s=1, asid=2)
    for a in (0x1000, 0x2000):
        assert s.go(1, a).outcome == "stalled"
    assert s.go(2, 0x3000).outcome == "stalled"
    assert len(s.t.stall_term(1)) == 2
    assert [sid for sid, _, _ in s.t.stalled()] == [2]


def test_stage2_stall_by_s2s() -> None:
    s = Scene()
    t = s.s2()
    s.stream_s2(1, t, s2s=1)
    r = s.go(1, 0x5000)
    assert r.outcome == "stalled" and r.event is not None and r.event.s2 and r.event.stall


def test_stall_requires_a_stall_model() -> None:
    """IDR0.STALL_MODEL = 0b01 (terminate only): CD.S = 1 is ILLEGAL (C_BAD_CD)."""
    s = Scene(params=PRESETS["qemu-like"])
    t = s.s1()
    s.stream_s1(1, t, s=1)
    ev = s.go(1, 0x5000).event
    assert ev is not None and ev.name == "C_BAD_CD"


def test_permission_faults_stage1() -> None:
    """DDI 0487 D8 "Data access permissions": a write to a read-only page and an
    unprivileged access to a privileged page are F_PERMISSION; a privileged read succeeds."""
    s = Scene()
    t = s.s1()
    t.map(0x1000, DATA, 0x1000, IOMMU_READ)
    t.map(0x2000, DATA + 0x1000, 0x1000, RW | IOMMU_PRIV)
    s.stream_s1(1, t)
    ev = s.go(1, 0x1000, is_write=True).event
    assert ev is not None and ev.type == F_PERMISSION and not ev.rnw
    ev = s.go(1, 0x2000).event
    assert ev is not None and ev.type == F_PERMISSION and not ev.pnu
    assert s.go(1, 0x2000, priv=True).pa == DATA + 0x1000


def test_permission_fault_stage2_write() -> None:
    s = Scene()
    t = s.s2()
    t.map(0x1000, DATA, 0x1000, IOMMU_READ)
    s.stream_s2(1, t)
    assert s.go(1, 0x1000).pa == DATA
    ev = s.go(1, 0x1000, is_write=True).event
    assert ev is not None and (ev.type, ev.s2) == (F_PERMISSION, True)


def test_access_flag_fault_hardware_update_and_affd() -> None:
    """DDI 0487 D8 "The Access flag": AF = 0 is F_ACCESS without CD.HA; with HA the SMMU
    sets AF (IDR0.HTTU >= 1); with CD.AFFD = 1 it is used as if set, nothing written."""
    s = Scene()
    t = s.s1()
    t.map(0x1000, DATA, 0x1000, RW)
    pte_pa = leaf_pa(t, 0x1000)
    s.mem.write64(pte_pa, s.mem.read64(pte_pa) & ~AF)
    s.stream_s1(1, t)
    ev = s.go(1, 0x1000).event
    assert ev is not None and ev.type == F_ACCESS
    s.stream_s1(2, t, asid=2, affd=1)
    assert s.go(2, 0x1000).pa == DATA and not s.mem.read64(pte_pa) & AF
    s.stream_s1(3, t, asid=3, ha=1)
    assert s.go(3, 0x1000).pa == DATA and s.mem.read64(pte_pa) & AF


def test_httu_is_ignored_without_idr0_support() -> None:
    """IDR0.HTTU = 0: CD.HA is RES0, so AF = 0 still faults."""
    s = Scene(params=PRESETS["qemu-like"])
    t = s.s1()
    t.map(0x1000, DATA, 0x1000, RW)
    pte_pa = leaf_pa(t, 0x1000)
    s.mem.write64(pte_pa, s.mem.read64(pte_pa) & ~AF)
    s.stream_s1(1, t, ha=1)
    ev = s.go(1, 0x1000).event
    assert ev is not None and ev.type == F_ACCESS


def test_dirty_state_by_dbm() -> None:
    """D8 "Hardware management of dirty state": a writable-clean entry (DBM = 1, AP[2] = 1)
    faults a write without HD; with HA + HD the SMMU clears AP[2] and the write goes on; the
    cached read translation never grants the write before that."""
    s = Scene()
    t = s.s1()
    t.map(0x1000, DATA, 0x1000, RW)
    pte_pa = leaf_pa(t, 0x1000)
    clean = s.mem.read64(pte_pa) | DBM | AP2
    s.mem.write64(pte_pa, clean)
    s.stream_s1(1, t)
    ev = s.go(1, 0x1000, is_write=True).event
    assert ev is not None and ev.type == F_PERMISSION
    s.stream_s1(2, t, asid=2, ha=1, hd=1)
    assert s.go(2, 0x1000).pa == DATA  # a read caches a translation without write
    assert s.mem.read64(pte_pa) == clean
    assert s.go(2, 0x1000, is_write=True).pa == DATA
    assert not s.mem.read64(pte_pa) & AP2


def test_stage2_dirty_state() -> None:
    s = Scene()
    t = s.s2()
    t.map(0x1000, DATA, 0x1000, RW)
    pte_pa = leaf_pa(t, 0x1000)
    s.mem.write64(pte_pa, (s.mem.read64(pte_pa) | DBM) & ~S2AP_W)
    s.stream_s2(1, t, s2ha=1, s2hd=1)
    assert s.go(1, 0x1000, is_write=True).pa == DATA
    assert s.mem.read64(pte_pa) & S2AP_W


def test_address_size_fault_on_a_table_base() -> None:
    """D8 "Address size fault": TTB0 above the configured IPS is F_ADDR_SIZE."""
    s = Scene()
    t = s.s1()
    s.stream_s1(1, t, ips=0b000, ttb0=(1 << 33) >> 4)  # 32-bit IPS, a 34-bit table base
    ev = s.go(1, 0x1000).event
    assert ev is not None and ev.type == F_ADDR_SIZE


def test_walk_external_abort() -> None:
    """7.3.10 F_WALK_EABT: an abort on a descriptor read, with its FetchAddr; always
    recorded and never stalled."""
    s = Scene()
    t = s.s1()
    t.map(0x1000, DATA, 0x1000, RW)
    mem = FaultInjectingMemory(s.mem)
    s.t.mem = mem
    s.t._walkers.clear()
    s.stream_s1(1, t, r=0, s=1)
    mem.inject(t.root_pa, 4096, ACCESS)
    r = s.go(1, 0x1000)
    assert (r.outcome, r.recorded) == ("abort", True)
    assert r.event is not None and r.event.type == F_WALK_EABT
    assert r.event.fetchaddr == t.root_pa and not r.event.stall


def test_big_endian_tables() -> None:
    """CD.ENDI / STE.S2ENDI = 1: the descriptors are big-endian (IDR0.TTENDIAN = mixed)."""
    s = Scene()
    s1 = s.s1(4, 48, be=True)
    s2 = s.s2(4, 40, be=True)
    s2.map(0x4000_0000, 0x4000_0000, 1 << 28, RW)
    s2.map(0x1000_0000, DATA, 0x1000, RW)
    s1.map(0x2000, 0x1000_0000, 0x1000, RW)
    ptr = s.cd_table({0: s.cd_image(s1, endi=1)})
    s.stream_nested(1, s1, s2, ptr, s2endi=1)
    assert s.go(1, 0x2008).pa == DATA + 8


def test_little_endian_only_rejects_endi() -> None:
    s = Scene(params=PRESETS["qemu-like"])
    t = s.s1(be=True)
    s.stream_s1(1, t, endi=1)
    ev = s.go(1, 0x1000).event
    assert ev is not None and ev.name == "C_BAD_CD"
