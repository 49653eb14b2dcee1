"""A memory image for SMMUv3 translation tests: a stream table (linear or 2-level), STEs and CDs
encoded from the layouts of :mod:`iommusim.bits.arm.smmuv3_structures`, and VMSAv8-64 tables
written by the arm_lpae writer -- nothing hand-placed beyond what a driver would write."""

from __future__ import annotations

from typing import Any, Final, Literal

from iommusim.bits.arm.smmuv3_structures import (
    CD,
    CDTAB_L1,
    STE,
    STE_CONFIG_BYPASS,
    STE_CONFIG_NESTED,
    STE_CONFIG_S1,
    STE_CONFIG_S2,
    STRTAB_L1,
    TG0_4K,
    TG0_16K,
    TG0_64K,
)
from iommusim.hw.smmuv3.params import PRESETS, Smmuv3Params
from iommusim.hw.smmuv3.transaction import Request, Response
from iommusim.hw.smmuv3.translator import STRTAB_2LEVEL, STRTAB_LINEAR, Smmuv3Translator
from iommusim.mem import SparseMemory
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable import ArmLpaePageTable

POOL: Final = 0x4000_0000
POOL_SIZE: Final = 1 << 28
TG0: Final = {4: TG0_4K, 16: TG0_16K, 64: TG0_64K}
#: IPS / S2PS encoding of a 48-bit output size (IHI 0070 5.4 / 5.2).
PS_48: Final = 0b101


class Scene:
    """One SMMU's translator over a fresh memory, with its stream table configured and
    SMMUEN set. ``fmt`` "linear" or "2level" (``split`` bits per level-2 table)."""

    def __init__(
        self,
        params: Smmuv3Params | None = None,
        fmt: Literal["linear", "2level"] = "linear",
        log2size: int = 8,
        split: int = 6,
        **caches: Any,
    ) -> None:
        p = params or PRESETS["full"]
        if caches:
            p = p.with_caches(**caches)
        self.params = p
        self.mem = SparseMemory()
        self.pages = PageAllocator(self.mem, POOL, POOL_SIZE)
        self.t = Smmuv3Translator(self.mem, p)
        self.fmt = fmt
        self.split = split
        if fmt == "linear":
            order = max((1 << log2size) * 64 // 4096 - 1, 0).bit_length()
            self.strtab = self.pages.alloc_pages(order)
            self.t.set_stream_table(self.strtab, log2size, STRTAB_LINEAR, 0)
        else:
            l1_bytes = (1 << max(log2size - split, 0)) * 8
            self.strtab = self.pages.alloc_pages(max(l1_bytes // 4096 - 1, 0).bit_length())
            self.t.set_stream_table(self.strtab, log2size, STRTAB_2LEVEL, split)
        self.t.enabled = True

    # -- structures -------------------------------------------------------------------------

    def write(self, pa: int, value: int, nbytes: int) -> None:
        for i in range(nbytes // 8):
            self.mem.write64(pa + 8 * i, value >> (64 * i) & ((1 << 64) - 1))

    def ste_pa(self, sid: int) -> int:
        """Where the STE of ``sid`` lives (allocating its level-2 table on first use)."""
        if self.fmt == "linear":
            return self.strtab + sid * 64
        l1pa = self.strtab + (sid >> self.split) * 8
        l1 = self.mem.read64(l1pa)
        if not l1:
            order = max((1 << self.split) * 64 // 4096 - 1, 0).bit_length()
            l2 = self.pages.alloc_pages(order)
            l1 = STRTAB_L1.encode(span=self.split + 1, l2ptr=l2 >> 6)
            self.mem.write64(l1pa, l1)
        return (STRTAB_L1["l2ptr"].get(l1) << 6) + (sid & ((1 << self.split) - 1)) * 64

    def put_ste(self, sid: int, **fields: int) -> int:
        """Write an STE (V = 1 unless given) and return its image."""
        fields.setdefault("v", 1)
        raw = STE.encode(fields)
        self.write(self.ste_pa(sid), raw, 64)
        return raw

    def cd_image(self, table: ArmLpaePageTable | None, asid: int = 1, **fields: int) -> int:
        """A CD for ``table`` on TTB0 (EPD1 set), as Linux's arm_smmu_make_s1_cd writes
        it: AA64, R, A, ASID, the table's T0SZ and granule, 48-bit IPS."""
        f: dict[str, int] = {"v": 1, "aa64": 1, "r": 1, "a": 1, "asid": asid, "ips": PS_48}
        if table is not None:
            f.update(t0sz=table.t0sz, tg0=TG0[table.granule], ttb0=table.root_pa >> 4, epd1=1)
        else:
            f.update(epd0=1, epd1=1)
        f.update(fields)
        return CD.encode(f)

    def cd_table(self, cds: dict[int, int], entries: int | None = None, at: int = -1) -> int:
        """A linear CD table holding ``cds`` (SSID -> image); returns its address."""
        n = entries or max(cds) + 1
        pa = at if at >= 0 else self.pages.alloc_pages(max(n * 64 // 4096 - 1, 0).bit_length())
        for ssid, raw in cds.items():
            self.write(pa + ssid * 64, raw, 64)
        return pa

    def cd_table_2level(self, cds: dict[int, int], l2_bits: int = 6) -> int:
        """A 2-level CD table (IHI 0070 5.3): L1CDs pointing at level-2 tables of
        ``2**l2_bits`` CDs."""
        l1 = self.pages.alloc_pages(0)
        l2s: dict[int, int] = {}
        for ssid, raw in cds.items():
            hi = ssid >> l2_bits
            if hi not in l2s:
                l2s[hi] = self.pages.alloc_pages(max((64 << l2_bits) // 4096 - 1, 0).bit_length())
                self.mem.write64(l1 + hi * 8, CDTAB_L1.encode(v=1, l2ptr=l2s[hi] >> 12))
            self.write(l2s[hi] + (ssid & ((1 << l2_bits) - 1)) * 64, raw, 64)
        return l1

    # -- tables -----------------------------------------------------------------------------

    def s1(self, granule: int = 4, ia_bits: int = 48, be: bool = False) -> ArmLpaePageTable:
        return ArmLpaePageTable(self.mem, self.pages, 1, granule, ia_bits, big_endian=be)  # type: ignore[arg-type]

    def s2(self, granule: int = 4, ia_bits: int = 40, be: bool = False) -> ArmLpaePageTable:
        return ArmLpaePageTable(self.mem, self.pages, 2, granule, ia_bits, big_endian=be)  # type: ignore[arg-type]

    @staticmethod
    def s2_fields(t: ArmLpaePageTable, vmid: int = 1, **extra: int) -> dict[str, int]:
        """The STE's stage 2 fields for ``t`` (as arm_smmu_make_s2_domain_ste): S2VMID,
        S2T0SZ, S2SL0, S2TG, 48-bit S2PS, S2AA64, S2R, S2TTB."""
        f = {
            "s2vmid": vmid,
            "s2t0sz": t.t0sz,
            "s2sl0": t.sl0,
            "s2tg": TG0[t.granule],
            "s2ps": PS_48,
            "s2aa64": 1,
            "s2r": 1,
            "s2ttb": t.root_pa >> 4,
        }
        f.update(extra)
        return f

    # -- common streams ---------------------------------------------------------------------

    def stream_s1(self, sid: int, table: ArmLpaePageTable, asid: int = 1, **cd: int) -> int:
        """``sid`` translated by stage 1 through ``table`` (one CD, no substreams)."""
        ptr = self.cd_table({0: self.cd_image(table, asid, **cd)})
        return self.put_ste(sid, config=STE_CONFIG_S1, s1contextptr=ptr >> 6)

    def stream_s2(self, sid: int, table: ArmLpaePageTable, vmid: int = 1, **ste: int) -> int:
        return self.put_ste(sid, config=STE_CONFIG_S2, **self.s2_fields(table, vmid), **ste)

    def stream_bypass(self, sid: int) -> int:
        return self.put_ste(sid, config=STE_CONFIG_BYPASS)

    def stream_nested(
        self, sid: int, s1: ArmLpaePageTable, s2: ArmLpaePageTable, ptr_ipa: int, **ste: int
    ) -> int:
        """``sid`` nested: stage 1 ``s1`` (its CD table at IPA ``ptr_ipa``) over ``s2``."""
        return self.put_ste(
            sid,
            config=STE_CONFIG_NESTED,
            s1contextptr=ptr_ipa >> 6,
            **self.s2_fields(s2),
            **ste,
        )

    def go(self, sid: int, addr: int, **kw: Any) -> Response:
        return self.t.translate(Request(sid, addr, **kw))
