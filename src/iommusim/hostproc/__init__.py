"""Unmodified host programs against the model's ``/dev/iommu``.

An ``LD_PRELOAD`` library (``preload.c``, built on first use by :mod:`~.build`) gives a
dynamically linked program a ``/dev/iommu`` whose every call is served by a :class:`Server`
over a CONFIG_IOMMUFD_TEST kernel of the model (the mock IOMMU registered), reading and
writing the program's memory itself (:class:`HostUserMemory`). ``iommusim iommufd run -- PROG``
(:func:`run_program`) is the command.

- :mod:`~.protocol`: the wire format shared with ``preload.c``.
- :mod:`~.memory`: :class:`ProcessMemory` (``process_vm_readv``/``writev``) and
  :class:`HostUserMemory` (pins mirrored into model memory).
- :mod:`~.fdtable`: :class:`HostFdTable`, the program's fds as the model's fd table.
- :mod:`~.server`: :class:`Server`, the calls served; :class:`Stats`.
- :mod:`~.names`: ioctl and errno names for the trace and summary.
- :mod:`~.run`: :func:`run_program`.
"""

from __future__ import annotations

from iommusim.hostproc.build import PreloadBuildError, preload_library
from iommusim.hostproc.fdtable import HostFdTable
from iommusim.hostproc.memory import HostUserMemory, ProcessMemory
from iommusim.hostproc.run import run_program
from iommusim.hostproc.server import Server, Stats

__all__ = [
    "HostFdTable",
    "HostUserMemory",
    "PreloadBuildError",
    "ProcessMemory",
    "Server",
    "Stats",
    "preload_library",
    "run_program",
]
