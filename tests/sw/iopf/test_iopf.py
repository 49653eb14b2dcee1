"""The I/O page-fault core (Linux io-pgfault.c semantics): PCIe Page Request Groups are
answered once, on their last request (PCIe "Page Request Message", "PRG Response Message")."""

from __future__ import annotations

import errno

import pytest

from iommusim.errors import InvalidArgument
from iommusim.sw.core.device import Device
from iommusim.sw.core.domain import DOMAIN_SVA, Domain
from iommusim.sw.iopf import (
    PERM_READ,
    PERM_WRITE,
    RESP_FAILURE,
    RESP_INVALID,
    RESP_SUCCESS,
    Iopf,
    IopfGroup,
    PageFault,
)


class Harness:
    def __init__(self) -> None:
        self.dev = Device("acc", 0x10, pasid_bits=20)
        self.domain = Domain(DOMAIN_SVA, object())
        self.groups: list[IopfGroup] = []
        self.domain.iopf_handler = self.groups.append
        self.sent: list[tuple[int | None, int, int]] = []
        self.domains: dict[int | None, Domain] = {5: self.domain}
        self.iopf = Iopf(
            lambda dev, pasid: self.domains.get(pasid),
            lambda dev, f, code: self.sent.append((f.pasid, f.grpid, code)),
        )


def fault(
    grpid: int, addr: int, last: bool, pasid: int | None = 5, perm: int = PERM_READ
) -> PageFault:
    return PageFault(pasid, grpid, perm, addr, last)


def test_partial_requests_wait_for_the_last_one_of_their_group() -> None:
    h = Harness()
    h.iopf.report(h.dev, fault(3, 0x1000, False))
    h.iopf.report(h.dev, fault(7, 0x9000, False))  # another group, interleaved
    h.iopf.report(h.dev, fault(3, 0x2000, False, perm=PERM_WRITE))
    assert h.groups == [] and h.sent == []
    h.iopf.report(h.dev, fault(3, 0x3000, True))
    (g,) = h.groups
    assert [f.addr for f in g.faults] == [0x1000, 0x2000, 0x3000]
    assert g.last.grpid == 3 and g.domain is h.domain
    h.iopf.report(h.dev, fault(7, 0xA000, True))
    assert [f.addr for f in h.groups[1].faults] == [0x9000, 0xA000]
    assert h.iopf.stats.requests == 5 and h.iopf.stats.groups == 2


def test_a_group_is_answered_once() -> None:
    h = Harness()
    h.iopf.report(h.dev, fault(1, 0x1000, True))
    (g,) = h.groups
    h.iopf.respond(g, RESP_SUCCESS)
    assert h.sent == [(5, 1, RESP_SUCCESS)]
    with pytest.raises(InvalidArgument, match="already answered") as e:
        h.iopf.respond(g, RESP_SUCCESS)
    assert e.value.errno == errno.EINVAL
    assert h.sent == [(5, 1, RESP_SUCCESS)] and h.iopf.stats.responses["success"] == 1


def test_bad_response_code_is_einval_and_keeps_the_group_pending() -> None:
    h = Harness()
    h.iopf.report(h.dev, fault(1, 0x1000, True))
    with pytest.raises(InvalidArgument):
        h.iopf.respond(h.groups[0], 7)
    assert h.groups[0].cookie in h.iopf.pending and h.sent == []
    h.iopf.respond(h.groups[0], RESP_INVALID)
    assert h.sent == [(5, 1, RESP_INVALID)]


def test_no_handler_answers_invalid_at_once_but_only_for_a_last_request() -> None:
    h = Harness()
    h.iopf.report(h.dev, fault(2, 0x1000, False, pasid=9))
    assert h.sent == []
    h.iopf.report(h.dev, fault(2, 0x2000, True, pasid=9))
    assert h.sent == [(9, 2, RESP_INVALID)]
    h.domain.iopf_handler = None  # a domain without a handler is the same
    h.iopf.report(h.dev, fault(4, 0x1000, True))
    assert h.sent[-1] == (5, 4, RESP_INVALID) and h.iopf.stats.unhandled == 3


def test_a_handler_error_answers_failure() -> None:
    h = Harness()

    def broken(group: IopfGroup) -> None:
        raise InvalidArgument("cannot take it")

    h.domain.iopf_handler = broken
    h.iopf.report(h.dev, fault(1, 0x1000, True))
    assert h.sent == [(5, 1, RESP_FAILURE)] and not h.iopf.pending


def test_overflow_discards_partials() -> None:
    h = Harness()
    h.iopf.report(h.dev, fault(1, 0x1000, False))
    h.iopf.report(h.dev, fault(1, 0x2000, False))
    assert h.iopf.discard_partial() == 2
    h.iopf.report(h.dev, fault(1, 0x3000, True))
    assert [f.addr for f in h.groups[0].faults] == [0x3000]
    assert h.iopf.stats.discarded == 2


def test_removing_a_pasid_answers_its_pending_groups_invalid() -> None:
    h = Harness()
    h.domains[6] = h.domain
    h.iopf.report(h.dev, fault(1, 0x1000, True))
    h.iopf.report(h.dev, fault(2, 0x1000, True, pasid=6))
    h.iopf.report(h.dev, fault(3, 0x1000, False, pasid=6))
    h.iopf.report(h.dev, fault(4, 0x1000, False))
    h.iopf.remove_device(h.dev, 6)
    assert h.sent == [(6, 2, RESP_INVALID)]
    assert h.iopf.stats.discarded == 1  # only PASID 6's partial request
    h.iopf.remove_device(h.dev)
    assert h.sent[-1] == (5, 1, RESP_INVALID) and not h.iopf.pending
    assert h.iopf.stats.discarded == 2
