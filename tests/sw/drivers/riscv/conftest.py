"""The ``machine`` fixture of the RISC-V driver tests: a factory of booted machines
(:class:`testsupport.riscv_machine.Machine`)."""

from __future__ import annotations

import pytest

from testsupport.riscv_machine import Machine

__all__ = ["Machine"]


@pytest.fixture
def machine() -> type[Machine]:
    return Machine
