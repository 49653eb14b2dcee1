"""Random bytes into every ioctl of a selftest kernel's /dev/iommu: whatever the struct, the
model answers with an errno (an ApiError) or success, never another exception; a failed call
that the kernel makes all-or-nothing changes nothing; and closing the file afterwards leaves no
object, no pin and no device behind."""

from __future__ import annotations

from typing import Final

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iommusim.errors import ApiError
from iommusim.sw.iommufd import selftest_uapi as t
from iommusim.sw.iommufd import uapi
from testsupport.selftest import PAGE, SelftestEnv, selftest_snapshot

REQUESTS: Final = [*sorted(uapi.IOCTLS), t.IOMMU_TEST_CMD]
#: The ioctls the kernel lets make progress before failing: IOAS_UNMAP (area by area),
#: HWPT_INVALIDATE (entries before the bad one), IOAS_IOVA_RANGES (EMSGSIZE after writing),
#: IOMMU_TEST_CMD (its ops write outputs and fds).
PARTIAL: Final = {
    uapi.IOMMU_IOAS_UNMAP,
    uapi.IOMMU_HWPT_INVALIDATE,
    uapi.IOMMU_IOAS_IOVA_RANGES,
    t.IOMMU_TEST_CMD,
}


def _struct_size(request: int) -> int:
    return t.TEST_CMD.size if request == t.IOMMU_TEST_CMD else uapi.IOCTLS[request].size


small = st.sampled_from([0, 1, 2, 3, 4, 0x1000, 1 << 24, 0xFFFF_FFFF])
calls = st.lists(
    st.tuples(st.sampled_from(REQUESTS), st.lists(small, min_size=0, max_size=18)),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(calls)
def test_random_structs_get_an_errno_and_leave_nothing_behind(
    seq: list[tuple[int, list[int]]],
) -> None:
    env = SelftestEnv()
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buffer, 4 * PAGE, iova=t.MOCK_APERTURE_START)
    env.mock_domain(ioas)
    for request, words in seq:
        size = _struct_size(request)
        arg = bytearray(size)
        arg[:4] = size.to_bytes(4, "little")
        for i, w in enumerate(words):  # fill u32 slots after the size with small values
            at = 4 + 4 * i
            if at + 4 <= size:
                arg[at : at + 4] = w.to_bytes(4, "little")
        before = selftest_snapshot(env)
        try:
            env.file.ioctl(request, arg)
        except ApiError:
            if request not in PARTIAL:
                assert selftest_snapshot(env) == before, hex(request)
    for fd in env.file.fds.fds():
        env.file.fds.close(fd)
    core = env.file.core
    env.fd.close()
    assert len(env.file.objects) == 0
    assert not env.file.user.pins  # type: ignore[attr-defined]
    assert core is not None and core.devices == {} and core.groups == []
