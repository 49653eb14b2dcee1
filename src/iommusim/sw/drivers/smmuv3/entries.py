"""Writing an STE or a CD the SMMU may be using (after Linux ``arm_smmu_write_entry`` and
``arm_smmu_get_ste_used`` / ``arm_smmu_get_cd_used``).

The SMMU reads an STE or CD in any order and may cache it at any moment; software changes
one only in steps after each of which every bit the SMMU uses is either the old value or the
new one (IHI 0070 3.21 "Structure and queue ownership", 4.3: a change is visible only after
CFGI + CMD_SYNC). :func:`used_ste` and :func:`used_cd` say which bits of an entry the SMMU
uses given its own V and Config; :func:`write_entry` then picks the sequence:

* nothing used changes: write the target at once;
* one qword's used bits change ("hitless"): first every bit the current entry does not use,
  sync; then that one qword, sync; then the rest, sync;
* more: qword 0 zeroed first (V = 0), sync; every qword but the first, sync; the first,
  sync.

Each step writes qwords to memory and calls ``sync`` (the caller's CFGI + CMD_SYNC) only when
something changed. Entries are lists of 64-bit qwords, low qword first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from iommusim.bits.arm.smmuv3_structures import CD, STE
from iommusim.bits.fields import Layout

__all__ = ["qwords", "used_cd", "used_ste", "value", "write_entry"]

_Q: Final = (1 << 64) - 1


def qwords(v: int, n: int = 8) -> list[int]:
    """A 512-bit structure image as its ``n`` qwords."""
    return [v >> (64 * i) & _Q for i in range(n)]


def value(q: list[int]) -> int:
    return sum(x << (64 * i) for i, x in enumerate(q))


def _mask(lay: Layout, *names: str) -> int:
    return lay.mask(*names)


_STE_V: Final = _mask(STE, "v")
_STE_CFG: Final = _mask(STE, "config")
#: The fields each STE.Config uses (IHI 0070 5.2; Linux ``arm_smmu_get_ste_used``).
_STE_BYPASS: Final = _mask(
    STE, "shcfg", "mtcfg", "memattr", "alloccfg", "nscfg", "privcfg", "instcfg"
)
_STE_S1: Final = _mask(
    STE,
    "s1fmt",
    "s1contextptr",
    "s1cdmax",
    "s1dss",
    "s1cir",
    "s1cor",
    "s1csh",
    "s1stalld",
    "eats",
    "strw",
    "mev",
    "shcfg",
    "s2vmid",
)
_STE_S2: Final = _mask(
    STE,
    "eats",
    "shcfg",
    "s2vmid",
    "s2t0sz",
    "s2sl0",
    "s2ir0",
    "s2or0",
    "s2sh0",
    "s2tg",
    "s2ps",
    "s2aa64",
    "s2endi",
    "s2affd",
    "s2ptw",
    "s2hd",
    "s2ha",
    "s2s",
    "s2r",
    "s2ttb",
    "strw",
)
_CD_V: Final = _mask(CD, "v")
_CD_ALL: Final = (1 << 512) - 1


def used_ste(ste: int) -> int:
    """The bits of ``ste`` the SMMU uses (IHI 0070 5.2): V; with V = 1 Config and the fields
    of its stages (abort uses nothing more, bypass its attribute overrides)."""
    if not ste & _STE_V:
        return _STE_V
    used = _STE_V | _STE_CFG
    cfg = STE["config"].get(ste)
    if cfg == 0b100:
        used |= _STE_BYPASS
    if cfg & 0b100:
        if cfg & 1:
            used |= _STE_S1
        if cfg & 2:
            used |= _STE_S2
    return used


def used_cd(cd: int) -> int:
    """The bits of ``cd`` the SMMU uses (IHI 0070 5.4): V, and with V = 1 all of it."""
    return _CD_ALL if cd & _CD_V else _CD_V


def write_entry(
    cur: list[int],
    target: list[int],
    used: Callable[[int], int],
    store: Callable[[int, int], None],
    sync: Callable[[], None],
) -> int:
    """Change the entry ``cur`` (its qwords as in memory) to ``target``: ``store(i, q)``
    writes qword ``i``, ``sync`` makes the SMMU see the change. Returns the number of
    syncs."""
    n = len(cur)
    cur_used = qwords(used(value(cur)), n)
    tgt_used = qwords(used(value(target)), n)
    unused_update = [(c & u) | (t & ~u & _Q) for c, t, u in zip(cur, target, cur_used, strict=True)]
    diff = [i for i in range(n) if (unused_update[i] ^ target[i]) & tgt_used[i]]
    entry = list(cur)
    syncs = 0

    def put(src: list[int], lo: int, hi: int) -> None:
        nonlocal syncs
        changed = False
        for i in range(lo, hi):
            if entry[i] != src[i]:
                entry[i] = src[i]
                store(i, src[i])
                changed = True
        if changed:
            sync()
            syncs += 1

    if len(diff) == 1:
        crit = diff[0]
        put(unused_update, 0, n)
        put(target, crit, crit + 1)
        put(target, 0, n)
    elif diff:
        put([0] * n, 0, 1)  # qword 0 all zero: V = 0 for an STE and a CD alike
        put(target, 1, n)
        put(target, 0, 1)
    else:
        put(target, 0, n)
    return syncs
