"""A bench for the SMMUv3 front-end spec tests: the SMMU over a fake translator.

:class:`FakeTranslator` follows the translator API of ``notes/smmuv3-contract.md`` and records
every call, so the register file and queues are tested apart from the table walks.
:class:`Bench` plays system software: it programs the queues through MMIO only, writes
commands into memory with the layouts of :mod:`iommusim.bits.arm.smmuv3_queues` and reads the
event and PRI queues back. Fixtures: ``bench`` (``PRESETS['full']``, every queue enabled) and
``make_bench`` for other parameters or queue sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import pytest

from iommusim.bits.arm.smmuv3_queues import (
    CMDQ_ENTRY_BYTES,
    EVENTQ_ENTRY_BYTES,
    PRIQ_ENTRY,
    PRIQ_ENTRY_BYTES,
    Command,
)
from iommusim.bits.arm.smmuv3_regs import (
    CMDQ_BASE,
    CR0,
    EVENTQ_BASE,
    IRQ_CTRL,
    OFF,
    PRIQ_BASE,
)
from iommusim.hw.smmuv3.maintenance import Tlbi, TranslationCounts
from iommusim.hw.smmuv3.params import PRESETS, Smmuv3Params
from iommusim.hw.smmuv3.smmu import Smmuv3
from iommusim.hw.smmuv3.transaction import Event, Request, Response
from iommusim.mem import FaultInjectingMemory, SparseMemory

CMDQ_PA: Final = 0x10_0000
EVENTQ_PA: Final = 0x20_0000
PRIQ_PA: Final = 0x30_0000
STRTAB_PA: Final = 0x40_0000
MSI_PA: Final = 0x50_0000


class FakeTranslator:
    """The translator API of the contract; ``responses[sid]`` answers translate()."""

    def __init__(self) -> None:
        self.enabled = False
        self.gbpa_abort = False
        self.record_bad_sid = False
        self.ptm = False
        self.e2h = False
        self.counts = TranslationCounts()
        self.calls: list[tuple[Any, ...]] = []
        self.responses: dict[int, Response] = {}
        self.pending: dict[tuple[int, int], Request] = {}

    def set_stream_table(self, base: int, log2size: int, fmt: int, split: int) -> None:
        self.calls.append(("set_stream_table", base, log2size, fmt, split))

    def translate(self, req: Request) -> Response:
        resp = self.responses.get(req.sid, Response("ok", pa=req.addr))
        if resp.outcome == "stalled":
            self.pending[(req.sid, resp.stag)] = req
        return resp

    def resume(self, sid: int, stag: int, retry: bool) -> Response | None:
        self.calls.append(("resume", sid, stag, retry))
        req = self.pending.pop((sid, stag), None)
        if req is None:
            return None
        return Response("ok", pa=req.addr) if retry else Response("abort")

    def stall_term(self, sid: int) -> list[int]:
        self.calls.append(("stall_term", sid))
        gone = [k for k in self.pending if k[0] == sid]
        for k in gone:
            del self.pending[k]
        return [stag for _, stag in gone]

    def stalled(self) -> list[tuple[int, int, Request]]:
        return [(s, t, r) for (s, t), r in self.pending.items()]

    def invalidate_all(self) -> None:
        self.calls.append(("invalidate_all",))

    def prefetch_config(self, sid: int, ssv: bool, ssid: int) -> None:
        self.calls.append(("prefetch_config", sid, ssv, ssid))

    def cfgi_ste(self, sid: int, leaf: bool) -> None:
        self.calls.append(("cfgi_ste", sid, leaf))

    def cfgi_ste_range(self, sid: int, range_lg2: int) -> None:
        self.calls.append(("cfgi_ste_range", sid, range_lg2))

    def cfgi_cd(self, sid: int, ssid: int, leaf: bool) -> None:
        self.calls.append(("cfgi_cd", sid, ssid, leaf))

    def cfgi_cd_all(self, sid: int) -> None:
        self.calls.append(("cfgi_cd_all", sid))

    def tlbi(self, t: Tlbi) -> None:
        self.calls.append(("tlbi", t))


class FakePort:
    """The downstream PCIe side; ``atc_ok`` answers ATC invalidations."""

    def __init__(self) -> None:
        self.atc_ok = True
        self.atc_status = "done"
        self.itags: list[int] = []
        self.atc: list[tuple[int, bool, int, int, int, bool]] = []
        self.pri: list[tuple[int, bool, int, int, int]] = []

    def atc_invalidate(
        self, sid: int, ssv: bool, ssid: int, addr: int, size_lg2: int, global_: bool, itag: int
    ) -> str:
        self.atc.append((sid, ssv, ssid, addr, size_lg2, global_))
        self.itags.append(itag)
        return self.atc_status if self.atc_ok else "failed"

    def pri_response(self, sid: int, ssv: bool, ssid: int, prgi: int, resp: int) -> None:
        self.pri.append((sid, ssv, ssid, prgi, resp))


class Bench:
    """System software around one :class:`Smmuv3` (MMIO and memory only)."""

    CMDQ_PA: Final = CMDQ_PA
    EVENTQ_PA: Final = EVENTQ_PA
    PRIQ_PA: Final = PRIQ_PA
    STRTAB_PA: Final = STRTAB_PA
    MSI_PA: Final = MSI_PA

    def __init__(self, params: Smmuv3Params, cmdq_lg2: int, eventq_lg2: int, priq_lg2: int):
        self.params = params
        self.ram = SparseMemory()
        self.mem = FaultInjectingMemory(self.ram)
        self.t = FakeTranslator()
        self.port = FakePort()
        self.smmu = Smmuv3(self.mem, params, translator=self.t, port=self.port)
        self.cmdq_lg2, self.eventq_lg2, self.priq_lg2 = cmdq_lg2, eventq_lg2, priq_lg2
        self.write(OFF.CMDQ_BASE, 8, CMDQ_BASE.encode(addr=CMDQ_PA >> 5, log2size=cmdq_lg2))
        self.write(OFF.EVENTQ_BASE, 8, EVENTQ_BASE.encode(addr=EVENTQ_PA >> 5, log2size=eventq_lg2))
        if params.idr0_field("pri"):
            self.write(OFF.PRIQ_BASE, 8, PRIQ_BASE.encode(addr=PRIQ_PA >> 5, log2size=priq_lg2))

    # -- MMIO ---------------------------------------------------------------------------------

    def read(self, offset: int, size: int = 4) -> int:
        return self.smmu.read_register(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.smmu.write_register(offset, size, value)

    def enable(self, **fields: int) -> None:
        """Write CR0 with the given enables (names of :data:`CR0` fields)."""
        self.write(OFF.CR0, 4, CR0.encode(**fields))

    def irq_enable(self, **fields: int) -> None:
        self.write(OFF.IRQ_CTRL, 4, IRQ_CTRL.encode(**fields))

    # -- command queue ------------------------------------------------------------------------

    @staticmethod
    def cmd(command: Command, **fields: int) -> int:
        return command.layout.encode(opcode=command.opcode, **fields)

    def submit(self, *cmds: int) -> None:
        """Write ``cmds`` at CMDQ_PROD and advance it (one doorbell)."""
        prod = self.read(OFF.CMDQ_PROD)
        size = 1 << self.cmdq_lg2
        for c in cmds:
            pa = CMDQ_PA + (prod & (size - 1)) * CMDQ_ENTRY_BYTES
            self.ram.write(pa, c.to_bytes(CMDQ_ENTRY_BYTES, "little"))
            prod = (prod + 1) & (2 * size - 1)
        self.write(OFF.CMDQ_PROD, 4, prod)

    def cmdq_cons(self) -> int:
        return self.read(OFF.CMDQ_CONS)

    # -- output queues ------------------------------------------------------------------------

    def events(self) -> list[Event]:
        """Consume every record in the Event queue."""
        out: list[Event] = []
        size = 1 << self.eventq_lg2
        while True:
            prod, cons = self.read(OFF.EVENTQ_PROD), self.read(OFF.EVENTQ_CONS)
            if not (prod ^ cons) & (2 * size - 1):
                return out
            pa = EVENTQ_PA + (cons & (size - 1)) * EVENTQ_ENTRY_BYTES
            out.append(Event.from_record(self.ram.read(pa, EVENTQ_ENTRY_BYTES)))
            nxt = (cons & ~(2 * size - 1)) | ((cons + 1) & (2 * size - 1))
            self.write(OFF.EVENTQ_CONS, 4, nxt)

    def page_requests(self) -> list[dict[str, int]]:
        """Consume every entry of the PRI queue, decoded."""
        out: list[dict[str, int]] = []
        size = 1 << self.priq_lg2
        while True:
            prod, cons = self.read(OFF.PRIQ_PROD), self.read(OFF.PRIQ_CONS)
            if not (prod ^ cons) & (2 * size - 1):
                return out
            pa = PRIQ_PA + (cons & (size - 1)) * PRIQ_ENTRY_BYTES
            raw = int.from_bytes(self.ram.read(pa, PRIQ_ENTRY_BYTES), "little")
            out.append(PRIQ_ENTRY.decode(raw))
            nxt = (cons & ~(2 * size - 1)) | ((cons + 1) & (2 * size - 1))
            self.write(OFF.PRIQ_CONS, 4, nxt)

    def calls(self, name: str) -> list[tuple[Any, ...]]:
        return [c for c in self.t.calls if c[0] == name]


MakeBench = Callable[..., Bench]


@pytest.fixture
def make_bench() -> MakeBench:
    def make(
        preset: str | Smmuv3Params = "full",
        cmdq_lg2: int = 4,
        eventq_lg2: int = 3,
        priq_lg2: int = 2,
        enable: bool = True,
    ) -> Bench:
        params = PRESETS[preset] if isinstance(preset, str) else preset
        b = Bench(params, cmdq_lg2, eventq_lg2, priq_lg2)
        if enable:
            pri = params.idr0_field("pri")
            b.enable(smmuen=1, cmdqen=1, eventqen=1, priqen=pri)
            b.t.calls.clear()  # the stream table latch: test_registers checks it
        return b

    return make


@pytest.fixture
def bench(make_bench: MakeBench) -> Bench:
    return make_bench()
