"""``iommusim explain``: how the model translates one request, step by step.

:func:`explain_translation` is the one explainer: it translates a request on a
:class:`~iommusim.hw.riscv.iommu.RiscvIommu` with the walk trace on. Two front ends feed it: a
conformance vector replayed (:class:`iommusim.conformance.vectors.Replay`) up to each
``translate`` step (:func:`explain_vector`), and an IOMMU programmed over raw memory images
(:mod:`iommusim.conformance.rawexplain`, ``iommusim explain --memory``). During the
translation the engine records every structure its walk reads
(:attr:`TranslationEngine.trace`, named records tagged with the stage and the access each
page-table walk served), and this package decodes each one with the spec tables of
:mod:`iommusim.bits.riscv`: DDT entries and the device context (riscv-iommu: "Process to locate
the Device-context"), PDT entries and the process context ("Process to locate the
Process-context"), first-stage and G-stage PTEs ("Process to translate an IOVA", privileged
spec "Two-Stage Address Translation"), A/D updates, MSI PTEs ("Process to translate addresses
of MSIs": the MSI window match, the interrupt file number, the interrupt file or MRIF the PTE
names and, for MRIF mode, which MRIF bit a write sets -- AIA "MSI PTE, MRIF mode"), then the
outcome and the fault record written ("Fault/Event-Queue (FQ)").

``page_request`` steps are explained too ("PCIe ATS Page Request handling", "Page-Request-Queue
(PQ)"): the message decoded, the device-context lookup and its EN_ATS/EN_PRI/PRPR, the queue
state, then the record queued or the fault, and the automatic "Page Request Group Response".

The explanation is built as plain JSON-able data first; the text and ``--json`` renderings
print the same data.

The package: :mod:`.decode` (structures to fields), :mod:`.walk` (requests and vector
steps explained) and :mod:`.render` (text and JSON).
"""

from __future__ import annotations

from iommusim.conformance.explain.render import (
    explain_vector_step,
    print_explanation,
    print_translation,
)
from iommusim.conformance.explain.walk import explain_translation, explain_vector

__all__ = [
    "explain_translation",
    "explain_vector",
    "explain_vector_step",
    "print_explanation",
    "print_translation",
]
