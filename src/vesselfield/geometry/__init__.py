"""C-arm cone-beam geometry: views, rays, geometry files and DICOM XA headers.

See ``docs/geometry.md`` for the convention. ``geometry_from_dicom`` imports pydicom only when called.
"""

from vesselfield.geometry.cone_beam import (
    ConeBeamView,
    Geometry,
    check_views_see_volume,
    default_geometry,
    load_geometry,
    save_geometry,
)
from vesselfield.geometry.dicom import geometry_from_dicom

__all__ = [
    "ConeBeamView",
    "Geometry",
    "check_views_see_volume",
    "default_geometry",
    "geometry_from_dicom",
    "load_geometry",
    "save_geometry",
]
