"""Realistic two-view inputs: what real angiograms and C-arms do to ideal simulated views.

Ideal simulated views (:func:`vesselfield.render.project_views`) are exact line integrals seen
from exactly the recorded poses. Real acquisitions are not; :class:`Degradation` reproduces the
usual defects, each set by one documented field, and the same ``seed`` always gives the same
degradation (every random draw comes from ``numpy.random.default_rng((seed, view, part))``).

Images (line integrals, mm), in the order a detector applies them:

1. ``blur_px``: Gaussian detector blur, σ in pixels;
2. ``background``: a smooth residual background (what subtraction leaves: a low-frequency field,
   white noise filtered with σ = ``BACKGROUND_SCALE`` x the detector's smaller side, periodic,
   scaled so that its largest magnitude is ``background`` x the view's peak line integral);
3. ``noise``: white Gaussian noise of σ = ``noise`` x the view's peak;
4. ``poisson``: signal-dependent (quantum) noise, Gaussian with variance
   ``poisson² x peak x max(I, 0)``: σ = ``poisson`` x peak where I = peak.

Geometry (the images are simulated from the *true* poses; the recorded geometry, what the user
has, stays as it was):

5. ``angle_deg``: each view's primary and secondary angles are off by ``angle_deg`` each, with a
   random sign per angle;
6. ``shift_mm``: the object moves rigidly between acquisitions: view i >= 1 sees it shifted by
   a vector of length ``shift_mm`` in a random direction (view 0 is the reference).

Masks (binary segmentations of the views):

7. ``breaks``: that many gaps cut into thin branches (skeleton pixels whose half-width is at most
   ``thin_px``), each a disc of radius ``max(gap_px, half-width + 1)``;
8. ``blobs``: that many false blobs, discs of radius ``blob_px`` placed away from the vessels.

Text form (the CLI's ``--degrade``): ``noise=0.02,blur_px=1,background=0.03,angle_deg=1,shift_mm=1.5``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from vesselfield.errors import VesselfieldError

__all__ = [
    "BACKGROUND_SCALE",
    "Degradation",
    "SimulatedViews",
    "break_thin_branches",
    "degrade_line_integrals",
    "degrade_masks",
    "parse_degradation",
    "perturb_poses",
    "simulate_views",
    "smooth_background",
    "truth_in_reference_frame",
]

BACKGROUND_SCALE = 0.25
"""σ of the background's low-pass filter as a fraction of the detector's smaller side."""

_PARTS = {"blur": 0, "background": 1, "noise": 2, "poisson": 3, "pose": 4, "breaks": 5, "blobs": 6}


@dataclass(frozen=True)
class Degradation:
    """What happens to ideal views on a real C-arm (module docstring); all zero = ideal views."""

    noise: float = 0.0
    """White Gaussian noise σ, as a fraction of each view's peak line integral (0.02 = 2 %)."""
    poisson: float = 0.0
    """Signal-dependent noise: variance poisson² x peak x I (σ = poisson x peak at the peak)."""
    blur_px: float = 0.0
    """Detector blur: Gaussian σ in pixels."""
    background: float = 0.0
    """Smooth residual background: largest magnitude as a fraction of each view's peak (±)."""
    angle_deg: float = 0.0
    """Pose error: each view's primary and secondary angles are off by this much (random sign)."""
    shift_mm: float = 0.0
    """Motion between acquisitions: views 1, 2, ... see the object shifted by this length (random direction)."""
    breaks: int = 0
    """Masks: number of gaps cut into thin branches."""
    gap_px: float = 4.0
    """Masks: radius (pixels) of each cut (at least the branch's half-width + 1, so it cuts through)."""
    thin_px: float = 3.0
    """Masks: a branch is thin where its half-width (distance to the background) is at most this (pixels)."""
    blobs: int = 0
    """Masks: number of false blobs added away from the vessels."""
    blob_px: float = 3.0
    """Masks: radius of each false blob (pixels)."""
    seed: int = 0
    """Seed of every random draw (the same seed gives the same degradation)."""

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise VesselfieldError(f"degradation {f.name} must be a finite number, got {value!r}")
            if value < 0:
                raise VesselfieldError(f"degradation {f.name} must be >= 0, got {value:g}")
        for name in ("breaks", "blobs", "seed"):
            if float(getattr(self, name)) != int(getattr(self, name)):
                raise VesselfieldError(f"degradation {name} must be a whole number, got {getattr(self, name)!r}")
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.noise >= 1 or self.poisson >= 1:
            raise VesselfieldError(f"degradation noise and poisson are fractions of the peak and must be < 1, got "
                                   f"{self.noise:g} and {self.poisson:g}")
        if self.background >= 1:
            raise VesselfieldError(f"degradation background is a fraction of the peak and must be < 1, got "
                                   f"{self.background:g}")
        if self.angle_deg > 20:
            raise VesselfieldError(f"degradation angle_deg={self.angle_deg:g} is not a calibration error (at most 20)")
        if self.blur_px > 50 or self.gap_px > 100 or self.blob_px > 100 or self.thin_px > 100:
            raise VesselfieldError("degradation blur_px must be <= 50 and gap_px, blob_px, thin_px <= 100 pixels")

    @property
    def images(self) -> bool:
        """True when the line integrals themselves change (blur, background or noise)."""
        return bool(self.blur_px or self.background or self.noise or self.poisson)

    @property
    def poses(self) -> bool:
        """True when the true poses differ from the recorded geometry."""
        return bool(self.angle_deg or self.shift_mm)

    @property
    def masks(self) -> bool:
        """True when masks get broken branches or false blobs."""
        return bool(self.breaks or self.blobs)

    def to_text(self) -> str:
        """The ``--degrade`` text of the fields that differ from their defaults ("" for none)."""
        default = Degradation()
        return ",".join(f"{k}={v:g}" for k, v in asdict(self).items() if v != getattr(default, k))


def parse_degradation(text: str | None, *, seed: int | None = None) -> Degradation:
    """``"noise=0.02,blur_px=1"`` -> :class:`Degradation`; None or "" -> no degradation.

    Raises:
        VesselfieldError: an unknown name (the known ones are listed), a value that is not a number,
            or an impossible value (negative, a fraction >= 1, ...).
    """
    values: dict = {}
    names = [f.name for f in fields(Degradation)]
    for item in (text or "").replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise VesselfieldError(f"--degrade item {item!r} is not NAME=VALUE")
        if key not in names:
            raise VesselfieldError(f"unknown degradation {key!r}: use {', '.join(names)}")
        try:
            values[key] = float(value)
        except ValueError:
            raise VesselfieldError(f"degradation {key}={value.strip()!r} is not a number") from None
    if seed is not None and "seed" not in values:
        values["seed"] = seed
    return Degradation(**values)


def _rng(degradation: Degradation, view: int, part: str) -> np.random.Generator:
    return np.random.default_rng((int(degradation.seed), int(view), _PARTS[part]))


def smooth_background(shape, rng: np.random.Generator) -> np.ndarray:
    """(H, W) float64 smooth field with max |b| = 1: white noise low-passed with σ =
    ``BACKGROUND_SCALE`` x min(H, W) (periodic), then scaled."""
    from scipy import ndimage

    field_ = ndimage.gaussian_filter(rng.standard_normal(shape), BACKGROUND_SCALE * min(shape), mode="wrap")
    return field_ / max(float(np.abs(field_).max()), 1e-300)


def degrade_line_integrals(images, degradation: Degradation) -> list[np.ndarray]:
    """Blur, background and noise (module docstring, steps 1-4) of clean line integrals.

    Args:
        images: one (H, W) array of line integrals (mm) per view.

    Returns:
        (H, W) float32 per view; values may be negative (noise and background), as in subtracted
        angiograms. The peak of each view is taken from the clean image.
    """
    from scipy import ndimage

    out = []
    for i, image in enumerate(images):
        clean = np.asarray(image, dtype=np.float64)
        peak = float(clean.max())
        x = clean
        if degradation.blur_px > 0:
            x = ndimage.gaussian_filter(x, float(degradation.blur_px), mode="nearest")
        if degradation.background > 0:
            x = x + degradation.background * peak * smooth_background(x.shape, _rng(degradation, i, "background"))
        if degradation.noise > 0:
            x = x + degradation.noise * peak * _rng(degradation, i, "noise").standard_normal(x.shape)
        if degradation.poisson > 0:
            sigma = degradation.poisson * np.sqrt(peak * np.maximum(clean, 0.0))
            x = x + sigma * _rng(degradation, i, "poisson").standard_normal(x.shape)
        out.append(x.astype(np.float32))
    return out


def perturb_poses(geometry, degradation: Degradation):
    """The true poses of a degraded acquisition (module docstring, steps 5-6).

    Returns:
        ``(true_geometry, record)``: a :class:`~vesselfield.geometry.Geometry` on the same volume
        whose views have the true angles and ``isocenter_mm`` = -shift, and a JSON-able list with,
        per view, ``primary_offset_deg``, ``secondary_offset_deg`` and ``shift_mm`` (3,).
    """
    from vesselfield.geometry import Geometry

    views, record = [], []
    for i, view in enumerate(geometry.views):
        rng = _rng(degradation, i, "pose")
        signs = rng.choice([-1.0, 1.0], size=2)
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        da, db = (float(s * degradation.angle_deg) for s in signs)
        shift = degradation.shift_mm * direction if i > 0 else np.zeros(3)
        views.append(view.moved(primary_deg=da, secondary_deg=db, shift_mm=shift))
        record.append({"view": i, "primary_offset_deg": da, "secondary_offset_deg": db,
                       "shift_mm": [float(s) for s in shift]})
    return Geometry(geometry.volume, views), record


def break_thin_branches(mask: np.ndarray, count: int, rng: np.random.Generator, *, gap_px: float = 4.0,
                        thin_px: float = 3.0) -> np.ndarray:
    """``mask`` with ``count`` gaps cut into thin branches (module docstring, step 7); bool (H, W).

    Cut centres are skeleton pixels whose distance to the background is at most ``thin_px``,
    drawn without replacement and at least ``4 gap_px`` apart; fewer cuts are made when fewer
    such places exist.
    """
    from scipy import ndimage
    from skimage.morphology import skeletonize

    mask = np.asarray(mask, dtype=bool).copy()
    if count <= 0 or not mask.any():
        return mask
    half_width = ndimage.distance_transform_edt(mask)
    candidates = np.argwhere(skeletonize(mask) & (half_width <= thin_px))
    rng.shuffle(candidates)
    chosen: list = []
    for rc in candidates:
        if len(chosen) == count:
            break
        if all(np.hypot(*(rc - c)) >= 4 * gap_px for c in chosen):
            chosen.append(rc)
    rr, cc = np.mgrid[: mask.shape[0], : mask.shape[1]]
    for r, c in chosen:
        radius = max(float(gap_px), float(half_width[r, c]) + 1.0)
        mask &= (rr - r) ** 2 + (cc - c) ** 2 > radius**2
    return mask


def _add_blobs(mask: np.ndarray, count: int, radius: float, rng: np.random.Generator) -> np.ndarray:
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool).copy()
    if count <= 0:
        return mask
    # Centres at least 3 radii from every vessel pixel and from each other, so each blob is its own component.
    free = ndimage.distance_transform_edt(~mask) > 3 * radius
    margin = int(math.ceil(radius)) + 1
    free[:margin] = free[-margin:] = False
    free[:, :margin] = free[:, -margin:] = False
    rr, cc = np.mgrid[: mask.shape[0], : mask.shape[1]]
    for _ in range(count):
        spots = np.argwhere(free)
        if len(spots) == 0:
            break
        r, c = spots[rng.integers(len(spots))]
        disc = (rr - r) ** 2 + (cc - c) ** 2 <= radius**2
        mask |= disc
        free &= (rr - r) ** 2 + (cc - c) ** 2 > (6 * radius) ** 2
    return mask


def degrade_masks(masks, degradation: Degradation) -> list[np.ndarray]:
    """Broken thin branches and false blobs (module docstring, steps 7-8); bool (H, W) per view."""
    out = []
    for i, mask in enumerate(masks):
        m = break_thin_branches(mask, degradation.breaks, _rng(degradation, i, "breaks"), gap_px=degradation.gap_px,
                                thin_px=degradation.thin_px)
        out.append(_add_blobs(m, degradation.blobs, float(degradation.blob_px), _rng(degradation, i, "blobs")))
    return out


@dataclass
class SimulatedViews:
    """What :func:`simulate_views` returns.

    Attributes:
        images: per view (H, W) float32: line integrals (mm), or 0/1 masks with ``masks_only``.
        true_geometry: the poses the images were simulated from (the recorded geometry is the input's).
        poses: per view, the pose error that was applied (:func:`perturb_poses`'s record).
        degradation: the degradation applied.
    """

    images: list
    true_geometry: object
    poses: list
    degradation: Degradation
    clean: list = field(default_factory=list)


def simulate_views(occupancy, geometry, degradation: Degradation | None = None, *, masks_only: bool = False,
                   device="cpu") -> SimulatedViews:
    """The views of an occupancy volume as a real acquisition would give them.

    Line integrals of ``occupancy`` (on ``geometry.volume``) from the true poses
    (:func:`perturb_poses`), then blur, background and noise (:func:`degrade_line_integrals`). With
    ``masks_only`` each view is then segmented as a user would: the noise-aware mask of
    :func:`vesselfield.render.preprocess.vessel_mask` (``projection_mask`` for clean views), then
    broken and blotted (:func:`degrade_masks`).
    """
    import torch

    from vesselfield.render.preprocess import vessel_mask
    from vesselfield.render.projector import project_volume

    degradation = degradation or Degradation()
    true_geometry, poses = perturb_poses(geometry, degradation)
    volume = torch.as_tensor(np.asarray(occupancy, dtype=np.float32), device=device)
    with torch.no_grad():
        clean = [project_volume(volume, geometry.volume, view).detach().cpu().numpy().astype(np.float32)
                 for view in true_geometry.views]
    images = degrade_line_integrals(clean, degradation) if degradation.images else [c.copy() for c in clean]
    if masks_only:
        masks = [vessel_mask(image).mask for image in images]
        images = [m.astype(np.float32) for m in degrade_masks(masks, degradation)]
    return SimulatedViews(images=images, true_geometry=true_geometry, poses=poses, degradation=degradation,
                          clean=clean)


def truth_in_reference_frame(occupancy, grid, recorded_view, true_view) -> np.ndarray:
    """The ground truth as a two-view reconstruction can see it: in the frame of the reference view.

    Two views fix the object only up to a rigid motion of the whole scene: a reconstruction made
    with view 0's recorded pose is the truth moved by what separates view 0's recorded pose from
    its true one. This resamples the truth by that motion: a point X seen by the true view lies at
    ``X' = R_rec.T R_true (X - O_true) + O_rec`` in the reconstruction (R: :attr:`ConeBeamView.rotation`,
    O: the isocenters), so the returned volume at X' is ``occupancy`` at ``R_true.T R_rec (X' - O_rec) + O_true``
    (trilinear; zero outside the grid). The identity when the two views are the same pose.

    Returns:
        (X, Y, Z) float32 on ``grid``.
    """
    from scipy import ndimage

    r_rec, r_true = recorded_view.rotation, true_view.rotation
    o_rec, o_true = np.asarray(recorded_view.isocenter_mm, float), np.asarray(true_view.isocenter_mm, float)
    if np.allclose(r_rec, r_true, atol=1e-12) and np.allclose(o_rec, o_true, atol=1e-9):
        return np.asarray(occupancy, dtype=np.float32).copy()
    centres = grid.voxel_centers_mm(np.float64).reshape(-1, 3)
    source = (centres - o_rec) @ (r_true.T @ r_rec).T + o_true
    ijk = grid.world_to_index(source)
    values = ndimage.map_coordinates(np.asarray(occupancy, dtype=np.float32), ijk.T, order=1, mode="constant", cval=0.0)
    return values.reshape(grid.shape).astype(np.float32)
