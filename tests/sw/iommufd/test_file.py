"""IommufdFile.ioctl framing, after ``iommufd_fops_ioctl`` and ``copy_struct_from_user``
(drivers/iommu/iommufd/main.c, include/linux/uaccess.h)."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from iommusim.errors import (
    ArgumentTooBig,
    BadAddress,
    BadFileDescriptor,
    InappropriateIoctl,
    InvalidArgument,
    NotSupported,
)
from iommusim.sw.iommufd import Ioas, file, uapi
from iommusim.sw.iommufd.ucmd import Ucmd

IMPLEMENTED = [
    uapi.IOMMU_DESTROY,
    uapi.IOMMU_IOAS_ALLOC,
    uapi.IOMMU_IOAS_ALLOW_IOVAS,
    uapi.IOMMU_IOAS_COPY,
    uapi.IOMMU_IOAS_IOVA_RANGES,
    uapi.IOMMU_IOAS_MAP,
    uapi.IOMMU_IOAS_UNMAP,
    uapi.IOMMU_OPTION,
    uapi.IOMMU_VFIO_IOAS,
    uapi.IOMMU_IOAS_CHANGE_PROCESS,
    uapi.IOMMU_IOAS_NOIOMMU_GET_PA,
]


def _raw(env: Any, request: int, arg: bytearray) -> int:
    return int(env.fd.file.ioctl(request, arg))


@pytest.mark.parametrize(
    "request_",
    [
        0x3B00 | 117,  # VFIO_IOMMU_DIRTY_PAGES: below the range, the VFIO compat lacks it
        0x3B00 | 0x7F,
        0x3B00 | 0x96,  # one past IOMMU_IOAS_NOIOMMU_GET_PA
        0x3B00 | 0xA0,  # IOMMU_TEST_CMD: the selftest is not built in
    ],
)
def test_numbers_outside_the_iommufd_table_are_enotty_before_the_size_is_read(
    env: Any, request_: int
) -> None:
    # main.c: these go to iommufd_vfio_ioctl, which reads nothing -> -ENOIOCTLCMD.
    env.fails(InappropriateIoctl, errno.ENOTTY, lambda: _raw(env, request_, bytearray()))


@pytest.mark.parametrize(
    "request_",
    [
        0x3C80,  # right nr, wrong type byte
        uapi.IOMMU_DESTROY | (1 << 30) | (8 << 16),  # _IOW instead of _IO
    ],
)
def test_a_number_that_is_not_the_table_entry_is_enotty_after_the_size_is_read(
    env: Any, request_: int
) -> None:
    env.fails(InappropriateIoctl, errno.ENOTTY, lambda: _raw(env, request_, bytearray(64)))
    env.fails(BadAddress, errno.EFAULT, lambda: _raw(env, request_, bytearray(3)))


def test_requests_beyond_32_bits_are_enotty(env: Any) -> None:
    env.fails(
        InappropriateIoctl,
        errno.ENOTTY,
        lambda: _raw(env, (1 << 32) | uapi.IOMMU_IOAS_ALLOC, bytearray(12)),
    )
    env.fails(InappropriateIoctl, errno.ENOTTY, lambda: _raw(env, -1, bytearray(12)))


@pytest.mark.parametrize("request_", IMPLEMENTED)
def test_size_below_min_size_is_einval(env: Any, request_: int) -> None:
    s = uapi.IOCTLS[request_]
    arg = s.encode(size=s.min_size - 1)
    env.fails(InvalidArgument, errno.EINVAL, lambda: _raw(env, request_, arg))


@pytest.mark.parametrize("request_", IMPLEMENTED)
def test_size_past_the_user_buffer_is_efault(env: Any, request_: int) -> None:
    s = uapi.IOCTLS[request_]
    arg = s.encode(size=s.size + 8)
    env.fails(BadAddress, errno.EFAULT, lambda: _raw(env, request_, arg))


@pytest.mark.parametrize("request_", IMPLEMENTED)
def test_a_longer_struct_with_a_non_zero_tail_is_e2big(env: Any, request_: int) -> None:
    s = uapi.IOCTLS[request_]
    arg = s.encode(size=s.size + 8) + bytes(7) + b"\x01"
    env.fails(ArgumentTooBig, errno.E2BIG, lambda: _raw(env, request_, arg))


def test_a_non_zero_tail_is_found_before_the_end_of_the_buffer_faults(env: Any) -> None:
    s = uapi.STRUCTS["iommu_ioas_alloc"]
    arg = s.encode(size=s.size + 64) + b"\x01"  # 63 bytes short of the claimed size
    env.fails(ArgumentTooBig, errno.E2BIG, lambda: _raw(env, uapi.IOMMU_IOAS_ALLOC, arg))
    arg = s.encode(size=s.size + 64) + bytes(8)
    env.fails(BadAddress, errno.EFAULT, lambda: _raw(env, uapi.IOMMU_IOAS_ALLOC, arg))


def test_a_longer_struct_with_a_zero_tail_works_and_the_tail_is_not_written(env: Any) -> None:
    s = uapi.STRUCTS["iommu_ioas_alloc"]
    arg = s.encode(size=s.size + 16) + bytes(16)
    assert _raw(env, uapi.IOMMU_IOAS_ALLOC, arg) == 0
    assert s.decode(arg)["out_ioas_id"] == 1
    assert arg[s.size :] == bytes(16)


def test_errors_from_a_struct_field_come_after_the_framing(env: Any) -> None:
    s = uapi.STRUCTS["iommu_ioas_alloc"]
    env.fails(
        NotSupported,
        errno.EOPNOTSUPP,
        lambda: _raw(env, uapi.IOMMU_IOAS_ALLOC, s.encode(size=12, flags=1)),
    )


def _record_op(seen: list[Ucmd], *, fail: bool, create: bool) -> file.Handler:
    def op(ictx: file.IommufdFile, ucmd: Ucmd) -> None:
        seen.append(ucmd)
        if create:
            obj = Ioas()
            ictx.objects.reserve(obj)
            ucmd.new_obj = obj
        ucmd.cmd["out_hwpt_id"] = 0xAABBCCDD
        ucmd.cmd["__reserved2"] = 0x11223344
        ucmd.respond()
        if fail:
            raise InvalidArgument("refused")

    return op


def test_a_shorter_struct_is_zero_extended_and_answered_only_up_to_its_size(
    env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # iommu_hwpt_alloc grew fault_id and __reserved2 after its introduction (min_size 24).
    seen: list[Ucmd] = []
    monkeypatch.setitem(
        file._OPS, uapi.IOMMU_HWPT_ALLOC, _record_op(seen, fail=False, create=False)
    )
    s = uapi.STRUCTS["iommu_hwpt_alloc"]
    full = s.encode(size=24, flags=0, dev_id=7, pt_id=9, fault_id=0x55)
    arg = full[:24] + b"\xee" * 8  # user memory beyond the struct
    assert _raw(env, uapi.IOMMU_HWPT_ALLOC, arg) == 0
    (ucmd,) = seen
    assert ucmd.cmd["dev_id"] == 7 and ucmd.cmd["pt_id"] == 9
    assert ucmd.cmd["fault_id"] == 0  # beyond the user's 24 bytes: zero, not 0x55 or 0xee
    assert int.from_bytes(arg[16:20], "little") == 0xAABBCCDD
    assert arg[24:] == b"\xee" * 8  # the kernel's response stops at the user's size


def test_a_failed_create_aborts_the_object_and_its_id_is_reused(
    env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Ucmd] = []
    monkeypatch.setitem(file._OPS, uapi.IOMMU_HWPT_ALLOC, _record_op(seen, fail=True, create=True))
    arg = uapi.STRUCTS["iommu_hwpt_alloc"].encode(size=48)
    env.fails(InvalidArgument, errno.EINVAL, lambda: _raw(env, uapi.IOMMU_HWPT_ALLOC, arg))
    assert seen[0].new_obj is not None and seen[0].new_obj.id == 0
    assert env.fd.ioas_alloc() == 1


def test_a_created_object_is_published_only_when_the_ioctl_succeeds(
    env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Ucmd] = []
    monkeypatch.setitem(file._OPS, uapi.IOMMU_HWPT_ALLOC, _record_op(seen, fail=False, create=True))
    _raw(env, uapi.IOMMU_HWPT_ALLOC, uapi.STRUCTS["iommu_hwpt_alloc"].encode(size=48))
    assert [o.id for o in env.fd.file.objects] == [1]


def test_the_return_value_is_zero_and_errors_carry_the_errno(env: Any) -> None:
    assert _raw(env, uapi.IOMMU_IOAS_ALLOC, uapi.STRUCTS["iommu_ioas_alloc"].encode(size=12)) == 0
    with pytest.raises(InvalidArgument) as info:
        _raw(env, uapi.IOMMU_IOAS_ALLOC, bytearray(4))
    assert info.value.errno == errno.EINVAL


def test_a_closed_file_is_ebadf(env: Any) -> None:
    env.fd.close()
    env.fd.close()  # a second close does nothing
    with pytest.raises(BadFileDescriptor) as info:
        env.fd.ioas_alloc()
    assert info.value.errno == errno.EBADF


def test_the_file_is_a_context_manager_that_closes(env: Any) -> None:
    with env.fd.file as f:
        env.fd.ioas_alloc()
    assert f.closed and len(f.objects) == 0
