"""Mock nested domains and their IOTLB invalidation (selftest.c: mock_domain_alloc_nested,
__mock_domain_alloc_nested, mock_domain_cache_invalidate_user, mock_domain_free_nested)."""

from __future__ import annotations

import errno
from typing import Any, Final

import pytest

from iommusim.errors import ApiError
from iommusim.sw.core.domain import DOMAIN_NESTED
from iommusim.sw.core.userdata import UserData
from iommusim.sw.drivers.mock import MockIommuDriver, MockNestedDomain, MockPagingDomain
from iommusim.sw.iommufd import selftest_uapi as su
from iommusim.sw.iommufd import uapi

HWPT = su.STRUCTS["iommu_hwpt_selftest"]
INV = su.STRUCTS["iommu_hwpt_invalidate_selftest"]
INV_TYPE: Final = su.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST
ALL: Final = su.IOMMU_TEST_INVALIDATE_FLAG_ALL
IOTLB: Final = su.IOMMU_TEST_IOTLB_DEFAULT


def errno_of(e: pytest.ExceptionInfo[ApiError]) -> int:
    return e.value.errno


def parent(env: Any) -> MockPagingDomain:
    return env.drv.domain_alloc_paging_flags(env.dev(), uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)  # type: ignore[no-any-return]


def nested(env: Any, p: MockPagingDomain | None = None) -> MockNestedDomain:
    p = p if p is not None else parent(env)
    data = env.user_data(0xDEAD, HWPT.encode(iotlb=IOTLB))
    return env.drv.domain_alloc_nested(env.dev(), p, 0, data)  # type: ignore[no-any-return]


def inv(flags: int = 0, iotlb_id: int = 0) -> bytes:
    return bytes(INV.encode(flags=flags, iotlb_id=iotlb_id))


# ------------------------------------------------------------------ allocation
def test_a_nested_domain_starts_with_the_users_iotlb_value(env: Any) -> None:
    p = parent(env)
    dom = nested(env, p)
    assert dom.type == DOMAIN_NESTED and dom.parent is p and dom.viommu is None
    assert dom.iotlb == [IOTLB] * 4
    assert p.users == 1  # the parent stays while a domain nests in it
    with pytest.raises(ApiError) as e:
        env.core.domain_free(p)
    assert errno_of(e) == errno.EBUSY
    env.core.domain_free(dom)
    assert p.users == 0
    env.core.domain_free(p)


def test_nested_domains_attach_and_take_pasids(env: Any) -> None:
    dev = env.dev(su.MOCK_FLAGS_DEVICE_PASID)
    dom = nested(env)
    env.core.attach_device(dom, dev)
    assert env.mdev(dev).domain is dom and env.mdev(dev).viommu is None
    env.core.attach_device_pasid(dom, dev, 3)
    assert env.core.pasid_domain(dev, 3) is dom


def _alloc_error_cases(env: Any) -> list[tuple[str, object, int, UserData, int]]:
    """(name, parent, flags, data, errno) in mock_domain_alloc_nested's order."""
    good = HWPT.encode(iotlb=IOTLB)
    p = parent(env)
    other = MockIommuDriver(env.pages, name="other")
    theirs = other.domain_alloc_paging_flags(other.create_device())
    return [
        ("unknown flag", p, uapi.IOMMU_HWPT_ALLOC_NEST_PARENT, env.user_data(0xDEAD, good),
         errno.EOPNOTSUPP),
        ("blocking parent", env.drv.blocked_domain, 0, env.user_data(0xDEAD, good),
         errno.EINVAL),
        ("another IOMMU's parent", theirs, 0, env.user_data(0xDEAD, good), errno.EINVAL),
        ("nested parent", nested(env, p), 0, env.user_data(0xDEAD, good), errno.EINVAL),
        ("data type", p, 0, env.user_data(uapi.IOMMU_HWPT_DATA_ARM_SMMUV3, good),
         errno.EOPNOTSUPP),
        ("too short", p, 0, env.user_data(0xDEAD, good[:2]), errno.EINVAL),
        ("too long", p, 0, env.user_data(0xDEAD, good + bytes(4)), errno.EINVAL),
        ("unreadable", p, 0, UserData(0xDEAD, 0x10, 8, env.user), errno.EFAULT),
    ]  # fmt: skip


@pytest.mark.parametrize("case", range(8))
def test_every_nested_allocation_error_changes_nothing(env: Any, case: int) -> None:
    dev = env.dev()
    cases = _alloc_error_cases(env)
    name, p, flags, data, err = cases[case]
    domains = [c[1] for c in cases]
    before = env.snapshot(*domains)
    with pytest.raises(ApiError) as e:
        env.drv.domain_alloc_nested(dev, p, flags, data)
    assert errno_of(e) == err, name
    assert env.snapshot(*domains) == before


def test_the_pasid_flag_is_accepted(env: Any) -> None:
    data = env.user_data(0xDEAD, HWPT.encode(iotlb=1)[:4])  # the first version: iotlb only
    dom = env.drv.domain_alloc_nested(env.dev(), parent(env), uapi.IOMMU_HWPT_ALLOC_PASID, data)
    assert dom.iotlb == [1] * 4


# ------------------------------------------------------------------ invalidation
def test_an_entry_invalidates_one_iotlb_slot_and_all_invalidates_every_slot(env: Any) -> None:
    dom = nested(env)
    assert dom.cache_invalidate_user(env.array(INV_TYPE, [inv(iotlb_id=2)])) == (1, None)
    assert dom.iotlb == [IOTLB, IOTLB, 0, IOTLB]
    # With ALL, iotlb_id is ignored (but still checked: it must be at most 3).
    assert dom.cache_invalidate_user(env.array(INV_TYPE, [inv(ALL, 3)])) == (1, None)
    assert dom.iotlb == [0] * 4


def test_an_empty_array_does_nothing(env: Any) -> None:
    dom = nested(env)
    assert dom.cache_invalidate_user(env.array(INV_TYPE, [])) == (0, None)
    assert dom.iotlb == [IOTLB] * 4


@pytest.mark.parametrize(
    ("bad", "err"),
    [
        (inv(flags=2), errno.EOPNOTSUPP),
        (inv(iotlb_id=4), errno.EINVAL),
        (inv(ALL, iotlb_id=4), errno.EINVAL),
    ],
)
def test_a_bad_entry_stops_after_the_entries_before_it(env: Any, bad: bytes, err: int) -> None:
    """mock_domain_cache_invalidate_user: array->entry_num = processed on error."""
    dom = nested(env)
    entries = [inv(iotlb_id=0), inv(iotlb_id=1), bad, inv(iotlb_id=3)]
    done, e = dom.cache_invalidate_user(env.array(INV_TYPE, entries))
    assert done == 2 and e is not None and e.errno == err
    assert dom.iotlb == [0, 0, IOTLB, IOTLB]


def test_another_array_type_is_einval_before_any_entry(env: Any) -> None:
    dom = nested(env)
    array = env.array(su.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID, [inv()])
    before = env.snapshot(dom)
    done, e = dom.cache_invalidate_user(array)
    assert done == 0 and e is not None and e.errno == errno.EINVAL
    assert env.snapshot(dom) == before


@pytest.mark.parametrize(
    ("entry_len", "err"),
    [(4, errno.EINVAL), (12, errno.EINVAL)],  # below the first version; beyond the struct
)
def test_entries_of_the_wrong_length_are_refused_by_the_copy(
    env: Any, entry_len: int, err: int
) -> None:
    dom = nested(env)
    array = env.array(INV_TYPE, [inv(iotlb_id=1)], entry_len)
    before = env.snapshot(dom)
    done, e = dom.cache_invalidate_user(array)
    assert done == 0 and e is not None and e.errno == err
    assert env.snapshot(dom) == before


def test_an_unreadable_entry_is_efault(env: Any) -> None:
    dom = nested(env)
    array = env.array(INV_TYPE, [inv(iotlb_id=1)])
    unreadable = type(array)(INV_TYPE, env.UVA + 0x3FF8, 8, 2, env.user)  # entry 1 is off the end
    env.put(inv(iotlb_id=1), env.UVA + 0x3FF8)
    done, e = dom.cache_invalidate_user(unreadable)
    assert done == 1 and e is not None and e.errno == errno.EFAULT
    assert dom.iotlb == [IOTLB, 0, IOTLB, IOTLB]
