"""Failed calls of the process, SVA and device-release APIs change nothing the fuzzer's
snapshot sees, and carry the kernel's errno (issue 10, item 4; tests/testsupport/swfuzz.py).

Linux errnos followed: ``munmap`` of an unaligned address or a range beyond TASK_SIZE is
EINVAL (mm/mmap.c ``do_vmi_munmap``); ``mprotect`` of an unmapped range is ENOMEM; a CPU
access the process may not make is EFAULT; ``iommu_sva_bind_device`` without a PASID
capability is ENOSPC (no PASID to give), for a PASID beyond the device's width EOVERFLOW."""

from __future__ import annotations

import errno

from iommusim.errors import (
    BadAddress,
    InvalidArgument,
    NoDevice,
    NoSpace,
    OutOfMemory,
    Overflow,
)
from iommusim.sw.mm.mm import PROT_READ, PROT_WRITE
from testsupport.swfuzz import Rig, fails_cleanly

PAGE = 4096
RW = PROT_READ | PROT_WRITE


def test_failed_munmap_mprotect_and_cpu_accesses_change_nothing() -> None:
    rig = Rig()
    mm = rig.kernel.new_process("p")
    rig.mms.append(mm)
    h = rig.kernel.sva.bind(rig.kernel.device("acc"), mm)
    rig.handles.append(h)
    va = mm.mmap(4 * PAGE, RW)
    mm.write(va, b"data")
    top = mm.task_size
    for exc, code, call in (
        (InvalidArgument, errno.EINVAL, lambda: mm.munmap(va + 1, PAGE)),
        (InvalidArgument, errno.EINVAL, lambda: mm.munmap(-PAGE, PAGE)),
        (InvalidArgument, errno.EINVAL, lambda: mm.munmap(va, 1 << 60)),
        (InvalidArgument, errno.EINVAL, lambda: mm.munmap(va, 0)),
        (InvalidArgument, errno.EINVAL, lambda: mm.munmap(top - PAGE, 2 * PAGE)),
        (OutOfMemory, errno.ENOMEM, lambda: mm.mprotect(va, 8 * PAGE, PROT_READ)),
        (InvalidArgument, errno.EINVAL, lambda: mm.mprotect(va, PAGE, 8)),
        (BadAddress, errno.EFAULT, lambda: mm.read(va + 3 * PAGE, 2 * PAGE)),
        (BadAddress, errno.EFAULT, lambda: mm.write(top - 2, b"xyz")),
        (OutOfMemory, errno.ENOMEM, lambda: mm.mmap(1 << 62, RW)),
    ):
        fails_cleanly(rig, exc, code, call)
    assert mm.read(va, 4) == b"data"


def test_reading_a_huge_area_is_refused_without_visiting_every_page() -> None:
    # Bounded work: 2^40 bytes need 2^28 new pages, more than RAM; ENOMEM before the pages
    # are looked at one by one (they were, and the call ran for minutes).
    rig = Rig()
    mm = rig.kernel.new_process("p")
    rig.mms.append(mm)
    va = mm.mmap(1 << 40, RW)
    fails_cleanly(rig, OutOfMemory, errno.ENOMEM, lambda: mm.read(va, 1 << 40))


def test_calls_on_an_exited_process_change_nothing() -> None:
    rig = Rig()
    mm = rig.kernel.new_process("p")
    rig.mms.append(mm)
    va = mm.mmap(PAGE, RW)
    rig.handles.append(rig.kernel.sva.bind(rig.kernel.device("gpu"), mm))
    mm.exit()
    before_second = mm.exited
    mm.exit()  # a second exit does nothing
    assert before_second and mm.exited
    for call in (
        lambda: mm.munmap(va, PAGE),
        lambda: mm.mprotect(va, PAGE, PROT_READ),
        lambda: mm.mmap(PAGE, RW),
        lambda: mm.read(va, 1),
        lambda: rig.kernel.sva.bind(rig.kernel.device("acc"), mm),
    ):
        fails_cleanly(rig, InvalidArgument, errno.EINVAL, call)


def test_failed_binds_change_nothing() -> None:
    rig = Rig()
    sva = rig.kernel.sva
    mms = [rig.kernel.new_process(f"p{i}") for i in range(2)]
    rig.mms.extend(mms)
    fails_cleanly(rig, NoSpace, errno.ENOSPC, lambda: sva.bind(rig.kernel.device("nic"), mms[0]))
    # Fill acc's 8-bit PASID space from the global allocator, so the next process's PASID
    # is beyond it.
    while len(sva.pasid_ida) < 255:
        sva.pasid_ida.alloc()
    rig.handles.append(sva.bind(rig.kernel.device("gpu"), mms[1]))  # PASID 256
    fails_cleanly(
        rig, Overflow, errno.EOVERFLOW, lambda: sva.bind(rig.kernel.device("acc"), mms[1])
    )


def test_a_failed_release_device_changes_nothing() -> None:
    rig = Rig()
    acc = rig.kernel.device("acc")
    mm = rig.kernel.new_process("p")
    rig.mms.append(mm)
    rig.handles.append(rig.kernel.sva.bind(acc, mm))
    rig.core.release_device(acc)
    fails_cleanly(rig, NoDevice, errno.ENODEV, lambda: rig.core.release_device(acc))
    fails_cleanly(rig, NoDevice, errno.ENODEV, lambda: rig.core.dma_map(acc, 0x8000_0000, PAGE, 0))
