"""CT datasets in the Medical Segmentation Decathlon (MSD) and nnU-Net v2 raw layouts.

Two published layouts are read, as they are (see docs/data.md, "CT datasets"):

- **MSD** (Antonelli et al., "The Medical Segmentation Decathlon", Nature Communications 2022):
  ``dataset.json`` with ``"labels": {"0": "background", "1": "Vessel", "2": "Tumour"}`` (value ->
  name; keys are strings of numbers), ``"modality": {"0": "CT"}`` and
  ``"training": [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}, ...]``. Files
  listed without the ``_0000`` channel suffix that exist only with it (nnU-Net v1 wrote such
  lists) are found. The macOS ``._*`` files of the MSD archives are ignored.
- **nnU-Net v2** (Isensee et al., Nature Methods 2021; the v2 "dataset format"): ``dataset.json``
  with ``"labels": {"background": 0, "vessel": 1}`` (name -> value), ``"channel_names"``,
  ``"file_ending"`` and ``"numTraining"`` and no case list: the images are
  ``imagesTr/{case}_0000{file_ending}``, the labels ``labelsTr/{case}{file_ending}``.

Only single-channel datasets are read (one ``_0000`` image per case); MSD's multi-modal tasks
(4D images) and region-based nnU-Net labels are refused with a one-line error.

The vessel class is chosen by :func:`choose_label`: by name or number, by default the label
named like "vessel" (MSD Task08 calls it "Vessel"), else every non-zero label. Volumes come in
through :func:`vesselfield.io.volumes.load_volume`: (X, Y, Z) arrays in LPS mm.

Datasets made by vesselfield (``data sparsify``, ``data synth-ct``) are MSD layouts with a
``"vesselfield"`` block in ``dataset.json`` (``sparsified_every``, ``offset``, ``source``,
``label_values``) and, per training entry, optional ``"sdf"`` (``sdfTr/{case}.nii.gz``: the
exact signed distance of the dense label, mm, negative inside, sampled at the kept slices) and
``"dense_label"`` (``labelsDense/{case}.nii.gz``: the dense binary vessel mask).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io.run_folder import RunSummary, write_json
from vesselfield.io.volumes import VOLUME_SUFFIXES, load_volume, save_volume
from vesselfield.validate import require_finite

DATASET_JSON = "dataset.json"
#: The block of ``dataset.json`` that vesselfield writes and reads back.
VESSELFIELD_BLOCK = "vesselfield"
#: Extra per-case volumes of vesselfield datasets: training-entry key -> folder.
EXTRA_FOLDERS = {"sdf": "sdfTr", "dense_label": "labelsDense"}
#: The word a label name must contain to be the default vessel class.
VESSEL_WORD = "vessel"
#: Labels of every binary vessel dataset vesselfield writes (value -> name).
BINARY_LABELS = {0: "background", 1: "vessel"}
#: nnU-Net asks users to number their own datasets from 500 (its docs); ids have 3 digits.
DEFAULT_NNUNET_ID = 500
_FILE_ENDINGS = tuple(s for s in VOLUME_SUFFIXES if s != ".npy")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


# ------------------------------------------------------------------------------- data classes
@dataclass(frozen=True)
class MsdCase:
    """One training case of a dataset: file paths only (nothing is read).

    Attributes:
        name: the case identifier (file name without suffix and ``_0000``).
        image: the CT volume file.
        label: the label volume file, or None (``require_labels=False`` and none listed).
        sdf: the dense-derived signed distance (mm, negative inside) on the image's grid, or None.
        dense_label: the binary vessel mask before sparsifying (finer z grid), or None.
    """

    name: str
    image: Path
    label: Path | None = None
    sdf: Path | None = None
    dense_label: Path | None = None


@dataclass
class MsdDataset:
    """A dataset folder as read by :func:`read_msd_dataset`.

    Attributes:
        root: the dataset folder (the one holding ``dataset.json``).
        name: ``dataset.json``'s ``"name"``, else the folder name.
        cases: the training cases, sorted by name.
        labels: label value -> name, as published (background included).
        label_values: the label values that count as vessel.
        label_note: one line saying which label counts as vessel and why (runs print it).
        layout: ``"msd"`` (a ``"training"`` list) or ``"nnunet"`` (files found by ``file_ending``).
        channel: the one modality / channel name (``"CT"`` when the file names none).
        sparsified_every: K when made by ``data sparsify`` (every K-th axial slice kept), else None.
        sparsify_offset: the first kept slice of the dense source, or None.
        provenance: the ``"vesselfield"`` block of ``dataset.json`` as read ({} when absent).
    """

    root: Path
    name: str
    cases: list[MsdCase]
    labels: dict[int, str]
    label_values: tuple[int, ...]
    label_note: str
    layout: str
    channel: str = "CT"
    sparsified_every: int | None = None
    sparsify_offset: int | None = None
    provenance: dict = field(default_factory=dict)

    @property
    def json_path(self) -> Path:
        return self.root / DATASET_JSON

    def case(self, name: str) -> MsdCase:
        """The case called ``name`` (VesselfieldError listing the names when there is none)."""
        for case in self.cases:
            if case.name == name:
                return case
        shown = ", ".join(c.name for c in self.cases[:8]) + (", ..." if len(self.cases) > 8 else "")
        raise VesselfieldError(f"dataset {self.root} has no case {name!r} (cases: {shown})")


@dataclass
class LoadedCase:
    """The arrays of one case, on one grid.

    Attributes:
        image: (X, Y, Z) float32 CT, in the file's units (HU for CT scans).
        mask: (X, Y, Z) bool vessel mask (the chosen label values), or None without a label.
        grid: the image's :class:`~vesselfield.grid.VolumeGrid` (LPS mm); label and SDF share it.
        sdf_mm: (X, Y, Z) float32 signed distance (mm, negative inside) from ``case.sdf``, or None.
        name: the case name.
    """

    image: np.ndarray
    mask: np.ndarray | None
    grid: VolumeGrid
    sdf_mm: np.ndarray | None
    name: str


@dataclass
class CaseVolumes:
    """One case for :func:`write_msd_dataset`: arrays (X, Y, Z) on ``grid`` (LPS mm).

    Attributes:
        name: the case identifier (letters, digits, ``_ - .``).
        image: the CT; written with its dtype (bool as uint8).
        label: integer label volume (values among the dataset's labels).
        grid: the grid of ``image``, ``label`` and ``sdf``.
        sdf: optional signed distance (mm, negative inside) on ``grid`` -> ``sdfTr/``.
        dense_label: optional binary mask before sparsifying, on ``dense_grid`` -> ``labelsDense/``.
        dense_grid: the grid of ``dense_label``.
    """

    name: str
    image: np.ndarray
    label: np.ndarray
    grid: VolumeGrid
    sdf: np.ndarray | None = None
    dense_label: np.ndarray | None = None
    dense_grid: VolumeGrid | None = None


# ------------------------------------------------------------------------------- labels
def _label_text(value: int, labels: Mapping[int, str]) -> str:
    return f"{value} {labels[value]!r}"


def _label_list(labels: Mapping[int, str]) -> str:
    return ", ".join(_label_text(v, labels) for v in sorted(labels) if v != 0) or "none"


def choose_label(labels: Mapping[int, str], label: str | int | None = None) -> tuple[tuple[int, ...], str]:
    """The label values that count as vessel, and a one-line note saying why.

    Args:
        labels: value -> name of a dataset (0 is the background and never chosen).
        label: None (default rule), a name or a number (an int, or a string of digits as typed
            after ``--label``).

    Rules: a number must be a label value other than 0. A name matches case-insensitively: an
    exact name first, else the one name that contains it. None: the labels whose names contain
    "vessel" (MSD Task08: ``1 'Vessel'``); when no name does, every non-zero label counts.
    Unknown or ambiguous choices raise VesselfieldError listing the available labels.
    """
    foreground = {v: n for v, n in labels.items() if v != 0}
    if not foreground:
        raise VesselfieldError("the dataset's labels hold no class besides the background")
    available = f"available labels: {_label_list(labels)}"
    if isinstance(label, bool) or (label is not None and not isinstance(label, (str, int, np.integer))):
        raise VesselfieldError(f"label must be a name or a number, got {label!r}; {available}")
    if label is None:
        named = sorted(v for v, n in foreground.items() if VESSEL_WORD in n.lower())
        if named:
            chosen = ", ".join(_label_text(v, labels) for v in named)
            others = [v for v in sorted(foreground) if v not in named]
            verb = "counts" if len(others) == 1 else "count"
            rest = f"; {', '.join(_label_text(v, labels) for v in others)} {verb} as background" if others else ""
            return tuple(named), f"vessel = label {chosen} (named like {VESSEL_WORD!r}){rest}; --label chooses another"
        values = tuple(sorted(foreground))
        return values, (f"no label is named like {VESSEL_WORD!r}: every non-zero label counts as vessel "
                        f"({_label_list(labels)}); --label chooses one")
    text = str(label).strip()
    if isinstance(label, (int, np.integer)) or re.fullmatch(r"[+-]?\d+", text):
        value = int(text)
        if value == 0:
            raise VesselfieldError(f"label 0 is the background, not a vessel class; {available}")
        if value not in foreground:
            raise VesselfieldError(f"no label {value} in the dataset; {available}")
        return (value,), f"vessel = label {_label_text(value, labels)} (--label {value})"
    wanted = text.lower()
    exact = [v for v, n in foreground.items() if n.lower() == wanted]
    partial = [v for v, n in foreground.items() if wanted and wanted in n.lower()]
    hits = exact or partial
    if not hits:
        raise VesselfieldError(f"no label named {text!r} in the dataset; {available}")
    if len(hits) > 1:
        shown = ", ".join(_label_text(v, labels) for v in sorted(hits))
        raise VesselfieldError(f"label name {text!r} matches several labels ({shown}): give the full name or the number")
    value = hits[0]
    return (value,), f"vessel = label {_label_text(value, labels)} (--label {text!r})"


def _parse_labels(raw, json_path: Path) -> dict[int, str]:
    """MSD ``{"1": "Vessel"}`` or nnU-Net ``{"vessel": 1}`` -> ``{1: "Vessel"}``."""
    if not isinstance(raw, dict) or not raw:
        raise VesselfieldError(f"{json_path}: 'labels' must be a non-empty object")
    out: dict[int, str] = {}
    for key, value in raw.items():
        if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", str(key)):
            number, name = int(key), value  # MSD: value -> name
        elif isinstance(value, list):
            raise VesselfieldError(f"{json_path}: label {key!r} is a region ({value}): region-based nnU-Net "
                                   "labels are not supported")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer() \
                and value >= 0:
            number, name = int(value), str(key)  # nnU-Net: name -> value
        else:
            raise VesselfieldError(f"{json_path}: labels must map numbers to names (MSD) or names to numbers "
                                   f"(nnU-Net), got {key!r}: {value!r}")
        if number in out:
            raise VesselfieldError(f"{json_path}: label value {number} is given twice ({out[number]!r}, {name!r})")
        out[number] = name
    return dict(sorted(out.items()))


# ------------------------------------------------------------------------------- reading
def _strip_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _with_channel(path: Path) -> Path:
    """``x.nii.gz`` -> ``x_0000.nii.gz``."""
    stem = _strip_suffix(path.name)
    return path.with_name(stem + "_0000" + path.name[len(stem):])


def _single_channel(json_path: Path, meta: dict) -> str:
    for key in ("channel_names", "modality"):
        channels = meta.get(key)
        if channels is None:
            continue
        if not isinstance(channels, dict) or not channels:
            raise VesselfieldError(f"{json_path}: {key!r} must be an object such as {{\"0\": \"CT\"}}")
        if len(channels) > 1:
            shown = ", ".join(str(v) for v in channels.values())
            raise VesselfieldError(f"{json_path}: {len(channels)} channels ({shown}): only single-channel "
                                   "(one _0000 image per case) datasets are supported")
        return str(next(iter(channels.values())))
    return "CT"


def _check_other_channels(image: Path, case: str) -> None:
    stem = _strip_suffix(image.name)
    match = _CHANNEL.match(stem)
    # Only a "{case}_0000" file is a channel; "img_0012" of a case named so is a case number.
    if match is None or match["channel"] != "0000" or match["case"] != case:
        return
    ending = image.name[len(stem):]
    extra = sorted(p.name for p in image.parent.glob(f"{match['case']}_[0-9][0-9][0-9][0-9]{ending}")
                   if p.name != image.name and not p.name.startswith("."))
    if extra:
        raise VesselfieldError(f"case {case} has more than one channel ({image.name}, {', '.join(extra[:3])}): "
                               "only single-channel datasets are supported")


def _missing_error(json_path: Path, missing: list[tuple[str, str, Path]]):
    what, case, path = missing[0]
    more = f" ({len(missing) - 1} more missing files)" if len(missing) > 1 else ""
    return VesselfieldError(f"{json_path} lists {what} {path} for case {case}, but it does not exist{more}")


def _resolve(root: Path, entry, json_path: Path, key: str, index: int) -> Path:
    if not isinstance(entry, str) or not entry.strip():
        raise VesselfieldError(f"{json_path}: training entry {index} has no file name under {key!r}")
    path = Path(entry.strip())
    return path if path.is_absolute() else root / path


def _msd_cases(root: Path, json_path: Path, meta: dict, require_labels: bool) -> list[MsdCase]:
    training = meta["training"]
    if not isinstance(training, list):
        raise VesselfieldError(f"{json_path}: 'training' must be a list of {{\"image\": ..., \"label\": ...}}")
    cases, missing = [], []
    for index, entry in enumerate(training):
        if isinstance(entry, str):  # nnU-Net v1 test-style lists of image names
            entry = {"image": entry}
        if not isinstance(entry, dict):
            raise VesselfieldError(f"{json_path}: training entry {index} must be an object, got {entry!r}")
        image = _resolve(root, entry.get("image"), json_path, "image", index)
        if image.name.startswith("._"):  # macOS resource forks of the MSD archives
            continue
        label = None if entry.get("label") is None else _resolve(root, entry["label"], json_path, "label", index)
        name = _strip_suffix(label.name) if label is not None else _strip_suffix(image.name)
        match = _CHANNEL.match(name)
        if label is None and match is not None and match["channel"] == "0000":
            name = match["case"]
        if not image.is_file() and _with_channel(image).is_file():
            image = _with_channel(image)  # nnU-Net v1 lists "x.nii.gz" for the file x_0000.nii.gz
        for what, path in (("image", image), ("label", label)):
            if path is not None and not path.is_file():
                missing.append((what, name, path))
        if label is None and require_labels:
            raise VesselfieldError(f"{json_path}: training entry {index} (case {name}) has no label")
        extras = {}
        for key in EXTRA_FOLDERS:
            if entry.get(key) is not None:
                extras[key] = _resolve(root, entry[key], json_path, key, index)
                if not extras[key].is_file():
                    missing.append((key.replace("_", " "), name, extras[key]))
        cases.append(MsdCase(name, image, label, **extras))
    if missing:
        raise _missing_error(json_path, missing)
    for case in cases:
        _check_other_channels(case.image, case.name)
    return cases


def _nnunet_cases(root: Path, json_path: Path, meta: dict, require_labels: bool) -> list[MsdCase]:
    ending = meta["file_ending"]
    if not isinstance(ending, str) or ending.lower() not in _FILE_ENDINGS:
        raise VesselfieldError(f"{json_path}: file_ending {ending!r} is not a 3D volume format "
                               f"({', '.join(_FILE_ENDINGS)})")
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise VesselfieldError(f"{json_path} has no case list and {images_dir} does not exist")
    channels: dict[str, list[str]] = {}
    for path in sorted(images_dir.iterdir()):
        if path.name.startswith(".") or not path.name.endswith(ending):
            continue
        match = _CHANNEL.match(path.name[: -len(ending)])
        if match is None:
            raise VesselfieldError(f"{path} is not named {{case}}_XXXX{ending} (nnU-Net's channel suffix)")
        channels.setdefault(match["case"], []).append(match["channel"])
    cases, missing = [], []
    for name, found in sorted(channels.items()):
        if found != ["0000"]:
            raise VesselfieldError(f"case {name} in {images_dir} has channel(s) {', '.join(found)}: only "
                                   "single-channel (_0000) datasets are supported")
        label = labels_dir / f"{name}{ending}"
        if not label.is_file():
            if require_labels:
                missing.append(("label", name, label))
            label = None
        cases.append(MsdCase(name, images_dir / f"{name}_0000{ending}", label))
    if missing:
        raise _missing_error(json_path, missing)
    expected = meta.get("numTraining")
    if isinstance(expected, int) and not isinstance(expected, bool) and expected != len(cases):
        raise VesselfieldError(f"{json_path} says numTraining {expected} but {images_dir} holds {len(cases)} "
                               f"case(s) named {{case}}_0000{ending}")
    return cases


def _int_or_none(value, what: str, json_path: Path, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise VesselfieldError(f"{json_path}: {VESSELFIELD_BLOCK}.{what} must be an integer >= {minimum}, "
                               f"got {value!r}")
    return value


def read_msd_dataset(root, label: str | int | None = None, require_labels: bool = True) -> MsdDataset:
    """Read an MSD or nnU-Net v2 raw dataset folder (module docstring); no volume is loaded.

    Args:
        root: the folder holding ``dataset.json`` (or the ``dataset.json`` file itself).
        label: the vessel class, by name or number (:func:`choose_label`); None: the default rule.
        require_labels: every case must have a label file (training); False allows image-only cases.

    Raises VesselfieldError (one line, naming the file) for a missing folder or ``dataset.json``,
    invalid JSON, listed files that do not exist, multi-channel data, an unknown label.
    """
    root = Path(root)
    if root.is_file() and root.name.lower().endswith(".json"):
        json_path, root = root, root.parent
    else:
        if not root.exists():
            raise VesselfieldError(f"dataset folder {root} does not exist")
        if not root.is_dir():
            raise VesselfieldError(f"dataset {root} is not a folder")
        json_path = root / DATASET_JSON
    if not json_path.is_file():
        raise VesselfieldError(f"{root} has no {DATASET_JSON}: not an MSD / nnU-Net dataset folder")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise VesselfieldError(f"cannot read {json_path}: {exc}") from None
    except ValueError as exc:
        raise VesselfieldError(f"{json_path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise VesselfieldError(f"{json_path} must hold a JSON object")
    channel = _single_channel(json_path, meta)
    if "labels" in meta or require_labels:
        labels = _parse_labels(meta.get("labels"), json_path)
    else:
        labels = {0: "background"}
    if "training" in meta:
        layout, cases = "msd", _msd_cases(root, json_path, meta, require_labels)
    elif "file_ending" in meta:
        layout, cases = "nnunet", _nnunet_cases(root, json_path, meta, require_labels)
    else:
        raise VesselfieldError(f"{json_path} has neither a 'training' list (MSD) nor a 'file_ending' (nnU-Net v2)")
    if not cases:
        raise VesselfieldError(f"{json_path} lists no training cases")
    names = [c.name for c in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise VesselfieldError(f"{json_path} lists case {duplicates[0]} more than once")
    block = meta.get(VESSELFIELD_BLOCK) or {}
    if not isinstance(block, dict):
        raise VesselfieldError(f"{json_path}: {VESSELFIELD_BLOCK!r} must be an object")
    if len(labels) > 1:
        values, note = choose_label(labels, label)
    elif require_labels:
        raise VesselfieldError(f"{json_path}: the labels hold no class besides the background")
    else:
        values, note = (), "no labels"
    name = meta.get("name") if isinstance(meta.get("name"), str) and meta.get("name").strip() else root.name
    return MsdDataset(
        root=root, name=name, cases=sorted(cases, key=lambda c: c.name), labels=labels, label_values=values,
        label_note=note, layout=layout, channel=channel,
        sparsified_every=_int_or_none(block.get("sparsified_every"), "sparsified_every", json_path, 1),
        sparsify_offset=_int_or_none(block.get("offset"), "offset", json_path, 0),
        provenance=dict(block),
    )


# ------------------------------------------------------------------------------- loading
def _require_volume(array: np.ndarray, path: Path, what: str) -> None:
    if min(array.shape) < 2:
        raise VesselfieldError(f"{what} {path} is 2D (shape {array.shape}): a volume needs at least 2 voxels "
                               "along every axis")


def _present_values(labels: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(label volume as integers, the values present) with non-integer values refused."""
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if labels.dtype.kind == "f":
        require_finite(labels, f"label volume {path}")
        fractional = labels[labels != np.round(labels)]
        if fractional.size:
            shown = ", ".join(f"{v:g}" for v in np.unique(fractional)[:3])
            raise VesselfieldError(f"label volume {path} holds non-integer values ({shown}): labels must be "
                                   "whole numbers")
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iu":
        raise VesselfieldError(f"label volume {path} must hold integers, got dtype {labels.dtype}")
    low, high = int(labels.min()), int(labels.max())
    if low >= 0 and high < 1 << 16:
        present = np.flatnonzero(np.bincount(labels.ravel(), minlength=high + 1))
    else:
        present = np.unique(labels)
    return labels, present


def load_case(ds: MsdDataset, case: MsdCase | str) -> LoadedCase:
    """Load one case's arrays and check them.

    Args:
        ds: the dataset (its ``label_values`` define the mask).
        case: a case of ``ds`` or its name.

    Checks (VesselfieldError naming the file): the image is a 3D volume (not 2D, not 4D) with
    finite values; label and SDF are on the image's grid (shape, and spacing/origin within
    1e-3 mm); label values are integers listed in ``dataset.json``; the label holds at least one
    voxel of the chosen class. The image is returned as float32 in the file's units.
    """
    if isinstance(case, str):
        case = ds.case(case)
    image, grid = load_volume(case.image, what="CT image")
    _require_volume(image, case.image, "CT image")
    image = np.asarray(image, dtype=np.float32)
    require_finite(image, f"CT image {case.image}")
    mask = None
    if case.label is not None:
        labels, label_grid = load_volume(case.label, what="label volume")
        grid.require_same(label_grid, f"CT image {case.image} and label volume {case.label}")
        labels, present = _present_values(np.asarray(labels), case.label)
        unknown = [int(v) for v in present if int(v) not in ds.labels]
        if unknown:
            raise VesselfieldError(f"label volume {case.label} holds value(s) {', '.join(map(str, unknown[:5]))} "
                                   f"that {ds.json_path.name} does not list (labels: {', '.join(map(str, ds.labels))})")
        if ds.label_values and not np.isin(present, ds.label_values).any():
            chosen = ", ".join(_label_text(v, ds.labels) for v in ds.label_values)
            raise VesselfieldError(f"label volume {case.label} holds no voxel of label {chosen} (values present: "
                                   f"{', '.join(str(int(v)) for v in present)})")
        mask = np.isin(labels, ds.label_values)
    sdf = None
    if case.sdf is not None:
        sdf, sdf_grid = load_volume(case.sdf, what="SDF volume")
        grid.require_same(sdf_grid, f"CT image {case.image} and SDF volume {case.sdf}")
        sdf = np.asarray(sdf, dtype=np.float32)
        require_finite(sdf, f"SDF volume {case.sdf}")
    return LoadedCase(image=image, mask=mask, grid=grid, sdf_mm=sdf, name=case.name)


def load_dense_mask(ds: MsdDataset, case: MsdCase | str) -> tuple[np.ndarray, VolumeGrid] | None:
    """``(bool mask (X, Y, Z_dense), dense grid)`` of a sparsified case's ``labelsDense`` file, or None.

    The dense mask is the chosen vessel class at full resolution, for evaluating predictions
    on the dense grid (its z positions include every kept slice of the sparse grid).
    """
    if isinstance(case, str):
        case = ds.case(case)
    if case.dense_label is None:
        return None
    labels, grid = load_volume(case.dense_label, what="dense label volume")
    _require_volume(labels, case.dense_label, "dense label volume")
    labels, present = _present_values(np.asarray(labels), case.dense_label)
    if not np.isin(present, (0, 1)).all():
        raise VesselfieldError(f"dense label volume {case.dense_label} must be binary (0/1), holds "
                               f"{', '.join(str(int(v)) for v in present[:5])}")
    return labels.astype(bool), grid


# ------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def staged_folder(out) -> Iterator[Path]:
    """Yield a scratch folder that becomes ``out`` only when the block succeeds.

    ``out`` must not exist or be an empty folder. The scratch folder sits next to ``out``
    (``.<name>.partial-*``) and is renamed onto it at the end, so a dataset appears whole or not
    at all; on failure it is removed, with any parent folders this call created.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise VesselfieldError(f"output folder {out} exists and is not empty: choose a new folder")
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield scratch
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(scratch, 0o777 & ~umask)  # mkdtemp makes 0700 folders
        if out.exists():
            out.rmdir()
        os.replace(scratch, out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        for parent in created:  # nearest first
            try:
                parent.rmdir()
            except OSError:
                break
        raise


def _check_case_name(name) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise VesselfieldError(f"case name {name!r} must be letters, digits, '_', '-' or '.'")
    return name


def _label_dtype(label: np.ndarray, name: str, labels: Mapping[int, str]) -> np.ndarray:
    label = np.asarray(label)
    if label.dtype == bool:
        label = label.astype(np.uint8)
    if label.dtype.kind not in "iu":
        raise VesselfieldError(f"label of case {name} must hold integers, got dtype {label.dtype}")
    present = np.unique(label)
    unknown = [int(v) for v in present if int(v) not in labels]
    if unknown:
        raise VesselfieldError(f"label of case {name} holds value(s) {unknown[:5]} not among the labels "
                               f"{sorted(labels)}")
    return label.astype(np.uint8 if max(labels) < 256 else np.uint16)


def _write_case(folder: Path, case: CaseVolumes, labels: Mapping[int, str], suffix: str) -> dict:
    """Write one case under ``folder``; return its training entry (paths relative to ``folder``)."""
    name = _check_case_name(case.name)
    if not isinstance(case.grid, VolumeGrid):
        raise VesselfieldError(f"case {name}: grid must be a VolumeGrid")
    image = np.asarray(case.image)
    require_finite(image, f"image of case {name}")
    entry = {"image": f"./imagesTr/{name}{suffix}", "label": f"./labelsTr/{name}{suffix}"}
    save_volume(folder / entry["image"], image, case.grid)
    save_volume(folder / entry["label"], _label_dtype(case.label, name, labels), case.grid)
    if case.sdf is not None:
        entry["sdf"] = f"./{EXTRA_FOLDERS['sdf']}/{name}{suffix}"
        save_volume(folder / entry["sdf"], np.asarray(case.sdf, dtype=np.float32), case.grid)
    if case.dense_label is not None:
        if case.dense_grid is None:
            raise VesselfieldError(f"case {name}: dense_label needs its dense_grid")
        entry["dense_label"] = f"./{EXTRA_FOLDERS['dense_label']}/{name}{suffix}"
        save_volume(folder / entry["dense_label"], np.asarray(case.dense_label).astype(np.uint8), case.dense_grid)
    return entry


def write_msd_dataset(
    out,
    cases: Iterable[CaseVolumes],
    *,
    labels: Mapping[int, str] = BINARY_LABELS,
    name: str | None = None,
    description: str = "",
    modality: str = "CT",
    vesselfield: Mapping | None = None,
    progress: bool = False,
) -> list[str]:
    """Write a dataset in the MSD layout; return the case names written, in order.

    ``out/imagesTr/{case}.nii.gz``, ``out/labelsTr/{case}.nii.gz`` (uint8 labels), optionally
    ``sdfTr/`` and ``labelsDense/`` (:class:`CaseVolumes`), and ``out/dataset.json`` last. The
    whole folder is built in a scratch folder and renamed into place (:func:`staged_folder`):
    ``out`` must not exist or be empty, and a failure leaves nothing behind.

    Args:
        out: the dataset folder to create.
        cases: the cases (any iterable: a generator keeps one case in memory at a time).
        labels: value -> name written to ``dataset.json`` (MSD keys: strings of numbers).
        name, description: ``dataset.json`` fields (name defaults to the folder name).
        modality: the one channel name (``{"0": modality}``).
        vesselfield: the ``"vesselfield"`` block (provenance), or None.
        progress: show a progress bar (stderr).
    """
    from tqdm.auto import tqdm

    labels = {int(k): str(v) for k, v in labels.items()}
    out = Path(out)
    with staged_folder(out) as scratch:
        entries = []
        for case in tqdm(cases, desc=out.name, unit="case", disable=not progress, dynamic_ncols=True, delay=1.0):
            entries.append(_write_case(scratch, case, labels, ".nii.gz"))
        if not entries:
            raise VesselfieldError(f"no cases to write to {out}")
        names = [Path(e["label"]).name[: -len(".nii.gz")] for e in entries]
        if len(set(names)) != len(names):
            raise VesselfieldError(f"case names repeat in {out}: {names}")
        meta = {
            "name": name or out.name,
            "description": description,
            "tensorImageSize": "3D",
            "modality": {"0": modality},
            "labels": {str(k): v for k, v in sorted(labels.items())},
            "numTraining": len(entries),
            "numTest": 0,
            "training": entries,
            "test": [],
        }
        if vesselfield:
            meta[VESSELFIELD_BLOCK] = dict(vesselfield)
        write_json(scratch / DATASET_JSON, meta)
    return names


# ------------------------------------------------------------------------------- sparsify
def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise VesselfieldError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def sparsify_dataset(src, out, every: int, offset: int = 0, label: str | int | None = None, *,
                     progress: bool = False) -> RunSummary:
    """The sparse-slice setting of VesselSDF from a dense dataset, with a dense ground truth.

    Every image and label keeps axial slices ``offset, offset + K, ...`` (z, array axis 2;
    :func:`vesselfield.phantoms.ct.sparse_slices`, so each kept voxel keeps its world position
    and the grid's z spacing becomes K times the source's). Written to ``out`` (MSD layout):

    - ``imagesTr/{case}.nii.gz``: float32 CT on the sparse grid;
    - ``labelsTr/{case}.nii.gz``: binary vessel mask (labels ``0 background, 1 vessel``) of the
      chosen class on the sparse grid;
    - ``sdfTr/{case}.nii.gz``: float32 exact signed distance (mm, negative inside) of the DENSE
      vessel mask with the dense spacing (``signed_distance_from_mask(..., exact=True)``, the
      VesselSDF target f*), sampled at the kept slices: the truth stays dense;
    - ``labelsDense/{case}.nii.gz``: the dense binary vessel mask, for full-resolution evaluation;
    - ``dataset.json`` with ``"vesselfield": {"sparsified_every": K, "offset": O, "source": SRC,
      "label_values": [...], "label_note": ...}``.

    The exact SDF works on the half-voxel lattice (8 x the case's voxels): measured 9 s and a
    2.1 GB peak per 256 x 256 x 66 case on one core, so about 4 x that (8 GB) for a full
    512 x 512 x 66 MSD case.

    Raises VesselfieldError for a bad source (any :func:`load_case` check), ``every < 1``, an
    offset outside the first K slices' range, a source already sparsified, fewer than 2 kept
    slices, or a case without vessel voxels on the kept slices.
    """
    from vesselfield.meshing.signed_distance import signed_distance_from_mask
    from vesselfield.phantoms.ct import sparse_slices

    every = _check_int(every, "every", 1)
    offset = _check_int(offset, "offset", 0)
    if offset >= every:
        raise VesselfieldError(f"offset must be smaller than every ({every}), got {offset}")
    ds = read_msd_dataset(src, label=label)
    if ds.sparsified_every is not None:
        raise VesselfieldError(f"{ds.root} is already sparsified (every {ds.sparsified_every}): sparsify its dense "
                               f"source ({ds.provenance.get('source', 'unknown')}) instead")
    details: dict[str, dict] = {}

    def cases():
        for case in ds.cases:
            loaded = load_case(ds, case)
            grid, mask = loaded.grid, loaded.mask
            nz = grid.shape[2]
            if nz - offset <= every:  # fewer than 2 kept slices
                raise VesselfieldError(f"case {case.name} has {nz} slices: every {every} from slice {offset} keeps "
                                       "fewer than 2")
            image, sparse_grid = sparse_slices(loaded.image, grid, every, axis=2, offset=offset)
            sparse_mask, _ = sparse_slices(mask, grid, every, axis=2, offset=offset)
            if not sparse_mask.any():
                raise VesselfieldError(f"case {case.name} has no vessel voxel on the kept slices (every {every}, "
                                       f"offset {offset}): use a smaller --every or another --offset")
            if mask.all():
                raise VesselfieldError(f"case {case.name} is vessel everywhere: its signed distance is undefined")
            sdf = signed_distance_from_mask(mask, grid.spacing_mm, exact=True)
            sparse_sdf, _ = sparse_slices(sdf, grid, every, axis=2, offset=offset)
            details[case.name] = {"dense_slices": nz, "kept_slices": int(image.shape[2]),
                                  "dense_spacing_z_mm": grid.spacing_mm[2],
                                  "sparse_spacing_z_mm": sparse_grid.spacing_mm[2]}
            yield CaseVolumes(case.name, image, sparse_mask.astype(np.uint8), sparse_grid, sdf=sparse_sdf,
                              dense_label=mask.astype(np.uint8), dense_grid=grid)

    block = {"sparsified_every": every, "offset": offset, "source": str(ds.root),
             "label_values": list(ds.label_values), "label_note": ds.label_note}
    out = Path(out)
    write_msd_dataset(out, cases(), labels=BINARY_LABELS, name=f"{ds.name}_every{every}",
                      description=f"{ds.name}: every {every}-th axial slice from slice {offset} "
                                  "(vesselfield data sparsify)",
                      modality=ds.channel, vesselfield=block, progress=progress)
    dz = sorted({(d["dense_spacing_z_mm"], d["sparse_spacing_z_mm"]) for d in details.values()})
    spacing = ", ".join(f"{a:g} -> {b:g}" for a, b in dz[:4]) + (", ..." if len(dz) > 4 else "")
    return RunSummary(
        verb="data sparsify", out_dir=out, files={"dataset": out / DATASET_JSON},
        lines=[ds.label_note,
               (f"{len(details)} case(s): kept every {every}-th axial slice from slice {offset}; z spacing "
                f"{spacing} mm; sdfTr/ and labelsDense/ hold the dense truth")],
        details={"every": every, "offset": offset, "cases": details, "label_values": list(ds.label_values)},
    )


# ------------------------------------------------------------------------------- nnU-Net export
def _nnunet_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9]+", "", name)
    if not cleaned:
        raise VesselfieldError(f"dataset name {name!r} needs at least one letter or digit")
    return cleaned


def export_nnunet(src, out, dataset_id: int = DEFAULT_NNUNET_ID, name: str | None = None,
                  label: str | int | None = None, *, progress: bool = False) -> RunSummary:
    """Write a dataset in nnU-Net v2's raw format, with the chosen class as a binary vessel label.

    ``out/Dataset{ID:03d}_{Name}/`` (``out`` is an ``nnUNet_raw`` folder; the dataset folder must
    not exist) with ``imagesTr/{case}_0000.nii.gz`` (float32 CT), ``labelsTr/{case}.nii.gz``
    (uint8, 0 background, 1 vessel) and ``dataset.json``: ``channel_names {"0": <modality>}``
    (``"CT"`` for CT, which selects nnU-Net's CT normalisation), ``labels {"background": 0,
    "vessel": 1}``, ``numTraining``, ``file_ending ".nii.gz"`` and a ``"vesselfield"`` block
    (source, label values). :func:`read_msd_dataset` reads it back with the same arrays and grids.

    Args:
        src: an MSD / nnU-Net dataset folder.
        out: the folder to create the dataset folder in.
        dataset_id: 1..999 (nnU-Net asks for 500 and up for one's own datasets).
        name: the dataset name (letters and digits kept); default: the source's name.
        label: the vessel class (:func:`choose_label`).
    """
    dataset_id = _check_int(dataset_id, "dataset_id", 1)
    if dataset_id > 999:
        raise VesselfieldError(f"dataset_id must be 1..999 (nnU-Net's three digits), got {dataset_id}")
    ds = read_msd_dataset(src, label=label)
    folder = Path(out) / f"Dataset{dataset_id:03d}_{_nnunet_name(name if name is not None else ds.name)}"
    from tqdm.auto import tqdm

    with staged_folder(folder) as scratch:
        for case in tqdm(ds.cases, desc=folder.name, unit="case", disable=not progress, dynamic_ncols=True, delay=1.0):
            loaded = load_case(ds, case)
            save_volume(scratch / "imagesTr" / f"{case.name}_0000.nii.gz", loaded.image, loaded.grid)
            save_volume(scratch / "labelsTr" / f"{case.name}.nii.gz", loaded.mask.astype(np.uint8), loaded.grid)
        block = {"source": str(ds.root), "label_values": list(ds.label_values), "label_note": ds.label_note}
        if ds.sparsified_every is not None:
            block.update(sparsified_every=ds.sparsified_every, offset=ds.sparsify_offset)
        write_json(scratch / DATASET_JSON, {
            "channel_names": {"0": ds.channel},
            "labels": {"background": 0, "vessel": 1},
            "numTraining": len(ds.cases),
            "file_ending": ".nii.gz",
            "name": folder.name.split("_", 1)[1],
            "description": f"{ds.name} exported by vesselfield data export-nnunet",
            VESSELFIELD_BLOCK: block,
        })
    return RunSummary(
        verb="data export-nnunet", out_dir=folder, files={"dataset": folder / DATASET_JSON},
        lines=[ds.label_note, (f"{len(ds.cases)} case(s) in nnU-Net v2 raw format: {folder.name} "
                               "(labels background 0, vessel 1)")],
        details={"dataset_id": dataset_id, "folder": str(folder), "label_values": list(ds.label_values)},
    )


__all__ = [
    "BINARY_LABELS",
    "CaseVolumes",
    "LoadedCase",
    "MsdCase",
    "MsdDataset",
    "choose_label",
    "export_nnunet",
    "load_case",
    "load_dense_mask",
    "read_msd_dataset",
    "sparsify_dataset",
    "staged_folder",
    "write_msd_dataset",
]
