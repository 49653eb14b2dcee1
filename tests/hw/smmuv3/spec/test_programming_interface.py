"""IHI 0070 6 and 3.5 with the real translator: an SMMU programmed only through MMIO and
memory, as a driver would -- stream table latched at SMMUEN, events of the translation
procedure in the Event queue, configuration invalidation through the command queue."""

from __future__ import annotations

from typing import Final

from iommusim.bits.arm.smmuv3_queues import (
    C_BAD_STREAMID,
    CMD_CFGI_STE,
    CMD_RESUME,
    CMD_STALL_TERM,
    CMD_SYNC,
    EVENTQ_ENTRY_BYTES,
    F_TRANSLATION,
)
from iommusim.bits.arm.smmuv3_regs import (
    CMDQ_BASE,
    CR0,
    CR2,
    EVENTQ_BASE,
    OFF,
    STRTAB_BASE_CFG,
)
from iommusim.bits.arm.smmuv3_structures import STE_CONFIG_ABORT
from iommusim.hw.smmuv3.smmu import Smmuv3
from iommusim.hw.smmuv3.transaction import Event, Request
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE
from testsupport.smmuv3_scene import Scene

DATA: Final = 0x8000_0000
CMDQ: Final = 0x1000_0000
EVENTQ: Final = 0x1001_0000
LOG2SIZE: Final = 8


def _smmu(scene: Scene) -> Smmuv3:
    """Program an SMMU over the scene's memory image as a driver's probe does (Linux
    arm_smmu_device_reset): queues, CR2, stream table, then the enables."""
    smmu = Smmuv3(scene.mem, scene.params)
    w = smmu.write_register
    w(OFF.CMDQ_BASE, 8, CMDQ_BASE.encode(addr=CMDQ >> 5, log2size=4))
    w(OFF.EVENTQ_BASE, 8, EVENTQ_BASE.encode(addr=EVENTQ >> 5, log2size=4))
    w(OFF.CR2, 4, CR2.encode(recinvsid=1))
    w(OFF.STRTAB_BASE, 8, scene.strtab)
    w(OFF.STRTAB_BASE_CFG, 4, STRTAB_BASE_CFG.encode(log2size=LOG2SIZE))
    w(OFF.CR0, 4, CR0.encode(cmdqen=1, eventqen=1))
    w(OFF.CR0, 4, CR0.encode(smmuen=1, cmdqen=1, eventqen=1))
    return smmu


def _events(scene: Scene, smmu: Smmuv3) -> list[Event]:
    out = []
    for i in range(smmu.read_register(OFF.EVENTQ_PROD, 4) & 0xF):
        out.append(Event.from_record(scene.mem.read(EVENTQ + i * EVENTQ_ENTRY_BYTES, 32)))
    return out


def _submit(scene: Scene, smmu: Smmuv3, *cmds: int) -> None:
    prod = smmu.read_register(OFF.CMDQ_PROD, 4)
    for c in cmds:
        scene.mem.write(CMDQ + (prod & 0xF) * 16, c.to_bytes(16, "little"))
        prod = (prod + 1) & 0x1F
    smmu.write_register(OFF.CMDQ_PROD, 4, prod)


def test_stage1_translation_through_mmio_programmed_smmu():
    """IHI 0070 3.3 with 6.3 SMMU_STRTAB_BASE: the stream table the registers name is the one
    walked once SMMUEN is 1."""
    s = Scene(log2size=LOG2SIZE)
    t = s.s1()
    t.map(0x4000, DATA, 0x1000, IOMMU_READ | IOMMU_WRITE)
    s.stream_s1(3, t)
    smmu = _smmu(s)
    out = smmu.translate(Request(3, 0x4010, is_write=True))
    assert out.ok
    assert out.pa == DATA + 0x10


def test_translation_faults_reach_the_event_queue():
    """IHI 0070 7.3: F_TRANSLATION for an unmapped address and C_BAD_STREAMID for a StreamID
    beyond STRTAB_BASE_CFG.LOG2SIZE (CR2.RECINVSID = 1) are written to the Event queue."""
    s = Scene(log2size=LOG2SIZE)
    s.stream_s1(3, s.s1())
    smmu = _smmu(s)
    assert not smmu.translate(Request(3, 0x9000)).ok
    assert not smmu.translate(Request(1 << LOG2SIZE, 0)).ok
    evs = _events(s, smmu)
    assert [e.type for e in evs] == [F_TRANSLATION, C_BAD_STREAMID]
    assert evs[0].inputaddr == 0x9000
    assert evs[1].streamid == 1 << LOG2SIZE


def test_cfgi_ste_through_the_command_queue():
    """IHI 0070 4.3 CMD_CFGI_STE: a changed STE is used only after its invalidation (the
    cached copy serves until then)."""
    s = Scene(log2size=LOG2SIZE)
    t = s.s1()
    t.map(0x4000, DATA, 0x1000, IOMMU_READ)
    s.stream_s1(3, t)
    smmu = _smmu(s)
    assert smmu.translate(Request(3, 0x4000)).ok
    s.put_ste(3, config=STE_CONFIG_ABORT)
    assert smmu.translate(Request(3, 0x4000)).ok
    _submit(s, smmu, CMD_CFGI_STE.layout.encode(opcode=CMD_CFGI_STE.opcode, streamid=3))
    _submit(s, smmu, CMD_SYNC.layout.encode(opcode=CMD_SYNC.opcode))
    assert smmu.read_register(OFF.CMDQ_CONS, 4) == 2
    assert not smmu.translate(Request(3, 0x4000)).ok


def test_stage2_and_nested_translation_through_mmio_programmed_smmu():
    """IHI 0070 3.4.2 / 3.4.3 with the full preset: a stage 2 only stream and a nested
    stream, from an image written only through memory and an SMMU set up only through MMIO."""
    s = Scene(log2size=LOG2SIZE)
    rw = IOMMU_READ | IOMMU_WRITE
    s2 = s.s2(4, 40)
    s2.map(0x4000_0000, 0x4000_0000, 1 << 28, rw)  # the CD and stage 1 tables: IPA = PA
    s2.map(0x1000_0000, DATA, 0x10_0000, rw)
    s.stream_s2(4, s2)
    s1 = s.s1(16, 48)
    s1.map(0x7000_0000, 0x1000_4000, 0x4000, rw)
    s.stream_nested(5, s1, s2, s.cd_table({0: s.cd_image(s1)}))
    smmu = _smmu(s)
    out = smmu.translate(Request(4, 0x1000_0040, is_write=True))
    assert (out.outcome, out.pa) == ("ok", DATA + 0x40)
    out = smmu.translate(Request(5, 0x7000_0088))
    assert (out.outcome, out.pa) == ("ok", DATA + 0x4088)
    assert _events(s, smmu) == []


def test_stalled_transaction_resumed_by_cmd_resume():
    """IHI 0070 3.12.2 with 4.6.1 CMD_RESUME: the stall event is in the queue with its STAG;
    after software maps the page, CMD_RESUME (Action = retry) completes the transaction."""
    s = Scene(log2size=LOG2SIZE)
    t = s.s1()
    s.stream_s1(3, t, s=1)
    smmu = _smmu(s)
    r = smmu.translate(Request(3, 0x4010))
    assert r.outcome == "stalled"
    (ev,) = _events(s, smmu)
    assert ev.stall and ev.stag == r.stag
    assert [stag for _, stag, _ in smmu.translator.stalled()] == [r.stag]
    t.map(0x4000, DATA, 0x1000, IOMMU_READ)
    resume = CMD_RESUME.layout.encode(opcode=CMD_RESUME.opcode, streamid=3, stag=ev.stag, ac=1)
    _submit(s, smmu, resume)
    assert smmu.translator.stalled() == []
    ((sid, stag, done),) = smmu.completions
    assert (sid, stag, done.outcome, done.pa) == (3, r.stag, "ok", DATA + 0x10)
    # A second stall, ended by CMD_STALL_TERM: completed as an abort.
    r2 = smmu.translate(Request(3, 0x9000))
    _submit(s, smmu, CMD_STALL_TERM.layout.encode(opcode=CMD_STALL_TERM.opcode, streamid=3))
    assert smmu.completions[-1][:2] == (3, r2.stag)
    assert smmu.completions[-1][2].outcome == "abort"
