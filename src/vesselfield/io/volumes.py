"""Volumes in and out: NIfTI, MetaImage, NRRD and NumPy, always as (x, y, z) arrays in LPS mm.

Every reader returns ``(array, VolumeGrid)`` with the array indexed ``[i, j, k]`` along world
``(x, y, z)`` (LPS) and positive spacing, so that ``world = origin + index * spacing``:

- NIfTI (nibabel) stores an index -> RAS affine; LPS = diag(-1, -1, 1) @ RAS.
- MetaImage / NRRD (SimpleITK) carry an LPS direction matrix; SimpleITK's NumPy view is
  (z, y, x) and is transposed.
- A direction that is a signed permutation (flips, axis swaps; vmtk writes diag(-1, -1, 1)) is
  undone by flipping/transposing the array, and the origin moves to the world position of the
  new voxel (0, 0, 0). A truly oblique direction (off by more than 1e-3) is resampled onto the
  axis-aligned LPS grid that covers it (``oblique="resample"``, the default: nearest neighbour for
  integer label volumes, trilinear otherwise, zero outside) or rejected (``oblique="error"``).
- ``.npy`` holds no geometry: the grid comes from the caller.

NaN/Inf are not checked here; callers that need finite data check it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io.atomic import atomic_path

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES + (".npy",)
_OBLIQUE_TOL = 1e-3
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def volume_format(path) -> str:
    """``"nifti" | "itk" | "npy"`` from the file name; VesselfieldError for anything else."""
    name = Path(path).name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(ITK_SUFFIXES):
        return "itk"
    if name.endswith(".npy"):
        return "npy"
    raise VesselfieldError(f"unknown volume file type {Path(path).name!r}: use one of {', '.join(VOLUME_SUFFIXES)}")


def _as_3d(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Drop trailing singleton axes (time, channel); anything but 3D left over is an error."""
    shape = array.shape
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        extra = " (more than one channel or time point)" if array.ndim > 3 else ""
        raise VesselfieldError(f"{what} {path} must be 3D, got shape {shape}{extra}")
    return array


def resample_oblique(array: np.ndarray, linear: np.ndarray, origin) -> tuple[np.ndarray, VolumeGrid]:
    """Resample an oblique volume onto the axis-aligned LPS grid covering its voxel centres.

    Each world axis takes the finest file spacing (no resolution is lost); integer arrays (labels)
    are sampled nearest-neighbour so that no new label appears, others trilinearly; zero outside.
    """
    from scipy import ndimage

    linear = np.asarray(linear, dtype=np.float64)
    origin = np.asarray(origin, dtype=np.float64)
    corners = np.array([[i, j, k] for i in (0, array.shape[0] - 1) for j in (0, array.shape[1] - 1)
                        for k in (0, array.shape[2] - 1)], dtype=np.float64)
    world = corners @ linear.T + origin
    spacing = np.full(3, np.linalg.norm(linear, axis=0).min())
    lo, hi = world.min(0), world.max(0)
    shape = np.floor((hi - lo) / spacing + 1e-6).astype(int) + 1
    grid = VolumeGrid(tuple(shape), tuple(spacing), tuple(lo))
    inverse = np.linalg.inv(linear)
    out = np.empty(tuple(shape), dtype=array.dtype)
    integer = array.dtype.kind in "biu"
    axes = grid.axes_mm()
    for k in range(shape[2]):  # slice by slice keeps the coordinate arrays small
        x, y = np.meshgrid(axes[0], axes[1], indexing="ij")
        pts = np.stack([x, y, np.full_like(x, axes[2][k])], axis=0).reshape(3, -1)
        idx = inverse @ (pts - origin[:, None])
        vals = ndimage.map_coordinates(array, idx, order=0 if integer else 1, mode="constant", cval=0)
        out[:, :, k] = vals.reshape(shape[0], shape[1])
    return out, grid


def axis_aligned(
    array: np.ndarray, linear: np.ndarray, origin, path, what: str = "volume", oblique: str = "resample"
) -> tuple[np.ndarray, VolumeGrid]:
    """Turn a file's index -> LPS mapping into our axis-aligned layout.

    Args:
        array: (I, J, K) array in file index order.
        linear: (3, 3) LPS matrix whose column ``c`` is the world step (mm) of file axis ``c``
            (direction cosines times spacing).
        origin: (3,) LPS mm position of file voxel (0, 0, 0).

    Returns the array flipped/transposed so that axis ``a`` runs along +world axis ``a``, and its
    grid. Raises VesselfieldError when ``linear`` is not a scaled signed permutation.
    """
    linear = np.asarray(linear, dtype=np.float64)
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(linear)):
        raise VesselfieldError(f"{what} {path} has a degenerate voxel-to-world matrix")
    cosines = linear / spacing
    world_axis = np.argmax(np.abs(cosines), axis=0)  # file axis c runs along world axis world_axis[c]
    snapped = np.zeros((3, 3))
    snapped[world_axis, np.arange(3)] = np.sign(cosines[world_axis, np.arange(3)])
    if sorted(world_axis) != [0, 1, 2] or np.abs(cosines - snapped).max() > _OBLIQUE_TOL:
        if oblique == "resample":
            return resample_oblique(array, linear, origin)
        shown = " ".join(f"{v:.4g}" for v in cosines.T.ravel())
        raise VesselfieldError(
            f"{what} {path} is oblique (direction {shown}); resample it to an axis-aligned grid first"
        )
    signs = snapped[world_axis, np.arange(3)]
    # The new voxel (0, 0, 0) is the old corner at the low end of every world axis.
    corner = np.where(signs < 0, np.array(array.shape) - 1, 0)
    new_origin = np.asarray(origin, dtype=np.float64) + linear @ corner
    flips = tuple(c for c in range(3) if signs[c] < 0)
    out = np.flip(array, axis=flips) if flips else array
    file_axis_of = np.argsort(world_axis)  # world axis a comes from file axis file_axis_of[a]
    out = np.ascontiguousarray(np.transpose(out, file_axis_of))
    # The step along a world axis is the one non-zero entry of the column (exact for axis-aligned files).
    steps = np.abs(linear[world_axis, np.arange(3)])
    return out, VolumeGrid(out.shape, tuple(steps[file_axis_of]), tuple(new_origin))


def _nifti_decimal(values: np.ndarray) -> np.ndarray:
    # NIfTI stores geometry as float32. Reading each number back as the shortest decimal that
    # rounds to the same float32 recovers what was written (0.878906, -12.25, ...) instead of
    # its float32 neighbour, so grids with values of <= 7 significant digits round-trip exactly.
    return np.array([float(str(np.float32(v))) for v in np.ravel(values)]).reshape(np.shape(values))


def _load_nifti(path: Path, what: str, oblique: str) -> tuple[np.ndarray, VolumeGrid]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        array = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # nibabel raises many types for a damaged file
        raise VesselfieldError(f"cannot read {what} {path}: {exc}") from None
    array = _as_3d(np.asarray(array), path, what)
    affine = _nifti_decimal(affine)
    linear = _LPS_FROM_RAS @ affine[:3, :3]
    origin = _LPS_FROM_RAS @ affine[:3, 3]
    return axis_aligned(array, linear, origin, path, what, oblique)


def _load_itk(path: Path, what: str, oblique: str) -> tuple[np.ndarray, VolumeGrid]:
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(img)
    except Exception as exc:  # ITK exceptions are RuntimeError; be broad like for nibabel
        raise VesselfieldError(f"cannot read {what} {path}: {exc}") from None
    if img.GetNumberOfComponentsPerPixel() > 1:
        raise VesselfieldError(
            f"{what} {path} must be 3D with one channel, got {img.GetNumberOfComponentsPerPixel()} components per voxel"
        )
    dim = img.GetDimension()
    # SimpleITK's array is (..., z, y, x); reverse to file index order (x, y, z, ...).
    array = _as_3d(np.transpose(array), path, what)
    if dim > 3:
        # Dropping trailing singleton axes keeps the leading 3x3 block of the direction.
        direction = np.array(img.GetDirection()).reshape(dim, dim)[:3, :3]
    else:
        direction = np.array(img.GetDirection()).reshape(3, 3)
    linear = direction @ np.diag(np.array(img.GetSpacing()[:3], dtype=np.float64))
    return axis_aligned(array, linear, img.GetOrigin()[:3], path, what, oblique)


def load_volume(
    path, grid: VolumeGrid | None = None, *, what: str = "volume", oblique: str = "resample"
) -> tuple[np.ndarray, VolumeGrid]:
    """Read a 3D volume as ``(array (X, Y, Z), VolumeGrid)`` in LPS mm (see the module docstring).

    Args:
        path: ``.nii``/``.nii.gz``, ``.mha``/``.mhd``, ``.nrrd``/``.nhdr`` or ``.npy``.
        grid: required for ``.npy`` (its shape must match). For files with a header it is checked
            against the file's own geometry (shape, and spacing/origin within 1e-3 mm).
        what: how messages name the volume ("label volume", "CT", ...).
        oblique: ``"resample"`` (default) puts an oblique file onto the axis-aligned grid covering
            it (:func:`resample_oblique`); ``"error"`` refuses it.

    The array keeps the file's dtype (NIfTI scaling applied by nibabel when the header asks).
    """
    path = Path(path)
    if oblique not in ("resample", "error"):
        raise VesselfieldError(f"oblique must be 'resample' or 'error', got {oblique!r}")
    fmt = volume_format(path)
    if not path.is_file():
        raise VesselfieldError(f"{what} file {path} does not exist")
    if fmt == "npy":
        if grid is None:
            raise VesselfieldError(
                f"{what} {path} is a .npy array without geometry: pass a grid via --spacing/--origin or a geometry file"
            )
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise VesselfieldError(f"cannot read {what} {path}: {exc}") from None
        array = _as_3d(array, path, what)
        grid.check_array(array, f"{what} {path}")
        return array, grid
    loader = _load_nifti if fmt == "nifti" else _load_itk
    array, file_grid = loader(path, what, oblique)
    if grid is not None:
        grid.require_same(file_grid, f"the given grid and {what} {path}")
    return array, file_grid


def nifti_image(array: np.ndarray, grid: VolumeGrid, what: str = "volume"):
    """A ``nibabel.Nifti1Image`` of ``array`` on ``grid``: RAS qform and sform (code 1, scanner), mm.

    The array's dtype is kept (an explicit dtype keeps e.g. int64 labels, which nibabel refuses
    to guess); ``what`` names the volume in the error of an array NIfTI cannot hold.
    """
    import nibabel as nib

    affine = grid.affine_ras
    try:
        img = nib.Nifti1Image(array, affine, dtype=array.dtype)
    except Exception as exc:
        raise VesselfieldError(f"cannot write {what} as NIfTI: {exc}") from None
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units(xyz="mm")
    return img


def _save_nifti(path: Path, array: np.ndarray, grid: VolumeGrid) -> None:
    import nibabel as nib

    img = nifti_image(array, grid, str(path))
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def _save_itk(path: Path, array: np.ndarray, grid: VolumeGrid) -> None:
    import SimpleITK as sitk

    try:
        img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array)))
    except Exception as exc:
        raise VesselfieldError(f"cannot write {path}: {exc}") from None
    img.SetSpacing(grid.spacing_mm)
    img.SetOrigin(grid.origin_mm)
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    # .mhd/.nhdr headers name their data file, so write under the final name in a scratch
    # folder and move each file into place, the header last.
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as scratch:
        sitk.WriteImage(img, str(Path(scratch) / path.name), True)
        for made in sorted(Path(scratch).iterdir(), key=lambda p: p.name == path.name):
            with atomic_path(path.parent / made.name) as tmp:
                os.replace(made, tmp)


def save_volume(path, array, grid: VolumeGrid) -> None:
    """Write a 3D (X, Y, Z) array on ``grid`` (LPS mm) atomically; ``load_volume`` reads it back as is.

    NIfTI gets a RAS qform and sform (code 1, scanner) and mm units; MetaImage/NRRD an identity
    direction and zlib compression; ``.npy`` only the array. bool arrays are written as uint8.
    NIfTI holds geometry in float32: spacing/origin values with up to 7 significant digits come
    back exactly, others within float32 precision.
    """
    path = Path(path)
    fmt = volume_format(path)
    array = np.asarray(array)
    if array.ndim != 3:
        raise VesselfieldError(f"volume to write to {path} must be 3D, got shape {array.shape}")
    grid.check_array(array, f"volume to write to {path}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if fmt == "npy":
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, array)
    elif fmt == "nifti":
        _save_nifti(path, array, grid)
    else:
        _save_itk(path, array, grid)


def save_volume_like(path, array, grid: VolumeGrid, reference) -> bool:
    """Write ``array`` (on ``grid``, as :func:`load_volume` read ``reference``) with ``reference``'s own header.

    Outputs that other tools overlay on the input (a predicted SDF or occupancy over the CT)
    should have the input's shape and voxel-to-world matrix, not just the same world geometry:
    for a NIfTI reference the array is put back into the file's voxel order (the flips and axis
    order :func:`axis_aligned` undid) and written with the reference's affine, qform and sform.
    Other formats, or an oblique reference (which was resampled on reading), are written with
    :func:`save_volume` on ``grid``.

    Returns:
        True when the reference's header was used.
    """
    import nibabel as nib

    path, reference = Path(path), Path(reference)
    array = np.asarray(array)
    if volume_format(path) != "nifti" or volume_format(reference) != "nifti":
        save_volume(path, array, grid)
        return False
    ref = nib.load(str(reference))
    affine = np.asarray(ref.affine, dtype=np.float64)
    linear = _LPS_FROM_RAS @ _nifti_decimal(affine)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    cosines = linear / spacing
    world_axis = np.argmax(np.abs(cosines), axis=0)
    snapped = np.zeros((3, 3))
    snapped[world_axis, np.arange(3)] = np.sign(cosines[world_axis, np.arange(3)])
    if sorted(world_axis) != [0, 1, 2] or np.abs(cosines - snapped).max() > _OBLIQUE_TOL:
        save_volume(path, array, grid)
        return False
    grid.check_array(array, f"volume to write to {path}")
    # axis_aligned did out = transpose(flip(file, flips), argsort(world_axis)); undo both.
    signs = snapped[world_axis, np.arange(3)]
    file_order = np.transpose(array, world_axis)
    flips = tuple(c for c in range(3) if signs[c] < 0)
    file_order = np.ascontiguousarray(np.flip(file_order, axis=flips) if flips else file_order)
    if tuple(file_order.shape) != tuple(ref.shape[:3]):
        raise VesselfieldError(f"the volume to write to {path} has shape {file_order.shape}, not the reference "
                               f"{reference}'s {tuple(ref.shape[:3])}")
    if file_order.dtype == bool:
        file_order = file_order.astype(np.uint8)
    header = ref.header.copy()
    header.set_data_dtype(file_order.dtype)
    img = nib.Nifti1Image(file_order, ref.affine, header=header)
    img.header.set_slope_inter(1.0, 0.0)
    img.set_qform(ref.get_qform(), code=int(ref.header["qform_code"]) or 1)
    img.set_sform(ref.get_sform(), code=int(ref.header["sform_code"]) or 1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return True
