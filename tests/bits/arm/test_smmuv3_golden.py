"""Golden encodings of the Arm SMMUv3 layouts: whole words derived by hand from the field
positions of IHI 0070, compared bit for bit, independently of the tables. Where the reference
digest of QEMU and gem5 names a layout bug, a test pins the right position."""

from __future__ import annotations

from iommusim.bits.arm import smmuv3_queues as q
from iommusim.bits.arm import smmuv3_regs as r
from iommusim.bits.arm import smmuv3_structures as s


def _dwords(value: int, n: int) -> list[int]:
    """The ``n`` little-endian doublewords of ``value``, as software reads them from memory."""
    raw = value.to_bytes(8 * n, "little")
    return [int.from_bytes(raw[8 * i : 8 * i + 8], "little") for i in range(n)]


def test_ste_stage1_translate_golden():
    """IHI 0070 5.2: V 0, Config 3:1 (0b101 = stage 1 only), S1ContextPtr 51:6; doubleword 1:
    S1DSS 1:0, S1CIR 3:2, S1COR 5:4, S1CSH 7:6, STRW 31:30."""
    ste = s.STE.encode(
        v=1,
        config=s.STE_CONFIG_S1,
        s1contextptr=0x8_1234_5640 >> 6,
        s1dss=s.S1DSS_BYPASS,
        s1cir=1,
        s1cor=1,
        s1csh=3,
        strw=s.STRW_EL2,
    )
    assert _dwords(ste, 8) == [0x0000_0008_1234_564B, 0x0000_0000_8000_00D5, 0, 0, 0, 0, 0, 0]
    assert ste.to_bytes(64, "little")[:8] == bytes.fromhex("4b56341208000000")


def test_ste_stage2_golden():
    """IHI 0070 5.2: S2VMID 15:0 of doubleword 2, S2T0SZ..S2R from bit 32 of it, S2TTB 51:4 of
    doubleword 3."""
    ste = s.STE.encode(
        v=1,
        config=s.STE_CONFIG_S2,
        s2vmid=0x42,
        s2t0sz=24,
        s2sl0=1,
        s2ir0=1,
        s2or0=1,
        s2sh0=3,
        s2tg=0,
        s2ps=2,
        s2aa64=1,
        s2r=1,
        s2ttb=0x4_5678_9000 >> 4,
    )
    assert _dwords(ste, 8) == [0xD, 0, 0x040A_3558_0000_0042, 0x0000_0004_5678_9000, 0, 0, 0, 0]


def test_ste_s2hd_s2ha_s2s_sit_at_word5_bits_23_24_25():
    """IHI 0070 5.2: S2HD 183, S2HA 184, S2S 185 -- bits 23, 24, 25 of 32-bit word 5 (older
    QEMU had them one bit high, at 24/25/26; smmuv3-models.md 2.2); S2AFFD 181 and S2PTW 182
    sit just below."""

    def word5(**kw: int) -> int:
        return (s.STE.encode(**kw) >> 160) & 0xFFFF_FFFF

    assert word5(s2hd=1) == 1 << 23
    assert word5(s2ha=1) == 1 << 24
    assert word5(s2s=1) == 1 << 25
    assert word5(s2r=1) == 1 << 26
    assert word5(s2affd=1, s2ptw=1) == 0b11 << 21


def test_ste_s1cdmax_is_the_top_of_doubleword_0():
    """IHI 0070 5.2: S1CDMax 63:59 (the ContextPtr ends at 51)."""
    assert s.STE.encode(s1cdmax=0x1F) == 0xF800_0000_0000_0000


def test_stream_table_l1_descriptor_golden():
    """IHI 0070 5.1: Span 4:0, L2Ptr 51:6."""
    assert s.STRTAB_L1.encode(span=9, l2ptr=0xF_FFFF_FFFF_F000 >> 6) == 0x000F_FFFF_FFFF_F009


def test_cd_golden():
    """IHI 0070 5.4: T0SZ 5:0, TG0 7:6, IR0/OR0/SH0 13:8, EPD1 30, V 31, IPS 34:32, AA64 41, R 45,
    A 46, ASET 47, ASID 63:48; TTB0 51:4 of doubleword 1; MAIR0/MAIR1 doubleword 3."""
    cd = s.CD.encode(
        t0sz=16,
        tg0=s.TG0_4K,
        ir0=1,
        or0=1,
        sh0=3,
        epd1=1,
        v=1,
        ips=5,
        aa64=1,
        r=1,
        a=1,
        aset=1,
        asid=0x1234,
        ttb0=0x1_2345_6000 >> 4,
        mair0=0x44FF_0400,
        mair1=0x0000_000C,
    )
    assert _dwords(cd, 8) == [
        0x1234_E205_C000_3510,
        0x0000_0001_2345_6000,
        0,
        0x0000_000C_44FF_0400,
        0,
        0,
        0,
        0,
    ]


def test_cd_ttb1_and_tg1_golden():
    """IHI 0070 5.4: T1SZ 21:16, TG1 23:22 (TG1's own encoding: 0b10 = 4 KiB), TTB1 51:4 of
    doubleword 2, HAD1 bit 1 of it."""
    cd = s.CD.encode(t1sz=25, tg1=s.TG1_4K, ttb1=0x8000_0000 >> 4, had1=1)
    assert _dwords(cd, 3) == [0x0099_0000, 0, 0x8000_0002]


def test_cd_hwu_and_mpam_fields_golden():
    """IHI 0070 5.4: HWU059-HWU062 are bits 63:60 of doubleword 1, HWU159-HWU162 bits 63:60 of
    doubleword 2; PARTID 15:0 and PMG 23:16 of the upper word of doubleword 5."""
    cd = s.CD.encode(hwu059=1, hwu062=1, hwu160=1, partid=0xABCD, pmg=0x5A)
    assert _dwords(cd, 6) == [0, 0x9 << 60, 0x2 << 60, 0, 0, 0x005A_ABCD_0000_0000]


def test_ste_mpam_and_vms_fields_golden():
    """IHI 0070 5.2: S1MPAM bit 26 of word 2; PARTID 31:16 of word 8; PMG 7:0 and VMSPtr 51:12
    in doubleword 5."""
    ste = s.STE.encode(s1mpam=1, partid=0x1234, pmg=0x77, vmsptr=0x8_0000_3000 >> 12)
    assert _dwords(ste, 6) == [0, 1 << 26, 0, 0, 0x1234_0000, 0x0000_0008_0000_3077]


def test_cd_l1_descriptor_golden():
    """IHI 0070 5.3: V 0, L2Ptr 51:12."""
    assert s.CDTAB_L1.encode(v=1, l2ptr=0x9_8765_4000 >> 12) == 0x0000_0009_8765_4001


def test_cmd_tlbi_nh_va_golden():
    """IHI 0070 4.4 CMD_TLBI_NH_VA: opcode 0x12, NUM 16:12, SCALE 24:20, VMID 47:32, ASID 63:48;
    doubleword 1: Leaf 0, TTL 9:8, TG 11:10, Address 63:12."""
    c = q.CMD_TLBI_NH_VA
    cmd = c.layout.encode(
        opcode=c.opcode,
        num=3,
        scale=1,
        vmid=5,
        asid=0x2A,
        leaf=1,
        ttl=3,
        tg=1,
        address=0xFFFF_8000_1234_5000 >> 12,
    )
    assert _dwords(cmd, 2) == [0x002A_0005_0010_3012, 0xFFFF_8000_1234_5701]


def test_cmd_tlbi_scale_is_five_bits_ending_at_24():
    """IHI 0070 4.4: SCALE is bits 24:20; bit 25 is RES0 (arm-smmu-v3.h in linux-source 7.3.4
    defines CMDQ_TLBI_0_SCALE as GENMASK_ULL(25, 20); the spec wins)."""
    lay = q.CMD_TLBI_NH_VA.layout
    assert lay.encode(scale=0x1F) == 0x1F << 20
    assert lay.reserved_mask & (1 << 25)


def test_cmd_tlbi_s2_ipa_address_stops_at_bit_51():
    """IHI 0070 4.4 CMD_TLBI_S2_IPA: Address[51:12]; bits 63:52 of doubleword 1 are RES0."""
    c = q.CMD_TLBI_S2_IPA
    cmd = c.layout.encode(opcode=c.opcode, vmid=7, address=0xF_FFFF_FFFF_F000 >> 12)
    assert _dwords(cmd, 2) == [0x0000_0007_0000_002A, 0x000F_FFFF_FFFF_F000]


def test_cmd_sync_golden():
    """IHI 0070 4.6 CMD_SYNC: CS 13:12, MSH 23:22, MSIAttr 27:24, MSIData 63:32; MSIAddress 51:2
    of doubleword 1."""
    c = q.CMD_SYNC
    cmd = c.layout.encode(
        opcode=c.opcode,
        cs=q.SYNC_CS_IRQ,
        msh=3,
        msiattr=0xF,
        msidata=0xCAFE,
        msiaddress=0x8000_0040 >> 2,
    )
    assert _dwords(cmd, 2) == [0x0000_CAFE_0FC0_1046, 0x0000_0000_8000_0040]


def test_cfgi_all_is_cfgi_ste_range_31():
    """IHI 0070 4.1.1, 4.3: CMD_CFGI_ALL is opcode 0x04 with Range = 31; 0x07 is
    CMD_CFGI_VMS_PIDM (QEMU's enum names 0x07 CFGI_ALL; smmuv3-models.md 2.2)."""
    c = q.CMD_CFGI_ALL
    cmd = c.layout.encode(opcode=c.opcode, range=q.CFGI_ALL_RANGE)
    assert _dwords(cmd, 2) == [0x04, 0x1F]
    assert q.COMMANDS_BY_OPCODE[0x07].name == "CMD_CFGI_VMS_PIDM"


def test_cmd_cfgi_cd_golden():
    """IHI 0070 4.3 CMD_CFGI_CD: SSec 10, SubstreamID 31:12, StreamID 63:32, Leaf bit 0 of
    doubleword 1."""
    c = q.CMD_CFGI_CD
    cmd = c.layout.encode(opcode=c.opcode, substreamid=0xFFFFF, streamid=0x1_0001, leaf=1)
    assert _dwords(cmd, 2) == [0x0001_0001_FFFF_F005, 1]


def test_cmd_atc_inv_and_pri_resp_golden():
    """IHI 0070 4.5: CMD_ATC_INV Global 9, SSV 11, Size 5:0 and Address 63:12 of doubleword 1;
    CMD_PRI_RESP PRGI 8:0 and Resp 13:12 of doubleword 1."""
    atc = q.CMD_ATC_INV
    cmd = atc.layout.encode(
        opcode=atc.opcode, ssv=1, substreamid=1, streamid=0x300, size=52, address=0
    )
    assert _dwords(cmd, 2) == [0x0000_0300_0000_1840, 52]
    pri = q.CMD_PRI_RESP
    cmd = pri.layout.encode(opcode=pri.opcode, streamid=0x300, prgi=0x1FF, resp=q.PRI_RESP_SUCCESS)
    assert _dwords(cmd, 2) == [0x0000_0300_0000_0041, 0x21FF]


def test_cmd_resume_golden():
    """IHI 0070 4.6 CMD_RESUME: Ac 12 (retry), Ab 13, StreamID 63:32, STAG 15:0 of doubleword 1."""
    c = q.CMD_RESUME
    cmd = c.layout.encode(opcode=c.opcode, ac=1, streamid=9, stag=0xBEEF)
    assert _dwords(cmd, 2) == [0x0000_0009_0000_1044, 0xBEEF]


def test_f_translation_event_golden():
    """IHI 0070 7.3 F_TRANSLATION (0x10): SSV 11, SubstreamID 31:12, StreamID 63:32; RnW bit 35
    and CLASS 41:40 of doubleword 1; InputAddr doubleword 2; IPA 51:12 of doubleword 3."""
    evt = q.EVT_FAULT.encode(
        {
            "type": q.F_TRANSLATION,
            "ssv": 1,
            "substreamid": 7,
            "streamid": 0x103,
            "rnw": 1,
            "class": q.CLASS_IN,
            "inputaddr": 0xDEAD_B000,
        }
    )
    assert _dwords(evt, 4) == [0x0000_0103_0000_7810, 0x0000_0208_0000_0000, 0xDEAD_B000, 0]


def test_stage2_permission_event_golden():
    """IHI 0070 7.3 F_PERMISSION (0x13) from stage 2: STAG 15:0 and Stall 31 of doubleword 1,
    PnU 33, InD 34, S2 39; IPA 51:12 of doubleword 3."""
    evt = q.EVT_FAULT.encode(
        {
            "type": q.F_PERMISSION,
            "streamid": 1,
            "stag": 0x55,
            "stall": 1,
            "pnu": 1,
            "ind": 1,
            "s2": 1,
            "class": q.CLASS_IN,
            "inputaddr": 0x1000,
            "ipa": 0x8_0000_1000 >> 12,
        }
    )
    assert _dwords(evt, 4) == [
        0x0000_0001_0000_0013,
        0x0000_0286_8000_0055,
        0x1000,
        0x0000_0008_0000_1000,
    ]


def test_walk_abort_event_golden():
    """IHI 0070 7.3 F_WALK_EABT (0x0B): FetchAddr 51:3 of doubleword 3; CLASS TT."""
    evt = q.EVT_WALK_EABT.encode(
        {"type": q.F_WALK_EABT, "class": q.CLASS_TT, "fetchaddr": 0x4_0000_0FF8 >> 3}
    )
    assert _dwords(evt, 4) == [0x0B, 0x0000_0100_0000_0000, 0, 0x0000_0004_0000_0FF8]


def test_event_numbers():
    """IHI 0070 7.3: the event numbers, pinned as literals."""
    assert q.EVENT_NAMES == {
        0x01: "F_UUT",
        0x02: "C_BAD_STREAMID",
        0x03: "F_STE_FETCH",
        0x04: "C_BAD_STE",
        0x05: "F_BAD_ATS_TREQ",
        0x06: "F_STREAM_DISABLED",
        0x07: "F_TRANSL_FORBIDDEN",
        0x08: "C_BAD_SUBSTREAMID",
        0x09: "F_CD_FETCH",
        0x0A: "C_BAD_CD",
        0x0B: "F_WALK_EABT",
        0x10: "F_TRANSLATION",
        0x11: "F_ADDR_SIZE",
        0x12: "F_ACCESS",
        0x13: "F_PERMISSION",
        0x20: "F_TLB_CONFLICT",
        0x21: "F_CFG_CONFLICT",
        0x24: "E_PAGE_REQUEST",
        0x25: "F_VMS_FETCH",
    }


def test_command_opcodes():
    """IHI 0070 4.1.1 "Command opcodes", pinned as literals."""
    assert {c.name: c.opcode for c in q.COMMANDS} == {
        "CMD_PREFETCH_CONFIG": 0x01,
        "CMD_PREFETCH_ADDR": 0x02,
        "CMD_CFGI_STE": 0x03,
        "CMD_CFGI_STE_RANGE": 0x04,
        "CMD_CFGI_CD": 0x05,
        "CMD_CFGI_CD_ALL": 0x06,
        "CMD_CFGI_VMS_PIDM": 0x07,
        "CMD_TLBI_NH_ALL": 0x10,
        "CMD_TLBI_NH_ASID": 0x11,
        "CMD_TLBI_NH_VA": 0x12,
        "CMD_TLBI_NH_VAA": 0x13,
        "CMD_TLBI_EL3_ALL": 0x18,
        "CMD_TLBI_EL3_VA": 0x1A,
        "CMD_TLBI_EL2_ALL": 0x20,
        "CMD_TLBI_EL2_ASID": 0x21,
        "CMD_TLBI_EL2_VA": 0x22,
        "CMD_TLBI_EL2_VAA": 0x23,
        "CMD_TLBI_S12_VMALL": 0x28,
        "CMD_TLBI_S2_IPA": 0x2A,
        "CMD_TLBI_NSNH_ALL": 0x30,
        "CMD_ATC_INV": 0x40,
        "CMD_PRI_RESP": 0x41,
        "CMD_RESUME": 0x44,
        "CMD_STALL_TERM": 0x45,
        "CMD_SYNC": 0x46,
    }


def test_cerror_codes():
    """IHI 0070 7.1: CERROR_NONE 0, CERROR_ILL 1, CERROR_ABT 2, CERROR_ATC_INV_SYNC 3, reported
    in SMMU_CMDQ_CONS.ERR 30:24."""
    assert (q.CERROR_NONE, q.CERROR_ILL, q.CERROR_ABT, q.CERROR_ATC_INV_SYNC) == (0, 1, 2, 3)
    assert r.CMDQ_CONS.encode(rd=0x80005, err=q.CERROR_ILL) == 0x0108_0005


def test_pri_queue_entry_golden():
    """IHI 0070 8.1: StreamID 31:0, SubstreamID 51:32, Read 60, Write 61, Last 62, SSV 63;
    PRG index 8:0 and Page address 63:12 of doubleword 1."""
    entry = q.PRIQ_ENTRY.encode(
        streamid=0x100,
        substreamid=5,
        read=1,
        write=1,
        last=1,
        ssv=1,
        prg_index=0x1A,
        address=0x7FFF_F000 >> 12,
    )
    assert _dwords(entry, 2) == [0xF000_0005_0000_0100, 0x0000_0000_7FFF_F01A]


def test_gerror_bits():
    """IHI 0070 6.3 SMMU_GERROR: CMDQ_ERR 0, EVENTQ_ABT_ERR 2, PRIQ_ABT_ERR 3, the four MSI abort
    errors 7:4, SFM_ERR 8, CMDQP_ERR 9; bit 1 is RES0."""
    assert r.GERROR_ERRORS == 0x3FD


def test_register_golden_values():
    """IHI 0070 6.3: STRTAB_BASE_CFG FMT 17:16, SPLIT 10:6, LOG2SIZE 5:0; GBPA ABORT 20, UPDATE 31;
    a queue base's LOG2SIZE 4:0, ADDR 51:5, RA/WA 62; the MSI address 51:2."""
    assert r.STRTAB_BASE_CFG.encode(fmt=r.STRTAB_FMT_2LVL, split=8, log2size=16) == 0x0001_0210
    assert r.GBPA.encode(abort=1, update=1) == 0x8010_0000
    assert r.CMDQ_BASE.encode(log2size=8, addr=0x8_0000_1000 >> 5, ra=1) == 0x4000_0008_0000_1008
    assert r.IRQ_CFG0.encode(addr=0x0800_0040 >> 2) == 0x0800_0040
    assert r.EVENTQ_PROD.encode(wr=0x80000, ovflg=1) == 0x8008_0000


def test_gem5_idr0_decodes_as_its_digest_says():
    """smmuv3-models.md 3.2: gem5's smmu_idr0 0x094C100F is "2-level ST, no stall, LE, CD2L,
    VMID16, ASID16, AArch64, S1P+S2P" -- read through IHI 0070 6.3 SMMU_IDR0."""
    idr0 = r.IDR0.decode(0x094C_100F)
    assert {k: v for k, v in idr0.items() if v} == {
        "s2p": 1,
        "s1p": 1,
        "ttf": 3,
        "asid16": 1,
        "vmid16": 1,
        "cd2l": 1,
        "ttendian": 2,
        "stall_model": 1,
        "st_level": 1,
    }
