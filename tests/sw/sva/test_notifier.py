"""mm notifiers: the process's page-table changes reach the IOTLB and the devices' ATCs before
munmap/mprotect return (riscv-iommu: "Guidelines for invalidations": IOATC first, then the
DevATC with ATS.INVAL, then IOFENCE.C)."""

from __future__ import annotations

from tests.sw.sva.conftest import SvaMachine

from iommusim.bits.pcie import inval_range
from iommusim.sw.drivers.riscv.commands import Command
from iommusim.sw.mm.mm import PROT_READ, PROT_WRITE

PAGE = 4096
RW = PROT_READ | PROT_WRITE


def record(m: SvaMachine) -> list[Command]:
    """Every command written to the command queue from now on (fences included)."""
    sent: list[Command] = []
    cmdq = m.driver.cmdq
    assert cmdq is not None
    orig = cmdq.send

    def send(cmd: Command) -> int:
        sent.append(cmd)
        return orig(cmd)

    cmdq.send = send  # type: ignore[method-assign]
    return sent


def decode(cmd: Command) -> tuple[str, dict[str, int]]:
    w0, w1 = cmd
    op = w0 & 0x7F
    if op == 1:
        return "iotinval", {
            "pscid": w0 >> 12 & 0xFFFFF,
            "pscv": w0 >> 32 & 1,
            "av": w0 >> 10 & 1,
            "addr": (w1 >> 10) << 12,
        }
    if op == 2:
        return "iofence", {}
    if op == 4:
        return ("ats_inval" if not w0 >> 7 & 7 else "prgr"), {
            "rid": w0 >> 40 & 0xFFFF,
            "pv": w0 >> 32 & 1,
            "pid": w0 >> 12 & 0xFFFFF,
            "payload": w1,
        }
    return f"op{op}", {}


def test_munmap_invalidates_iotlb_then_atcs_then_fences(m: SvaMachine) -> None:
    mm = m.kernel.new_process("p")
    va = mm.mmap(8 * PAGE, RW)
    h = m.sva.bind(m.dev("acc"), mm)
    h2 = m.sva.bind(m.dev("acc2"), mm)
    for ep in (m.ep("acc"), m.ep("acc2")):
        assert ep.dma_write(va, bytes(8 * PAGE), pasid=h.pasid).ok
    assert len(m.ep("acc").atc) == 8
    sent = record(m)
    mm.munmap(va + 2 * PAGE, 2 * PAGE)
    cmds = [decode(c) for c in sent]
    kinds = [k for k, _ in cmds]
    pscid = h.domain.pscid  # type: ignore[attr-defined]
    assert kinds == ["iotinval", "iotinval", "ats_inval", "ats_inval", "iofence"]
    assert [(f["pscid"], f["pscv"], f["av"], f["addr"]) for _, f in cmds[:2]] == [
        (pscid, 1, 1, va + 2 * PAGE),
        (pscid, 1, 1, va + 3 * PAGE),
    ]
    rids = []
    for _, f in cmds[2:4]:
        assert (f["pv"], f["pid"]) == (1, h.pasid)
        assert inval_range(f["payload"]) == (va + 2 * PAGE, 2 * PAGE)
        rids.append(f["rid"])
    assert rids == [0x10, 0x11]
    # Both ATCs dropped exactly the two pages.
    assert len(m.ep("acc").atc) == len(m.ep("acc2").atc) == 6
    assert h2.pasid == h.pasid


def test_mprotect_downgrade_invalidates_upgrade_does_not(m: SvaMachine) -> None:
    mm = m.kernel.new_process("p")
    va = mm.mmap(4 * PAGE, RW)
    h = m.sva.bind(m.dev("acc"), mm)
    ep = m.ep("acc")
    assert ep.dma_write(va, bytes(4 * PAGE), pasid=h.pasid).ok
    sent = record(m)
    mm.mprotect(va, PAGE, PROT_READ)
    assert [decode(c)[0] for c in sent] == ["iotinval", "ats_inval", "iofence"]
    assert not ep.dma_write(va, b"x", pasid=h.pasid).ok
    assert ep.dma_read(va, 1, pasid=h.pasid).ok
    sent.clear()
    mm.mprotect(va, PAGE, RW)
    assert sent == []  # gaining a permission needs no invalidation
    assert ep.dma_write(va, b"x", pasid=h.pasid).ok  # a page request re-grants write


def test_untouched_ranges_and_unbound_processes_cost_nothing(m: SvaMachine) -> None:
    mm = m.kernel.new_process("p")
    va = mm.mmap(4 * PAGE, RW)
    sent = record(m)
    mm.munmap(va, PAGE)  # no device bound
    h = m.sva.bind(m.dev("acc"), mm)
    sent.clear()
    mm.munmap(va + PAGE, PAGE)  # bound, but nothing was ever present
    assert sent == []
    m.sva.unbind(h)
