"""How the hardware model stops a translation, and its cause categories (riscv-iommu:
"Fault/Event-Queue (FQ)"; the encodings are in :mod:`iommusim.bits.riscv.causes`).

Inside the hardware model a translation that must stop raises :class:`TranslationFault`;
the top level turns it into the spec's data (a ``FaultRecord`` in the fault queue and a
response status). The exception never leaves :mod:`iommusim.hw`.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACC_EXEC",
    "ACC_READ",
    "ACC_WRITE",
    "ATS_CA_CAUSES",
    "ATS_SUCCESS_CAUSES",
    "CORRUPTION_CAUSES",
    "TranslationFault",
]

# Access classes of a request: index into the per-class cause tuples.
ACC_READ: Final = 0
ACC_WRITE: Final = 1
ACC_EXEC: Final = 2

# riscv-iommu: "PCIe ATS translation request handling": cause categories.
# Data-corruption causes (268-271, 274) are in neither list of the spec; they are answered
# with CA like the other configuration/data errors, as the conformance expectations show.
ATS_CA_CAUSES: Final = frozenset({1, 5, 7, 261, 263, 265, 267, 268, 269, 270, 271, 274})
ATS_SUCCESS_CAUSES: Final = frozenset({12, 13, 15, 20, 21, 23, 266, 262})
#: riscv-iommu: "Reliability, Availability, and Serviceability": causes of a transaction
#: aborted by corrupted data or a data-path error, for which "a Completer Abort (CA) response
#: is appropriate" (others abort as Unsupported Request).
CORRUPTION_CAUSES: Final = frozenset({268, 269, 270, 271, 272, 274})


class TranslationFault(Exception):
    """Stops a translation with a fault cause (internal to the hardware model)."""

    __slots__ = ("cause", "iotval2")

    def __init__(self, cause: int, iotval2: int = 0) -> None:
        self.cause = cause
        self.iotval2 = iotval2
