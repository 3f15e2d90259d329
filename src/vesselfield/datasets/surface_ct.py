"""Datasets of (CT image, surface mesh) pairs: the input of NUDF (image-conditioned UDFs of open surfaces).

NUDF (Sørensen et al., ISBI 2022) trains on a CT region of interest and the surface of one
structure in it (the left atrial appendage, cut open at its ostium); the surface may be open, so
it is kept as a mesh, not as a label volume. The layout follows the MSD one (docs/data.md,
"Surface datasets"):

```
DIR/dataset.json                  {"name", "description", "modality": {"0": "CT"}, "numTraining",
                                   "training": [{"image": "./imagesTr/<case>_0000.nii.gz",
                                                 "mesh": "./meshesTr/<case>.stl"}, ...]}
DIR/imagesTr/<case>_0000.nii.gz   the CT (HU), any grid our volume readers accept
DIR/meshesTr/<case>.stl           the surface, world LPS mm: the frame of the image as
                                  :func:`vesselfield.io.volumes.load_volume` reads it
```

Meshes are read with :func:`vesselfield.io.meshes.load_mesh` in LPS (STL stores float32
corners). Every case is checked when loaded: an image without voxel spacing (``.npy``, or a
NIfTI header whose affine has a zero column), a mesh without faces or area, and a mesh whose
bounding box does not overlap the image's box are one-line errors.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io.run_folder import RunSummary, write_json

DATASET_JSON = "dataset.json"
IMAGES_DIR, MESHES_DIR = "imagesTr", "meshesTr"
_CASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class SurfaceCase:
    """One case of a surface dataset: file paths only (nothing is read).

    Attributes:
        name: the case identifier.
        image_path: the CT volume file.
        mesh_path: the surface mesh file (world LPS mm).
    """

    name: str
    image_path: Path
    mesh_path: Path


@dataclass
class SurfaceDataset:
    """A surface dataset folder as read by :func:`read_surface_dataset`.

    Attributes:
        root: the folder holding ``dataset.json``.
        cases: the training cases, sorted by name.
        name: ``dataset.json``'s ``"name"`` (else the folder name).
        description: ``dataset.json``'s ``"description"`` ("" when absent).
    """

    root: Path
    cases: list[SurfaceCase]
    name: str = ""
    description: str = ""

    def case(self, name: str) -> SurfaceCase:
        """The case called ``name`` (VesselfieldError listing the names when there is none)."""
        for case in self.cases:
            if case.name == name:
                return case
        shown = ", ".join(c.name for c in self.cases[:8]) + (", ..." if len(self.cases) > 8 else "")
        raise VesselfieldError(f"surface dataset {self.root} has no case {name!r} (cases: {shown})")


@dataclass
class LoadedSurfaceCase:
    """The arrays of one case.

    Attributes:
        name: the case identifier.
        image: (X, Y, Z) float32 CT in HU (the file's units).
        grid: the image's :class:`~vesselfield.grid.VolumeGrid` (LPS mm).
        mesh: ``trimesh.Trimesh``, vertices in LPS mm on the image's frame; may be open.
    """

    name: str
    image: np.ndarray
    grid: VolumeGrid
    mesh: object


# ------------------------------------------------------------------------------- checks
def check_surface(mesh, what: str = "mesh") -> tuple[np.ndarray, np.ndarray]:
    """(V, 3) float64 vertices and (F, 3) faces of a triangle surface; VesselfieldError for a
    point cloud (no faces), non-finite vertices or zero total area."""
    vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
    if not len(faces):
        raise VesselfieldError(f"{what} has no faces: it is not a surface (a point cloud?)")
    if not np.all(np.isfinite(vertices)):
        raise VesselfieldError(f"{what} has NaN or infinite vertices")
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    if not area > 0:
        raise VesselfieldError(f"{what} has zero area: it is not a surface (degenerate triangles)")
    return vertices, faces


def check_mesh_in_image(vertices: np.ndarray, grid: VolumeGrid, what: str = "mesh") -> None:
    """VesselfieldError when the mesh's bounding box does not overlap the image's box (a mesh in
    another frame, e.g. RAS read as LPS, or in other units)."""
    lo, hi = grid.bounds_mm
    m_lo, m_hi = vertices.min(axis=0), vertices.max(axis=0)
    if np.any(m_hi < lo) or np.any(m_lo > hi):
        fmt = lambda a: "(" + ", ".join(f"{v:.1f}" for v in a) + ")"  # noqa: E731
        raise VesselfieldError(f"{what} lies outside the image: its box {fmt(m_lo)}-{fmt(m_hi)} mm does not "
                               f"overlap the image's {fmt(lo)}-{fmt(hi)} mm (another frame, e.g. RAS, or units?)")


def check_image_spacing(path: Path, what: str) -> None:
    """Refuse images without voxel spacing before :func:`load_volume` would guess or fail vaguely."""
    name = path.name.lower()
    if name.endswith(".npy"):
        raise VesselfieldError(f"{what} {path} is a .npy array: it has no voxel spacing; write NIfTI or MHA")
    if name.endswith((".nii", ".nii.gz")) and path.is_file():
        import nibabel as nib
        from nibabel.openers import ImageOpener

        # nibabel's loader silently turns a zero pixdim into 1 mm ("setting 0 dims to 1"), so the
        # header is read unchecked: without sform / qform the spacing is pixdim[1:4] alone.
        try:
            with ImageOpener(str(path)) as f:
                raw = f.read(540)
            klass = nib.Nifti2Header if int(np.frombuffer(raw[:4], "<i4")[0]) in (540, 469893120) else nib.Nifti1Header
            header = klass.from_fileobj(io.BytesIO(raw), check=False)
            if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
                spacing = np.asarray(header["pixdim"][1:4], dtype=np.float64)
            else:
                spacing = np.linalg.norm(np.asarray(header.get_best_affine(), dtype=np.float64)[:3, :3], axis=0)
        except Exception as exc:  # nibabel raises many types for a damaged file
            raise VesselfieldError(f"cannot read {what} {path}: {exc}") from None
        if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise VesselfieldError(f"{what} {path} has no voxel spacing (zero or missing in its header: "
                                   f"{' '.join(f'{s:g}' for s in spacing)} mm)")


# ------------------------------------------------------------------------------- reading
def read_surface_dataset(root) -> SurfaceDataset:
    """The cases of a surface dataset folder (paths only; every listed file must exist)."""
    import json

    root = Path(root)
    json_path = root / DATASET_JSON
    if not root.is_dir():
        raise VesselfieldError(f"surface dataset folder {root} does not exist")
    if not json_path.is_file():
        raise VesselfieldError(f"{root} has no {DATASET_JSON}: not a surface dataset")
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise VesselfieldError(f"cannot read {json_path}: {exc}") from None
    training = meta.get("training") if isinstance(meta, dict) else None
    if not isinstance(training, list) or not training:
        raise VesselfieldError(f"{json_path}: 'training' must be a non-empty list of "
                               "{\"image\": ..., \"mesh\": ...}")
    cases = []
    for index, entry in enumerate(training):
        if not isinstance(entry, dict):
            raise VesselfieldError(f"{json_path}: training entry {index} must be an object, got {entry!r}")
        paths = {}
        for key in ("image", "mesh"):
            value = entry.get(key)
            if not isinstance(value, str) or not value.strip():
                raise VesselfieldError(f"{json_path}: training entry {index} has no file name under {key!r}")
            path = Path(value.strip())
            paths[key] = path if path.is_absolute() else root / path
        name = paths["mesh"].name[: -len(paths["mesh"].suffix)]
        for key, path in paths.items():
            if not path.is_file():
                raise VesselfieldError(f"{json_path} lists {key} {path} for case {name}, but it does not exist")
        cases.append(SurfaceCase(name, paths["image"], paths["mesh"]))
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise VesselfieldError(f"{json_path}: case names repeat ({', '.join(names)})")
    return SurfaceDataset(root, sorted(cases, key=lambda c: c.name), str(meta.get("name") or root.name),
                          str(meta.get("description") or ""))


def load_surface_case(dataset_or_case, name: str | None = None) -> LoadedSurfaceCase:
    """Read and check one case: ``load_surface_case(case)`` or ``load_surface_case(dataset, name)``
    (a dataset with a single case needs no name).

    Raises VesselfieldError for an image without spacing, a mesh that is not a surface, and a
    mesh outside the image's box.
    """
    from vesselfield.io.meshes import load_mesh
    from vesselfield.io.volumes import load_volume

    if isinstance(dataset_or_case, SurfaceDataset):
        if name is None:
            if len(dataset_or_case.cases) != 1:
                raise VesselfieldError(f"surface dataset {dataset_or_case.root} has {len(dataset_or_case.cases)} "
                                       "cases: name the one to load")
            case = dataset_or_case.cases[0]
        else:
            case = dataset_or_case.case(name)
    elif isinstance(dataset_or_case, SurfaceCase):
        case = dataset_or_case
    else:
        raise VesselfieldError(f"expected a SurfaceDataset or SurfaceCase, got {type(dataset_or_case).__name__}")
    what = f"image of case {case.name}"
    check_image_spacing(Path(case.image_path), what)
    image, grid = load_volume(case.image_path, what=what)
    image = np.asarray(image, dtype=np.float32)
    if not np.all(np.isfinite(image)):
        raise VesselfieldError(f"{what} {case.image_path} holds NaN or infinite values")
    mesh = load_mesh(case.mesh_path, frame="LPS")
    vertices, _ = check_surface(mesh, f"mesh {case.mesh_path}")
    check_mesh_in_image(vertices, grid, f"mesh {case.mesh_path}")
    return LoadedSurfaceCase(case.name, image, grid, mesh)


# ------------------------------------------------------------------------------- writing
def _unpack(case) -> tuple:
    if isinstance(case, LoadedSurfaceCase):
        return case.name, case.image, case.grid, case.mesh
    try:
        name, image, grid, mesh = case
    except (TypeError, ValueError):
        raise VesselfieldError("each case must be a LoadedSurfaceCase or a (name, image, grid, mesh) tuple") from None
    return name, image, grid, mesh


def write_surface_dataset(out, cases: Iterable, *, name: str | None = None, description: str = "",
                          vesselfield: dict | None = None, progress: bool = False,
                          verb: str = "data surfaces") -> RunSummary:
    """Write (image, mesh) cases in the surface layout (module docstring) into the new folder ``out``.

    Args:
        out: the dataset folder; it must not exist or be empty. Everything is written into a
            scratch folder next to it and renamed into place (``msd.staged_folder``), so a failure
            leaves nothing behind.
        cases: :class:`LoadedSurfaceCase` or ``(name, image (X, Y, Z), grid, mesh)`` tuples; a
            generator keeps one case in memory. Images are written float32; meshes as STL (LPS
            mm, float32 corners).
        name, description: ``dataset.json`` fields (name defaults to the folder name).
        vesselfield: an optional provenance block written under ``"vesselfield"``.
        progress: show a progress bar (stderr).
        verb: the summary's command name.

    Each case is checked as :func:`load_surface_case` checks it before anything is written.
    """
    from tqdm.auto import tqdm

    from vesselfield.datasets.msd import staged_folder
    from vesselfield.io.meshes import save_mesh
    from vesselfield.io.volumes import save_volume

    out = Path(out)
    entries, names, files = [], [], {}
    with staged_folder(out) as scratch:
        (scratch / IMAGES_DIR).mkdir()
        (scratch / MESHES_DIR).mkdir()
        for case in tqdm(cases, desc=out.name, unit="case", disable=not progress, dynamic_ncols=True, delay=1.0):
            case_name, image, grid, mesh = _unpack(case)
            if not isinstance(case_name, str) or not _CASE_NAME.match(case_name):
                raise VesselfieldError(f"case name {case_name!r} must be letters, digits, '_', '-' or '.'")
            if case_name in names:
                raise VesselfieldError(f"case name {case_name!r} is given twice")
            if not isinstance(grid, VolumeGrid):
                raise VesselfieldError(f"case {case_name}: grid must be a VolumeGrid, got {type(grid).__name__}")
            image = np.asarray(image, dtype=np.float32)
            grid.check_array(image, f"image of case {case_name}")
            if not np.all(np.isfinite(image)):
                raise VesselfieldError(f"image of case {case_name} holds NaN or infinite values")
            vertices, _ = check_surface(mesh, f"mesh of case {case_name}")
            check_mesh_in_image(vertices, grid, f"mesh of case {case_name}")
            image_rel = f"{IMAGES_DIR}/{case_name}_0000.nii.gz"
            mesh_rel = f"{MESHES_DIR}/{case_name}.stl"
            save_volume(scratch / image_rel, image, grid)
            save_mesh(scratch / mesh_rel, mesh)
            entries.append({"image": "./" + image_rel, "mesh": "./" + mesh_rel})
            names.append(case_name)
        if not entries:
            raise VesselfieldError(f"no cases to write to {out}")
        meta = {"name": name or out.name, "description": description, "tensorImageSize": "3D",
                "modality": {"0": "CT"}, "frame": "LPS mm", "numTraining": len(entries), "training": entries}
        if vesselfield:
            meta["vesselfield"] = dict(vesselfield)
        write_json(scratch / DATASET_JSON, meta)
    files["dataset"] = out / DATASET_JSON
    return RunSummary(verb=verb, out_dir=out, files=files,
                      lines=[f"{len(names)} surface case(s): {', '.join(names[:6])}"
                             f"{', ...' if len(names) > 6 else ''}"],
                      details={"cases": names})


__all__ = [
    "LoadedSurfaceCase",
    "SurfaceCase",
    "SurfaceDataset",
    "check_mesh_in_image",
    "check_surface",
    "load_surface_case",
    "read_surface_dataset",
    "write_surface_dataset",
]
