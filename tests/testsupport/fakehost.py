"""A RegisterHost that records what the register file asks of the IOMMU core."""

from __future__ import annotations


class FakeHost:
    """Records MSIs and wired-interrupt edges; a debug translation is unexpected."""

    def __init__(self) -> None:
        self.msis: list[tuple[int, int]] = []
        self.wired: list[int] = []

    def send_msi(self, addr: int, data: int) -> None:
        self.msis.append((addr, data))

    def wired_interrupt(self, vector: int) -> None:
        self.wired.append(vector)

    def debug_translate(self) -> None:
        raise AssertionError("not expected")
