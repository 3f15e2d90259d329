"""C-arm cone-beam views: gantry angles and distances -> source, detector, pixels and rays.

The convention (the project's contract; ``docs/geometry.md`` has it with a figure):

World frame: LPS patient coordinates in mm, the C-arm's isocenter at the origin unless a view's
``isocenter_mm`` says otherwise. For a view with
primary angle α (LAO > 0, RAO < 0) and secondary angle β (cranial > 0, caudal < 0)::

    d = (sin α cos β, -cos α cos β, sin β)      isocenter -> detector centre, unit
    S = O - DSO d                               X-ray source
    C = O + (DSD - DSO) d                       detector centre
    u = (cos α, sin α, 0)                       detector column axis (c grows along u)
    v = u x d                                   detector row axis (r grows along v)
    P(r, c) = C + (c - (W-1)/2) Δc u + (r - (H-1)/2) Δr v

with DSD = ``source_to_detector_mm``, DSO = ``source_to_isocenter_mm``, ``detector_shape`` =
(H rows, W columns), ``pixel_spacing_mm`` = (Δr, Δc) and O = ``isocenter_mm``, the C-arm's
isocenter in the world (the origin unless a view says otherwise: a view whose isocenter is at O
sees the object moved by -O, which is how a pose refinement or a simulated patient motion
between two acquisitions is written). Images are indexed ``[r, c]``, row 0 at
the top. At α = β = 0 the detector is anterior (d = -y), columns run to the patient's left and
rows run towards the feet. The angles are used exactly as given (the published SDF-CAR code
simulates its views at half the configured angles; we do not).

A geometry file is JSON: ``{"volume": {"shape", "spacing_mm", "origin_mm"}, "views": [{view}, ...]}``
with the keys of :class:`ConeBeamView` in every view.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io.atomic import write_text_atomic

__all__ = [
    "ConeBeamView",
    "Geometry",
    "check_views_see_volume",
    "default_geometry",
    "load_geometry",
    "save_geometry",
]

VIEW_KEYS = (
    "primary_angle_deg",
    "secondary_angle_deg",
    "source_to_detector_mm",
    "source_to_isocenter_mm",
    "detector_shape",
    "pixel_spacing_mm",
)
OPTIONAL_VIEW_KEYS = ("isocenter_mm",)
"""Keys a view may have: ``isocenter_mm`` (default [0, 0, 0]), written only when it is not zero."""


def _real(value: Any, name: str) -> float:
    # bool is an int subclass and strings convert with float(): both are almost always a mistake
    # in a geometry file, so only genuine numbers are accepted.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise VesselfieldError(f"{name} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise VesselfieldError(f"{name} must be finite, got {value!r}")
    return out


def _pair(values: Any, name: str) -> tuple[float, float]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != 2:
        raise VesselfieldError(f"{name} must be two numbers [rows, columns], got {values!r}")
    return _real(values[0], name), _real(values[1], name)


@dataclass(frozen=True)
class ConeBeamView:
    """One C-arm projection: where the source and the flat detector are, and the detector's pixels.

    All vectors are LPS mm (isocenter at ``isocenter_mm``, the origin by default); see the module docstring for the
    formulas (they are the project's convention, ``docs/geometry.md``).
    """

    primary_angle_deg: float
    """Primary (LAO/RAO) angle α in degrees, rotation about the patient's long axis; LAO positive."""
    secondary_angle_deg: float
    """Secondary (cranial/caudal) angle β in degrees; cranial positive; |β| < 90."""
    source_to_detector_mm: float
    """DSD: distance from the X-ray source to the detector plane (mm)."""
    source_to_isocenter_mm: float
    """DSO: distance from the X-ray source to the isocenter (mm), 0 < DSO < DSD."""
    detector_shape: tuple[int, int]
    """(H rows, W columns) of detector pixels."""
    pixel_spacing_mm: tuple[float, float]
    """(row spacing Δr, column spacing Δc) of detector pixels at the detector plane (mm)."""
    isocenter_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """O: the C-arm's isocenter in the world frame (mm); source and detector turn about it. The
    origin for a calibrated C-arm; a refined pose (``geometry_refined.json``) or a patient that moved
    between acquisitions has it elsewhere (the view sees the object moved by -O)."""

    def __post_init__(self):
        alpha = _real(self.primary_angle_deg, "primary_angle_deg")
        beta = _real(self.secondary_angle_deg, "secondary_angle_deg")
        dsd = _real(self.source_to_detector_mm, "source_to_detector_mm")
        dso = _real(self.source_to_isocenter_mm, "source_to_isocenter_mm")
        rows, cols = _pair(self.detector_shape, "detector_shape")
        spacing = _pair(self.pixel_spacing_mm, "pixel_spacing_mm")
        if abs(beta) >= 90.0:
            raise VesselfieldError(f"secondary_angle_deg must lie strictly between -90 and 90, got {beta:g}")
        if dsd <= 0 or dso <= 0:
            raise VesselfieldError(
                f"source_to_detector_mm and source_to_isocenter_mm must be positive, got {dsd:g} and {dso:g}"
            )
        if dso >= dsd:
            raise VesselfieldError(
                f"source_to_isocenter_mm ({dso:g}) must be smaller than source_to_detector_mm ({dsd:g})"
            )
        if rows != int(rows) or cols != int(cols) or rows < 1 or cols < 1:
            raise VesselfieldError(f"detector_shape must be two positive integers, got {self.detector_shape!r}")
        if spacing[0] <= 0 or spacing[1] <= 0:
            raise VesselfieldError(f"pixel_spacing_mm must be positive, got {list(spacing)}")
        iso = self.isocenter_mm
        if isinstance(iso, (str, bytes)) or not hasattr(iso, "__len__") or len(iso) != 3:
            raise VesselfieldError(f"isocenter_mm must be three numbers [x, y, z], got {iso!r}")
        object.__setattr__(self, "isocenter_mm", tuple(_real(x, "isocenter_mm") for x in iso))
        object.__setattr__(self, "primary_angle_deg", alpha)
        object.__setattr__(self, "secondary_angle_deg", beta)
        object.__setattr__(self, "source_to_detector_mm", dsd)
        object.__setattr__(self, "source_to_isocenter_mm", dso)
        object.__setattr__(self, "detector_shape", (int(rows), int(cols)))
        object.__setattr__(self, "pixel_spacing_mm", spacing)

    # ------------------------------------------------------------------------------ frame
    @property
    def direction(self) -> np.ndarray:
        """(3,) unit vector d from the isocenter towards the detector centre."""
        a = math.radians(self.primary_angle_deg)
        b = math.radians(self.secondary_angle_deg)
        return np.array([math.sin(a) * math.cos(b), -math.cos(a) * math.cos(b), math.sin(b)])

    @property
    def source_mm(self) -> np.ndarray:
        """(3,) X-ray source position S = O - DSO d, mm."""
        return np.asarray(self.isocenter_mm) - self.source_to_isocenter_mm * self.direction

    @property
    def detector_center_mm(self) -> np.ndarray:
        """(3,) detector centre C = O + (DSD - DSO) d, mm."""
        return np.asarray(self.isocenter_mm) + (self.source_to_detector_mm - self.source_to_isocenter_mm) * self.direction

    @property
    def u(self) -> np.ndarray:
        """(3,) unit column axis u = (cos α, sin α, 0): column index grows along u."""
        a = math.radians(self.primary_angle_deg)
        return np.array([math.cos(a), math.sin(a), 0.0])

    @property
    def v(self) -> np.ndarray:
        """(3,) unit row axis v = u x d: row index grows along v (down the image)."""
        return np.cross(self.u, self.direction)

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) world directions -> detector frame: rows u, v, d (orthonormal; (u, v, d) is left-handed,
        det -1, so compare two views through ``R_a.T @ R_b``, a proper rotation)."""
        return np.stack([self.u, self.v, self.direction])

    def moved(self, *, primary_deg: float = 0.0, secondary_deg: float = 0.0, shift_mm=(0.0, 0.0, 0.0)) -> "ConeBeamView":
        """This view with its angles changed by (primary_deg, secondary_deg) and the object it sees moved by
        ``shift_mm`` (world mm; the isocenter moves by -shift_mm). Distances and detector unchanged."""
        from dataclasses import replace

        return replace(self, primary_angle_deg=self.primary_angle_deg + float(primary_deg),
                       secondary_angle_deg=self.secondary_angle_deg + float(secondary_deg),
                       isocenter_mm=tuple(np.asarray(self.isocenter_mm, float) - np.asarray(shift_mm, float)))

    @property
    def magnification(self) -> float:
        """DSD / DSO: size on the detector of an object of unit size at the isocenter."""
        return self.source_to_detector_mm / self.source_to_isocenter_mm

    # ------------------------------------------------------------------------------ pixels
    def _check_pixels(self, pixels) -> np.ndarray:
        p = np.asarray(pixels)
        if p.ndim != 2 or p.shape[1] != 2 or p.dtype.kind not in "iuf":
            raise VesselfieldError(f"pixels must be an (N, 2) array of (row, column), got shape {p.shape}")
        p = p.astype(np.float64)
        if not np.all(np.isfinite(p)):
            raise VesselfieldError("pixels contain NaN or infinite values")
        h, w = self.detector_shape
        outside = (p[:, 0] < -0.5) | (p[:, 0] > h - 0.5) | (p[:, 1] < -0.5) | (p[:, 1] > w - 0.5)
        if outside.any():
            first = p[np.argmax(outside)]
            raise VesselfieldError(
                f"{int(outside.sum())} pixel(s) lie outside the {h}x{w} detector, e.g. (row, col) = "
                f"({first[0]:g}, {first[1]:g})"
            )
        return p

    def pixel_centers_mm(self, pixels=None) -> np.ndarray:
        """World positions of pixel centres P(r, c) on the detector plane, mm.

        Args:
            pixels: None for every pixel, or an (N, 2) array of (row, column) indices (integers;
                fractional values address points inside a pixel).

        Returns:
            (H, W, 3) when ``pixels`` is None, else (N, 3); float64 LPS mm.
        """
        h, w = self.detector_shape
        dr, dc = self.pixel_spacing_mm
        if pixels is None:
            rr, cc = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
            rc = np.stack([rr, cc], axis=-1)
        else:
            rc = self._check_pixels(pixels)
        a = (rc[..., 1:2] - (w - 1) / 2.0) * dc
        b = (rc[..., 0:1] - (h - 1) / 2.0) * dr
        return self.detector_center_mm + a * self.u + b * self.v

    def rays(self, pixels=None) -> tuple[np.ndarray, np.ndarray]:
        """Source -> pixel-centre rays.

        Args:
            pixels: None for every pixel (row-major order, ray ``r * W + c``) or (N, 2) (row, column).

        Returns:
            ``(origins, directions)``: (N, 3) source positions (mm) and (N, 3) unit directions,
            float64; the pixel lies at ``origin + t * direction`` for ``t = |P - S|``.
        """
        centers = self.pixel_centers_mm(pixels).reshape(-1, 3)
        source = self.source_mm
        dirs = centers - source
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        return np.broadcast_to(source, dirs.shape).copy(), dirs

    def project_points(self, points_mm) -> np.ndarray:
        """Perspective projection of world points onto the detector: the inverse of ``pixel_centers_mm``.

        The point X is mapped to where the line from S through X meets the detector plane:
        ``P = S + DSD / ((X - S)·d) (X - S)``, then ``c = (P - C)·u / Δc + (W-1)/2`` and
        ``r = (P - C)·v / Δr + (H-1)/2``.

        Args:
            points_mm: (N, 3) LPS mm.

        Returns:
            (N, 2) float64 (row, column), fractional; NaN for points not in front of the source
            ((X - S)·d <= 0). Values outside [-0.5, H-0.5] x [-0.5, W-0.5] miss the detector.
        """
        x = np.asarray(points_mm, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != 3:
            raise VesselfieldError(f"points_mm must be an (N, 3) array, got shape {x.shape}")
        d = self.direction
        rel = x - self.source_mm
        depth = rel @ d
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(depth > 0, self.source_to_detector_mm / depth, np.nan)
        on_plane = self.source_mm + scale[:, None] * rel - self.detector_center_mm
        h, w = self.detector_shape
        dr, dc = self.pixel_spacing_mm
        col = on_plane @ self.u / dc + (w - 1) / 2.0
        row = on_plane @ self.v / dr + (h - 1) / 2.0
        return np.stack([row, col], axis=1)

    # ------------------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict:
        """Plain JSON-able dict with the keys of the geometry file format."""
        return {
            "primary_angle_deg": self.primary_angle_deg,
            "secondary_angle_deg": self.secondary_angle_deg,
            "source_to_detector_mm": self.source_to_detector_mm,
            "source_to_isocenter_mm": self.source_to_isocenter_mm,
            "detector_shape": list(self.detector_shape),
            "pixel_spacing_mm": list(self.pixel_spacing_mm),
            **({"isocenter_mm": list(self.isocenter_mm)} if any(self.isocenter_mm) else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ConeBeamView":
        """From a dict with every key of :data:`VIEW_KEYS` (and optionally ``isocenter_mm``); other keys are
        ignored (room for metadata)."""
        if not isinstance(d, dict):
            raise VesselfieldError(f"a view must be an object with keys {', '.join(VIEW_KEYS)}, got {type(d).__name__}")
        missing = [k for k in VIEW_KEYS if k not in d]
        if missing:
            raise VesselfieldError(f"missing key(s): {', '.join(missing)}")
        return cls(**{k: d[k] for k in VIEW_KEYS + OPTIONAL_VIEW_KEYS if k in d})


@dataclass
class Geometry:
    """A reconstruction volume and the views that see it.

    Attributes:
        volume: the voxel grid of the reconstruction (LPS mm, isocenter at the world origin).
        views: one :class:`ConeBeamView` per projection image, in the order of the images.
    """

    volume: VolumeGrid
    views: list[ConeBeamView] = field(default_factory=list)

    def __post_init__(self):
        if not isinstance(self.volume, VolumeGrid):
            raise VesselfieldError(f"geometry volume must be a VolumeGrid, got {type(self.volume).__name__}")
        self.views = list(self.views)
        if not self.views:
            raise VesselfieldError("geometry has no views")
        for i, view in enumerate(self.views):
            if not isinstance(view, ConeBeamView):
                raise VesselfieldError(f"view {i} must be a ConeBeamView, got {type(view).__name__}")

    def to_dict(self) -> dict:
        return {"volume": self.volume.to_dict(), "views": [v.to_dict() for v in self.views]}

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        """From ``{"volume": {...}, "views": [{...}, ...]}``; errors name the key and the view index."""
        if not isinstance(d, dict):
            raise VesselfieldError(f"geometry must be an object with keys volume and views, got {type(d).__name__}")
        missing = [k for k in ("volume", "views") if k not in d]
        if missing:
            raise VesselfieldError(f"geometry is missing key(s): {', '.join(missing)}")
        try:
            volume = VolumeGrid.from_dict(d["volume"])
        except VesselfieldError as err:
            raise VesselfieldError(f"volume: {err}") from None
        views_in = d["views"]
        if not isinstance(views_in, list) or not views_in:
            raise VesselfieldError("views must be a non-empty list of view objects")
        views = []
        for i, view in enumerate(views_in):
            try:
                views.append(ConeBeamView.from_dict(view))
            except VesselfieldError as err:
                raise VesselfieldError(f"view {i}: {err}") from None
        return cls(volume, views)


def load_geometry(path) -> Geometry:
    """Read a geometry JSON file (format in the module docstring and ``docs/geometry.md``).

    Raises:
        VesselfieldError: missing file, invalid JSON, missing keys (named, with the view index),
            wrong types or impossible values; the message starts with the file's path.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VesselfieldError(f"geometry file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise VesselfieldError(f"cannot read geometry file {path}: {err}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise VesselfieldError(f"{path}: invalid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    try:
        return Geometry.from_dict(data)
    except VesselfieldError as err:
        raise VesselfieldError(f"{path}: {err}") from None


def _one_line_list(match: re.Match) -> str:
    return "[" + ", ".join(x.strip() for x in match.group(1).split(",")) + "]"


def save_geometry(path, geometry: Geometry) -> None:
    """Write ``geometry`` as indented JSON, atomically (floats round-trip exactly)."""
    if not isinstance(geometry, Geometry):
        raise VesselfieldError(f"save_geometry needs a Geometry, got {type(geometry).__name__}")
    text = json.dumps(geometry.to_dict(), indent=2)
    # Short lists of numbers on one line: [128, 128, 128] reads better than one number per line.
    text = re.sub(r"\[\s*([-+0-9.eE,\s]+?)\s*\]", _one_line_list, text)
    write_text_atomic(path, text + "\n")


def default_geometry() -> Geometry:
    """The two-view geometry of the NeCA and SDF-CAR papers.

    Volume 128³ at 0.8 mm centred on the isocenter; view 1 α = 29.7°, β = 0.1°, DSD 993 mm,
    DSO 757.0605 mm; view 2 α = 2.0°, β = 29.0°, DSD 1055 mm, DSO 756.9934 mm; both detectors
    512 x 512 at 0.278 mm.
    """
    detector = dict(detector_shape=(512, 512), pixel_spacing_mm=(0.278, 0.278))
    return Geometry(
        VolumeGrid.centered((128, 128, 128), 0.8),
        [
            ConeBeamView(29.7, 0.1, 993.0, 757.0605, **detector),
            ConeBeamView(2.0, 29.0, 1055.0, 756.9934, **detector),
        ],
    )


def _convex_hull_2d(points: np.ndarray) -> np.ndarray:
    """Counter-clockwise hull vertices of a few 2D points (Andrew's monotone chain)."""
    pts = sorted(map(tuple, points))

    def half(seq):
        out: list = []
        for p in seq:
            while len(out) >= 2 and (
                (out[-1][0] - out[-2][0]) * (p[1] - out[-2][1]) - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])
            ) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(reversed(pts))
    return np.asarray(lower[:-1] + upper[:-1], dtype=np.float64)


def _polygon_meets_rectangle(hull: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bool:
    """Separating-axis test between a convex polygon and an axis-aligned rectangle."""
    if np.any(hull.max(0) < lo) or np.any(hull.min(0) > hi):
        return False
    corners = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    for i in range(len(hull)):
        edge = hull[(i + 1) % len(hull)] - hull[i]
        normal = np.array([edge[1], -edge[0]])
        if not np.any(normal):
            continue
        h = hull @ normal
        c = corners @ normal
        if c.max() < h.min() or c.min() > h.max():
            return False
    return True


def check_views_see_volume(geometry: Geometry) -> None:
    """Raise when a view cannot see the reconstruction volume.

    A view fails when its source lies inside the volume's box, or when the box (its eight
    corners, projected) lies entirely outside the detector or entirely behind the source.
    A box that straddles the source's focal plane projects to an unbounded region and passes.

    Raises:
        VesselfieldError: naming the (0-based) view index.
    """
    lo, hi = geometry.volume.bounds_mm
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    for i, view in enumerate(geometry.views):
        if geometry.volume.contains(view.source_mm):
            raise VesselfieldError(
                f"view {i}: the X-ray source {np.round(view.source_mm, 1).tolist()} mm lies inside the volume box"
            )
        depth = (corners - view.source_mm) @ view.direction
        if np.all(depth <= 0):
            raise VesselfieldError(f"view {i}: the volume lies behind the X-ray source")
        if np.any(depth <= 0):
            continue
        rc = view.project_points(corners)
        h, w = view.detector_shape
        hull = _convex_hull_2d(rc)
        if not _polygon_meets_rectangle(hull, np.array([-0.5, -0.5]), np.array([h - 0.5, w - 0.5])):
            raise VesselfieldError(f"view {i}: the volume box projects entirely outside the {h}x{w} detector")
