"""The object table: ids, publication, references and leaf-first teardown
(drivers/iommu/iommufd/main.c: _iommufd_object_alloc, iommufd_object_finalize/abort,
iommufd_get_object, iommufd_object_remove, iommufd_fops_release)."""

from __future__ import annotations

import errno

import pytest

from iommusim.errors import Busy, ModelError, NotFound
from iommusim.sw.iommufd import objects
from iommusim.sw.iommufd.objects import IommufdObject, ObjectTable, ObjType


class Holder(IommufdObject):
    """Stands for an object that depends on another (an HWPT on its IOAS)."""

    __slots__ = ("log", "target")
    type = ObjType.HWPT_PAGING

    def __init__(self, target: IommufdObject | None, log: list[int]) -> None:
        super().__init__()
        self.target = target
        self.log = log
        if target is not None:
            ObjectTable.inc_users(target)

    def destroy(self) -> None:
        self.log.append(self.id)
        if self.target is not None:
            ObjectTable.dec_users(self.target)


def _new(t: ObjectTable, target: IommufdObject | None = None, log: list[int] | None = None):
    o = Holder(target, [] if log is None else log)
    t.reserve(o)
    t.finalize(o)
    return o


def test_ids_start_at_one_and_the_lowest_free_id_is_reused() -> None:
    t = ObjectTable()
    a, b, c = _new(t), _new(t), _new(t)
    assert (a.id, b.id, c.id) == (1, 2, 3)
    t.remove(2)
    t.remove(1)
    assert _new(t).id == 1
    assert _new(t).id == 2
    assert _new(t).id == 4


def test_a_reserved_object_is_invisible_until_finalized() -> None:
    t = ObjectTable()
    o = Holder(None, [])
    assert t.reserve(o) == 1
    assert len(t) == 1
    with pytest.raises(NotFound):
        t.get(1)
    with pytest.raises(NotFound) as info:
        t.remove(1)
    assert info.value.errno == errno.ENOENT
    t.finalize(o)
    assert t.get(1) is o
    with pytest.raises(ModelError):
        t.finalize(o)


def test_abort_destroys_and_frees_the_id() -> None:
    t = ObjectTable()
    log: list[int] = []
    o = Holder(None, log)
    t.reserve(o)
    t.abort(o)
    assert log == [1] and len(t) == 0 and o.id == 0
    assert _new(t).id == 1


def test_get_checks_the_type() -> None:
    t = ObjectTable()
    _new(t)
    assert t.get(1, ObjType.HWPT_PAGING).id == 1
    with pytest.raises(NotFound) as info:
        t.get(1, ObjType.IOAS)
    assert info.value.errno == errno.ENOENT
    with pytest.raises(NotFound):
        t.get(2)


def test_remove_of_a_used_object_is_ebusy_until_its_user_goes() -> None:
    t = ObjectTable()
    base = _new(t)
    user = _new(t, base)
    with pytest.raises(Busy) as info:
        t.remove(base.id)
    assert info.value.errno == errno.EBUSY
    assert base.users == 2 and t.get(base.id) is base
    t.remove(user.id)
    assert base.users == 1
    t.remove(base.id)
    assert len(t) == 0


def test_destroy_all_goes_leaf_first() -> None:
    t = ObjectTable()
    log: list[int] = []
    root = _new(t, None, log)  # 1
    mid = _new(t, root, log)  # 2
    _new(t, mid, log)  # 3
    _new(t, root, log)  # 4
    t.destroy_all()
    # Pass 1 in id order: 1 and 2 are held, 3 and 4 go; pass 2: 1 is still held by 2,
    # 2 goes; pass 3: 1.
    assert log == [3, 4, 2, 1]
    assert len(t) == 0


def test_destroy_all_refuses_a_reference_cycle() -> None:
    t = ObjectTable()
    a = _new(t)
    b = _new(t, a)
    ObjectTable.inc_users(b)  # a bug: a holds b and b holds a
    with pytest.raises(ModelError, match="hold each other"):
        t.destroy_all()


def test_dec_users_below_the_table_reference_is_a_model_error() -> None:
    t = ObjectTable()
    with pytest.raises(ModelError):
        ObjectTable.dec_users(_new(t))


def test_running_out_of_ids_is_ebusy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(objects, "ID_LIMIT", 2)
    t = ObjectTable()
    _new(t)
    _new(t)
    with pytest.raises(Busy) as info:
        t.reserve(Holder(None, []))
    assert info.value.errno == errno.EBUSY
    assert len(t) == 2
