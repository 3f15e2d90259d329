"""Cone-beam views from X-ray angiography (XA) DICOM headers.

Tag mapping (DICOM PS3.3, C.8.7.5 XA Positioner and C.8.7.1 X-Ray Acquisition; the DICOM sign
conventions are ours: LAO and cranial positive, DistanceSourceToPatient is measured to the
isocenter):

=========================== =========== ===========================================
DICOM keyword               tag         ConeBeamView field
=========================== =========== ===========================================
PositionerPrimaryAngle      (0018,1510) primary_angle_deg
PositionerSecondaryAngle    (0018,1511) secondary_angle_deg
DistanceSourceToDetector    (0018,1110) source_to_detector_mm
DistanceSourceToPatient     (0018,1111) source_to_isocenter_mm
Rows, Columns               (0028,0010/0011) detector_shape
ImagerPixelSpacing          (0018,1164) pixel_spacing_mm (row, column)
=========================== =========== ===========================================

Only single-position acquisitions are read: rotational runs (per-frame angle increments) and
Enhanced XA functional groups are not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from vesselfield.errors import VesselfieldError
from vesselfield.geometry.cone_beam import ConeBeamView, Geometry, default_geometry
from vesselfield.grid import VolumeGrid

__all__ = ["geometry_from_dicom", "view_from_dicom"]

_TAGS = {
    "PositionerPrimaryAngle": "(0018,1510)",
    "PositionerSecondaryAngle": "(0018,1511)",
    "DistanceSourceToDetector": "(0018,1110)",
    "DistanceSourceToPatient": "(0018,1111)",
    "ImagerPixelSpacing": "(0018,1164)",
    "Rows": "(0028,0010)",
    "Columns": "(0028,0011)",
}


def view_from_dicom(path) -> ConeBeamView:
    """One :class:`ConeBeamView` from one XA DICOM file (header only, pixels are not read).

    Raises:
        VesselfieldError: missing or non-DICOM file, a missing or empty tag (named, with the
            file), or values that make an impossible view.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except FileNotFoundError:
        raise VesselfieldError(f"DICOM file not found: {path}") from None
    except IsADirectoryError:
        raise VesselfieldError(f"{path} is a folder, not a DICOM file") from None
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as err:
        raise VesselfieldError(f"{path} is not a readable DICOM file ({type(err).__name__})") from None

    values = {}
    for keyword, tag in _TAGS.items():
        value = ds.get(keyword)
        is_sequence = not isinstance(value, str) and hasattr(value, "__len__")
        empty = value is None or value == "" or (is_sequence and not len(value))
        if empty:
            raise VesselfieldError(f"{path}: DICOM tag {keyword} {tag} is missing or empty")
        values[keyword] = value
    spacing = values["ImagerPixelSpacing"]
    try:
        return ConeBeamView(
            primary_angle_deg=float(values["PositionerPrimaryAngle"]),
            secondary_angle_deg=float(values["PositionerSecondaryAngle"]),
            source_to_detector_mm=float(values["DistanceSourceToDetector"]),
            source_to_isocenter_mm=float(values["DistanceSourceToPatient"]),
            detector_shape=(int(values["Rows"]), int(values["Columns"])),
            pixel_spacing_mm=(float(spacing[0]), float(spacing[1])),
        )
    except VesselfieldError as err:
        raise VesselfieldError(f"{path}: {err}") from None
    except (TypeError, ValueError, IndexError) as err:
        raise VesselfieldError(f"{path}: unreadable positioner or detector tag value ({err})") from None


def geometry_from_dicom(paths, volume: VolumeGrid | None = None) -> Geometry:
    """A :class:`Geometry` with one view per XA DICOM file, in the order given.

    Args:
        paths: one path or a sequence of paths to XA DICOM files.
        volume: the reconstruction grid; defaults to the volume of :func:`default_geometry`
            (128³ at 0.8 mm centred on the isocenter).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = list(paths) if isinstance(paths, Iterable) else [paths]
    if not paths:
        raise VesselfieldError("geometry_from_dicom needs at least one DICOM file")
    views = [view_from_dicom(p) for p in paths]
    return Geometry(default_geometry().volume if volume is None else volume, views)
