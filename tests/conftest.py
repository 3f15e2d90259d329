"""Helpers shared by the test files: import them as plain functions, ``from conftest import sphere_points``.

pytest puts this folder on ``sys.path`` (there is no ``tests/__init__.py``, so the default
``prepend`` import mode applies), which is what makes ``from conftest import ...`` work in any
test file. They are plain functions rather than fixtures because most of them take arguments
(radii, seeds, grids) and several are called more than once per test.

- :func:`expect_user_error`: a CLI call that must fail as a user error (exit 2, one line).
- :func:`sphere_points`: points and outward normals on a sphere (the implicit-model fits).
- :func:`sphere_sdf`, :func:`ball`, :func:`tube`: analytic shapes as SDFs and voxel occupancies.
- :func:`modules_loaded_by`: which heavy modules a fresh interpreter loads for an import.
- :func:`write_xa_dicom`: a small, valid DICOM X-ray angiography file.
- :func:`small_two_view_geometry`: the papers' two views on a coarse grid and 256² detectors.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np


# ------------------------------------------------------------------------------------ command line
def expect_user_error(capsys, args: Sequence, pattern: str, out_dir=None) -> str:
    """Run ``vesselfield.cli.main(args)`` in-process and check that it fails as a user error.

    A user error exits with status 2 and prints exactly one line, ``error: ...``, that names the
    problem (``pattern``, matched case-insensitively as plain text) and holds no traceback.
    With ``out_dir``, nothing was written: the output folder was not even created.

    Args:
        capsys: pytest's ``capsys`` fixture of the calling test.
        args: the command-line words; paths and numbers are turned into strings.
        pattern: text the error line must contain.
        out_dir: the run's output folder, or None to skip that check.

    Returns:
        The error line, for further checks.
    """
    from vesselfield.cli import main

    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    assert pattern.lower() in err.lower(), err
    if out_dir is not None:
        out = Path(out_dir)
        if out.exists():
            held = sorted(p.name for p in out.iterdir()) if out.is_dir() else "a file"
            raise AssertionError(f"{out} was created by a failed run; it holds {held}")
    return err


# ------------------------------------------------------------------------------------ shapes
def sphere_points(n: int, radius_mm: float, center_mm=(0.0, 0.0, 0.0), seed: int = 0):
    """``n`` points on a sphere and their outward unit normals.

    Directions are normalised standard normal vectors from ``numpy.random.default_rng(seed)``:
    uniform on the sphere, and the same numbers on every machine (PCG64 and its normal sampler
    are platform independent).

    Returns:
        (points (n, 3) mm, normals (n, 3)), float64.
    """
    normals = np.random.default_rng(seed).normal(size=(n, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return np.asarray(center_mm, dtype=np.float64) + radius_mm * normals, normals


def sphere_sdf(points_mm, center_mm, radius_mm: float) -> np.ndarray:
    """Exact signed distance (mm; negative inside) of a sphere at ``points_mm`` (..., 3), any leading shape."""
    return np.linalg.norm(np.asarray(points_mm, dtype=np.float64) - np.asarray(center_mm, float), axis=-1) - radius_mm


def _occupancy(grid, sdf: np.ndarray, partial_volume: bool) -> np.ndarray:
    if partial_volume:
        # A ramp from 1 to 0 across one (smallest) voxel, centred on the surface.
        return np.clip(0.5 - sdf / float(np.min(grid.spacing)), 0.0, 1.0).astype(np.float32)
    return (sdf < 0).astype(np.float32)


def ball(grid, center_mm=(0.0, 0.0, 0.0), radius_mm: float = 6.0, *, partial_volume: bool = False) -> np.ndarray:
    """(X, Y, Z) float32 occupancy of a ball on ``grid`` (a :class:`~vesselfield.grid.VolumeGrid`).

    Binary (voxel centre strictly inside: 1) by default; with ``partial_volume`` the occupancy
    ramps linearly from 1 to 0 across one voxel (the smallest spacing) around the sphere.
    """
    return _occupancy(grid, sphere_sdf(grid.voxel_centers_mm(np.float64), center_mm, radius_mm), partial_volume)


def tube(grid, center_xy_mm, radius_mm: float, *, half_length_mm: float | None = None,
         partial_volume: bool = False) -> np.ndarray:
    """(X, Y, Z) float32 occupancy of a straight tube along z through (x, y) = ``center_xy_mm``.

    The tube runs through the whole grid, or over ``|z| <= half_length_mm`` when given (flat
    ends). Binary or partial volume as in :func:`ball` (the ramp applies to the side wall).
    """
    centres = grid.voxel_centers_mm(np.float64)
    sdf = np.linalg.norm(centres[..., :2] - np.asarray(center_xy_mm, float), axis=-1) - radius_mm
    occupancy = _occupancy(grid, sdf, partial_volume)
    if half_length_mm is not None:
        occupancy[np.abs(centres[..., 2]) > half_length_mm] = 0.0
    return occupancy


# ------------------------------------------------------------------------------------ start-up
def modules_loaded_by(code: str, modules: Iterable[str]) -> list[str]:
    """Which of ``modules`` a fresh Python interpreter holds in ``sys.modules`` after running ``code``.

    For start-up checks such as "importing vesselfield.metrics does not import torch": a
    subprocess, because this test process has imported everything already.

    Returns:
        The sorted names found (empty when the import is light).
    """
    names = sorted(set(modules))
    # The answer is the last line, so ``code`` may print (e.g. a --help text) before it.
    probe = f"{code}\nimport sys\nprint('LOADED:', *[m for m in {names!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    last = done.stdout.splitlines()[-1].split()
    assert last[0] == "LOADED:", done.stdout
    return last[1:]


# ------------------------------------------------------------------------------------ files
def write_xa_dicom(path, drop: Sequence[str] = (), **values):
    """A small, valid DICOM X-ray angiography (XA) file written with pydicom (2.4 and 3.x).

    The geometry tags default to the first view of the default geometry (primary 29.7 deg,
    secondary 0.1 deg, DSD 993 mm, DSO 757.0605 mm) on a 4 x 6 detector of 0.278 x 0.31 mm
    pixels; keyword arguments replace tags (``PositionerPrimaryAngle=2.0``) and ``drop`` leaves
    tags out.

    Returns:
        ``path``.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.12.1"  # X-Ray Angiographic Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "XA"
    tags = dict(
        PositionerPrimaryAngle=29.7,
        PositionerSecondaryAngle=0.1,
        DistanceSourceToDetector=993.0,
        DistanceSourceToPatient=757.0605,
        ImagerPixelSpacing=[0.278, 0.31],
        Rows=4,
        Columns=6,
    )
    tags.update(values)
    for key, value in tags.items():
        if key not in drop:
            setattr(ds, key, value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(int(tags["Rows"]) * int(tags["Columns"]))
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


# ------------------------------------------------------------------------------------ two views
def small_two_view_geometry():
    """The papers' two views (angles and distances of ``default_geometry``) on a 64³ grid of 1.6 mm and
    256² detectors of 0.556 mm: a quarter of the default's cost, the same field of view."""
    from vesselfield.geometry import ConeBeamView, Geometry
    from vesselfield.grid import VolumeGrid

    detector = dict(detector_shape=(256, 256), pixel_spacing_mm=(0.556, 0.556))
    return Geometry(VolumeGrid.centered((64, 64, 64), 1.6),
                    [ConeBeamView(29.7, 0.1, 993.0, 757.0605, **detector),
                     ConeBeamView(2.0, 29.0, 1055.0, 756.9934, **detector)])
