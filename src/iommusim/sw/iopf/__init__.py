"""The I/O page-fault core: page requests grouped, dispatched to domains, answered."""

from iommusim.sw.iopf.queue import (
    PERM_EXEC,
    PERM_PRIV,
    PERM_READ,
    PERM_WRITE,
    RESP_FAILURE,
    RESP_INVALID,
    RESP_NAMES,
    RESP_SUCCESS,
    Iopf,
    IopfGroup,
    IopfStats,
    PageFault,
)

__all__ = [
    "PERM_EXEC",
    "PERM_PRIV",
    "PERM_READ",
    "PERM_WRITE",
    "RESP_FAILURE",
    "RESP_INVALID",
    "RESP_NAMES",
    "RESP_SUCCESS",
    "Iopf",
    "IopfGroup",
    "IopfStats",
    "PageFault",
]
