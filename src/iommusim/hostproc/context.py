"""The iommufd context the server opens for each ``open("/dev/iommu")``.

:class:`HostIommufdFile` is :class:`~iommusim.sw.iommufd.file.IommufdFile` with one change
to its release, until the model has it: ``IommufdFile.ctx_put`` first runs
``DeviceApi.release_all`` -- what closing each VFIO device file does -- and that also
unbinds the devices the selftest's SELFTEST objects own, whose destroy then fails
(NoDevice) and leaves the rest of the table, and the mock devices, behind. The kernel's
``iommufd_fops_release`` only destroys objects, and ``iommufd_selftest_destroy`` detaches
and unbinds its own device; SELFTEST objects are leaves, so destroying them first is the
kernel's result.
"""

from __future__ import annotations

from iommusim.sw.iommufd.file import IommufdFile
from iommusim.sw.iommufd.objects import ObjType

__all__ = ["HostIommufdFile"]


class HostIommufdFile(IommufdFile):
    __slots__ = ()

    def ctx_put(self) -> None:
        if self._refs == 1:
            for obj in list(self.objects):
                if obj.type is ObjType.SELFTEST and obj.users == 1:
                    self.objects.remove(obj.id)
        super().ctx_put()
