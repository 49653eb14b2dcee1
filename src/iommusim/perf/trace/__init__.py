"""DMA traces: the row format, streaming CSV and ``.npz`` files, importers of QEMU ``-trace``
logs, and synthetic generators."""

from iommusim.perf.trace.format import (
    FLAG_EXEC,
    FLAG_PRIV,
    FLAG_READ,
    FLAG_WRITE,
    TRACE_DTYPE,
    Trace,
    check_rows,
    empty,
)
from iommusim.perf.trace.io import CHUNK_ROWS, read_csv, read_npz, write_csv, write_npz
from iommusim.perf.trace.qemu import QEMU_EVENTS, QemuLogStats, iter_qemu_log, read_qemu_log
from iommusim.perf.trace.synth import Pattern, SyntheticTrace

__all__ = [
    "CHUNK_ROWS",
    "FLAG_EXEC",
    "FLAG_PRIV",
    "FLAG_READ",
    "FLAG_WRITE",
    "QEMU_EVENTS",
    "TRACE_DTYPE",
    "Pattern",
    "QemuLogStats",
    "SyntheticTrace",
    "Trace",
    "check_rows",
    "empty",
    "iter_qemu_log",
    "read_csv",
    "read_npz",
    "read_qemu_log",
    "write_csv",
    "write_npz",
]
