"""Two-view X-ray reconstruction: SDF-CAR, the NeCA baseline and their ablations (imports torch).

SDF-CAR (Reda et al., "SDF-CAR: 3D Coronary Artery Reconstruction from Two Views with a Hybrid
SDF-Occupancy Implicit Representation", MIDL 2026 submission) and NeCA (Wang, Banerjee, Grau,
"NeCA: 3D coronary artery tree reconstruction from two 2D projections via neural implicit
representation", Bioengineering 2024) optimise one field per patient so that its cone-beam
projections match the views. The four methods are one pipeline with two switches:

============  ================  =====================================
method        representation    loss
============  ================  =====================================
sdf-car       SDF s, o=σ(-αs)   λ1 L_geo + λ2 L_occ   (the paper)
sdf-occ       SDF               L_occ                  (ablation)
occ-combined  occupancy σ(v)    λ1 L_geo + λ2 L_occ   (ablation)
neca          occupancy σ(v)    L_occ                  (baseline)
============  ================  =====================================

The pipeline (docs/methods/sdf-car.md explains every choice):

1. Visual hull. Every voxel that projects outside a view's mask is empty in any consistent
   answer, so the field is only optimised on the hull of the masks (dilated by
   ``hull_dilate_voxels``) and on a thin band around it; outside the band it is empty. With
   line-integral inputs the masks are ``projection_mask`` of the views.
2. Rendering. One sparse ray x hull-voxel matrix per view (:func:`vesselfield.render.ray_voxel_matrix`)
   holds the projector's exact weights, so a forward + backward projection of every ray that
   can see the hull costs two sparse products (~100x faster than ray marching on a CPU).
3. Field on the band. Preset ``cpu``: an explicit value per band voxel (on 2 CPU cores a hash
   grid reaches ~0.1 M points/s, far too slow). Preset ``gpu``: the paper's hash encoding and
   8-layer residual MLP (NeCA: its skip MLP) evaluated at the band voxel centres.
4. Loss. ``L_occ``: MSE between rendered and target line integrals (mm²), or, for binary masks,
   between the soft silhouette ``1 - exp(-k I)`` and the mask. ``L_geo``: MSE between the soft
   signed distance of the rendered silhouette and the exact signed distance of the mask
   (:mod:`vesselfield.losses.projection`; differentiable, unlike the published code's).
   SDF representations add an eikonal term ``mean((|∇s| - 1)²)`` on the band (finite
   differences, mm), the prior that makes ``s`` a distance and its 0.5-occupancy surface a
   tube wall; occupancy representations have no such prior.
5. Output: occupancy on the geometry's grid (zero outside the hull), the signed distance (mm)
   to its 0.5 surface, the rendered views.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
from scipy import ndimage

from vesselfield.config import build_config, check_numbers
from vesselfield.errors import VesselfieldError
from vesselfield.geometry import Geometry, check_views_see_volume
from vesselfield.grid import VolumeGrid

__all__ = [
    "METHODS",
    "PRESETS",
    "SdfCarConfig",
    "XrayConfig",
    "XrayResult",
    "check_views",
    "config_from_dict",
    "reconstruct_xray",
    "xray_config",
]

METHODS = ("sdf-car", "neca", "occ-combined", "sdf-occ")
PRESETS = ("cpu", "gpu")

# The two switches of each method: (representation, loss). The table in the module docstring.
METHOD_SWITCHES = {
    "sdf-car": ("sdf", "combined"),
    "sdf-occ": ("sdf", "occupancy"),
    "occ-combined": ("occupancy", "combined"),
    "neca": ("occupancy", "occupancy"),
}


@dataclass
class SdfCarConfig:
    """Every setting of a two-view reconstruction (SDF-CAR, NeCA and the ablations); every default.

    Fields left at ``None`` take the value their ``method`` and ``preset`` imply, filled in when the
    config is made (:meth:`_fill_implied`), so ``SdfCarConfig(method="neca", preset="gpu")`` is
    NeCA's own setting and a contradiction such as ``method="neca", representation="sdf"`` is an
    error. ``dataclasses.asdict`` of it is what ``config.yaml`` stores and a rerun reads back.
    The presets are named constructors: :meth:`cpu` and :meth:`gpu`.
    """

    config_name: ClassVar[str] = "sdf-car"
    key_fields: ClassVar[tuple] = ("method", "preset")
    free_on_resume: ClassVar[tuple] = ("iterations", "time_limit_s", "checkpoint_every")

    method: Literal["sdf-car", "neca", "occ-combined", "sdf-occ"] = "sdf-car"
    """sdf-car (the paper), neca (baseline), occ-combined or sdf-occ (ablations): chooses ``representation``
    and ``loss`` (table in the module docstring)."""
    preset: Literal["cpu", "gpu"] = "cpu"
    """cpu: an explicit value per band voxel, minutes on a laptop; gpu: the paper's hash grid + MLP."""
    representation: Literal["sdf", "occupancy"] | None = None
    """sdf: the field is s and occupancy sigmoid(-alpha s); occupancy: sigmoid(v). None: the method's."""
    loss: Literal["combined", "occupancy"] | None = None
    """combined: lambda_geo L_geo + lambda_occ L_occ; occupancy: L_occ only. None: the method's."""
    field: Literal["grid", "hash-mlp"] | None = None
    """grid: one value per band voxel; hash-mlp: hash encoding + MLP at the band voxel centres.
    None: the preset's (cpu grid, gpu hash-mlp)."""
    iterations: int | None = None
    """Optimisation steps (all rays of every view each step). None: the preset's (cpu 3000, gpu 5000,
    the paper's)."""
    learning_rate: float | None = None
    """Adam step, in normalised field units (grid) or on the network weights (hash-mlp). None: 1e-2 for
    an SDF grid, 0.5 for an occupancy grid (a logit plays the role of -alpha s, so the same step in logit
    units is alpha times larger), 1e-4 for the hash-mlp (the paper's)."""
    sdf_sharpness_alpha: float = 50.0
    """alpha of o = sigmoid(-alpha s), s in normalised units (half the volume's largest extent = 1), as the paper."""
    lambda_geo: float | None = None
    """Weight of L_geo. None: the method's (1.0, the paper's, with the combined loss; 0 with the
    occupancy loss, which has no L_geo: a non-zero value there is an error)."""
    lambda_occ: float | None = None
    """Weight of L_occ. None: the method's (0.25, the paper's, with the combined loss; 1.0 with the
    occupancy loss alone, as NeCA trains)."""
    eikonal_weight: float | None = None
    """Weight of the eikonal prior on the band relative to L_occ: the loss is
    lambda_geo L_geo + lambda_occ (L_occ + eikonal_weight E); 0 turns it off. None: the
    representation's (2e-3 for an SDF; 0 for occupancy, which is no distance: a non-zero value
    there is an error)."""
    geo_downsample: int = 4
    """L_geo is computed on views max-pooled by this factor (a 512 x 512 view becomes 128 x 128)."""
    geo_every: int = 1
    """Compute L_geo every this many iterations (1: every iteration)."""
    silhouette_k_per_mm: float = math.log(10.0)
    """k of the soft silhouette 1 - exp(-k I) that compares a rendering with a mask (1/mm)."""
    init_occupancy: float = 0.08
    """Starting occupancy everywhere (nearly empty beat 0.5 in every measurement)."""
    hull_dilate_voxels: int = 1
    """Dilation of the visual hull (voxels) before it bounds the field."""
    band_voxels: int = 2
    """Width (voxels) of the band around the hull on which the eikonal prior holds."""
    hash_levels: int = 16
    """Hash grid levels (hash-mlp; paper 16)."""
    hash_features_per_level: int = 2
    """Features per hash level (paper 2)."""
    hash_log2_table_size: int = 19
    """log2 of the hash table size per level (paper 19)."""
    hash_base_resolution: int = 16
    """Coarsest hash grid resolution."""
    hash_finest_resolution: int = 256
    """Finest hash grid resolution (twice the 128-voxel grid)."""
    hash_backend: Literal["auto", "torch", "tcnn"] = "auto"
    """Hash grid implementation: tiny-cuda-nn when importable on CUDA (auto), or pure PyTorch."""
    mlp_hidden: int | None = None
    """Hidden width of the MLP (hash-mlp). None: 64 for SDF-CAR's residual MLP, 256 for NeCA's skip MLP."""
    mlp_layers: int = 8
    """Hidden layers of the MLP (both papers: 8)."""
    robust_input: bool = True
    """Line-integral views go through :func:`vesselfield.render.preprocess.vessel_mask` first: noise level
    estimated, a smooth background removed, the hull's mask chosen above the noise (hysteresis, specks
    dropped). An exact simulated view passes through unchanged. False: the raw view and
    ``projection_mask`` (the behaviour before 0.3)."""
    background_scale_px: float = 16.0
    """σ (detector pixels) of the smooth background removed from each view before fitting (normalised
    convolution of the non-vessel pixels; 0: none). Views that are exactly zero off the vessels have none."""
    joint_background_degree: int = 1
    """Degree of a per-view background polynomial optimised jointly with the field on the rendered
    rays (what the first fit left; -1: none). Line integrals with ``robust_input`` only (exact views too:
    measured better there as well)."""
    data_term: Literal["mse", "huber", "deadzone"] = "huber"
    """L_occ on line integrals: mse (the paper's); huber (quadratic up to ``huber_k`` σ, linear beyond:
    robust to what the background model misses); deadzone (residuals within ``huber_k`` σ cost nothing: the
    noise band is left to the priors). σ: the view's estimated noise after smoothing. An exact view (σ = 0)
    is always mse."""
    huber_k: float = 1.5
    """Threshold of huber and deadzone in units of the view's estimated (smoothed) noise σ."""
    occ_downsample: int = 1
    """On noisy line integrals (estimated σ > 0), L_occ compares views average-pooled by this factor: the noise
    averages down by the factor and a pixel of blur matters less; exact views always use 1."""
    detector_blur_px: float = 0.0
    """Gaussian σ (detector pixels) of the detector's blur: the rendering is blurred the same way before it is
    compared with a line-integral view (0: none)."""
    volume_weight: float = 10.0
    """Sparsity prior on noisy line integrals: lambda_occ x volume_weight x σ_s² x mean hull occupancy is added
    (σ_s: the largest smoothed noise σ of the views, mm), so the emptiest field that fits within the noise
    wins; nothing on exact views (σ = 0)."""
    vesselness: bool = False
    """Also require a Frangi vesselness response in the mask (unsubtracted angiograms)."""
    refine_pose: bool = True
    """Correct the poses of views 2, 3, ... against view 1 from the trees' landmarks before fitting
    (:mod:`vesselfield.methods.xray_pose`); the CLI's --no-refine-pose turns it off."""
    pose_max_angle_deg: float = 5.0
    """Bound of the correction of each angle (deg); a correction that runs to it is an error."""
    pose_max_shift_mm: float = 10.0
    """Bound of each component of the object shift a view may see (mm)."""
    connect_max_gap_mm: float | None = None
    """After the fit, pieces of the reconstruction are joined through the visual hull when the gap between
    them is at most this (mm; :func:`vesselfield.meshing.connect.connect_components`; 0: off). None: by
    input, 40 mm for line integrals (a tight hull: bridges follow the vessels) and 0 for masks (the hull of
    two masks is several times the tree, and bridges through it join ghosts: measured, docs/methods/sdf-car.md)."""
    min_fragment_fraction: float = 0.05
    """Pieces left unjoined and smaller than this share of the reconstructed volume are removed (0: keep)."""
    seed: int = 0
    """Seed of every random number generator."""
    checkpoint_every: int = 500
    """Iterations between checkpoints (--resume restarts from the last one)."""
    time_limit_s: float | None = None
    """Stop after this many seconds (a checkpoint is written; --resume continues). None: no limit."""

    def __post_init__(self):
        if self.method not in METHODS:
            raise VesselfieldError(f"unknown method {self.method!r}: use one of {', '.join(METHODS)}")
        if self.preset not in PRESETS:
            raise VesselfieldError(f"unknown preset {self.preset!r}: use cpu or gpu")
        self._fill_implied()
        if self.field not in ("grid", "hash-mlp"):
            raise VesselfieldError(f"unknown field {self.field!r}: use grid or hash-mlp")
        check_numbers(self, positive=("learning_rate", "sdf_sharpness_alpha", "silhouette_k_per_mm", "pose_max_angle_deg",
                                "pose_max_shift_mm"),
                      non_negative=("iterations", "seed", "lambda_geo", "lambda_occ", "eikonal_weight", "hull_dilate_voxels",
                                    "band_voxels", "checkpoint_every", "time_limit_s", "huber_k", "connect_max_gap_mm", "background_scale_px",
                                    "volume_weight", "detector_blur_px",
                                    "min_fragment_fraction"),
                      at_least_one=("geo_downsample", "geo_every", "mlp_hidden", "mlp_layers", "occ_downsample"),
                      flags={"time_limit_s": "--time-limit", "iterations": "--iterations"})
        if not 0 < self.init_occupancy < 1:
            raise VesselfieldError(f"init_occupancy must lie in (0, 1), got {self.init_occupancy}")
        if self.data_term not in ("mse", "huber", "deadzone"):
            raise VesselfieldError(f"unknown data_term {self.data_term!r}: use mse, huber or deadzone")
        if not -1 <= int(self.joint_background_degree) <= 6:
            raise VesselfieldError(f"joint_background_degree must lie in -1..6, got {self.joint_background_degree}")
        if self.hash_finest_resolution < self.hash_base_resolution:
            raise VesselfieldError(f"hash_finest_resolution ({self.hash_finest_resolution}) must be at least "
                                   f"hash_base_resolution ({self.hash_base_resolution})")
        if self.method == "neca" and self.field == "hash-mlp" and self.mlp_layers < 2:
            raise VesselfieldError(f"NeCA's skip MLP needs mlp_layers >= 2 (the input re-enters a later layer), "
                                   f"got {self.mlp_layers}")

    def _fill_implied(self) -> None:
        """The values that ``method`` and ``preset`` imply, in one place; a contradiction is an error."""
        representation, loss = METHOD_SWITCHES[self.method]
        for name, implied in (("representation", representation), ("loss", loss)):
            given = getattr(self, name)
            if given is None:
                setattr(self, name, implied)
            elif given != implied:
                raise VesselfieldError(f"method {self.method} uses {name} {implied!r}, not {given!r}: choose the "
                                       f"method whose {name} you want ({', '.join(METHODS)})")
        if self.field is None:
            self.field = "grid" if self.preset == "cpu" else "hash-mlp"
        if self.iterations is None:
            self.iterations = 3000 if self.preset == "cpu" else 5000
        if self.learning_rate is None:
            if self.field == "hash-mlp":
                self.learning_rate = 1e-4
            else:
                self.learning_rate = 1e-2 if self.representation == "sdf" else 0.5
        if self.mlp_hidden is None:
            self.mlp_hidden = 256 if self.method == "neca" else 64
        combined, sdf = self.loss == "combined", self.representation == "sdf"
        implied = {"lambda_geo": 1.0 if combined else 0.0, "lambda_occ": 0.25 if combined else 1.0,
                   "eikonal_weight": 2e-3 if sdf else 0.0}
        for name, value in implied.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if not combined and self.lambda_geo != 0:
            raise VesselfieldError(f"method {self.method} has no L_geo (its loss is L_occ alone): lambda_geo must be "
                                   f"0, got {self.lambda_geo}; use sdf-car or occ-combined for L_geo")
        if not sdf and self.eikonal_weight != 0:
            raise VesselfieldError(f"method {self.method} fits an occupancy, not a distance: eikonal_weight must be "
                                   f"0, got {self.eikonal_weight}; use sdf-car or sdf-occ for the eikonal prior")

    @classmethod
    def cpu(cls, method: str = "sdf-car", **overrides) -> "SdfCarConfig":
        """The ``cpu`` preset: an explicit SDF (or occupancy) value per band voxel, 3000 steps."""
        return build_config(cls, {"method": method, "preset": "cpu", **overrides})

    @classmethod
    def gpu(cls, method: str = "sdf-car", **overrides) -> "SdfCarConfig":
        """The ``gpu`` preset: the paper's hash grid + MLP, 5000 steps at 1e-4."""
        return build_config(cls, {"method": method, "preset": "gpu", **overrides})


#: The name this config had before 0.2 (one release).
XrayConfig = SdfCarConfig


def xray_config(method: str | None = None, preset: str | None = None, **overrides) -> SdfCarConfig:
    """The configuration of ``method`` under ``preset`` with ``overrides`` (field names; None = not
    given: the class's default).

    Raises :class:`VesselfieldError` for an unknown method, preset, field name or a bad value.
    """
    return build_config(SdfCarConfig, {"method": method, "preset": preset, **overrides})


def config_from_dict(values: dict) -> SdfCarConfig:
    """An :class:`SdfCarConfig` from a dict such as ``config.yaml``'s (unknown keys are errors)."""
    return build_config(SdfCarConfig, values)


@dataclass
class XrayResult:
    """What :func:`reconstruct_xray` returns.

    Attributes:
        grid: the geometry's volume grid.
        occupancy: (X, Y, Z) float32 in [0, 1] (zero outside the visual hull).
        sdf: (X, Y, Z) float32, mm: signed distance to the 0.5-occupancy surface, negative inside.
        rendered: per view, (H, W) float32 line integrals (mm) of ``occupancy``.
        log: one dict per iteration (``iteration``, ``time_s``, ``loss``, ``loss_occ``, ...).
        seconds: wall time of the optimisation (this call; resumed runs count only their part).
        iterations: iterations completed in total.
        stopped: ``"iterations"`` (all done) or ``"time_limit"``.
        config: the configuration used.
        hull_voxels: voxels in the (dilated) visual hull.
        setup_seconds: time spent on the pose refinement, the hull and the projection matrices.
        info: input kind, device, band size, estimated noise σ per view (mm), joint background.
        geometry: the geometry the field was fitted with (the refined one when poses were refined).
        pose: the :class:`~vesselfield.methods.xray_pose.PoseRefinement`, or None.
    """

    grid: VolumeGrid
    occupancy: np.ndarray
    sdf: np.ndarray
    rendered: list
    log: list
    seconds: float
    iterations: int
    stopped: str
    config: SdfCarConfig
    hull_voxels: int = 0
    setup_seconds: float = 0.0
    info: dict = field(default_factory=dict)
    geometry: Geometry | None = None
    pose: object = None


# ----------------------------------------------------------------------------- input checks
def check_views(geometry: Geometry, views, kind: str) -> list[np.ndarray]:
    """Validate the per-view inputs against the geometry; returns float32 (line integrals) or bool (masks)."""
    if kind not in ("line_integral", "mask"):
        raise VesselfieldError(f"unknown input kind {kind!r}: use line_integral or mask")
    if not isinstance(geometry, Geometry):
        raise VesselfieldError("geometry must be a vesselfield.geometry.Geometry")
    views = list(views)
    what = "masks" if kind == "mask" else "projections"
    if len(views) != len(geometry.views):
        raise VesselfieldError(f"{len(views)} {what} given but the geometry has {len(geometry.views)} views")
    out = []
    for i, (image, view) in enumerate(zip(views, geometry.views), start=1):
        if hasattr(image, "detach"):
            image = image.detach().cpu().numpy()
        image = np.asarray(image)
        name = f"{'mask' if kind == 'mask' else 'projection'} {i}"
        if image.shape != tuple(view.detector_shape):
            raise VesselfieldError(
                f"{name} has shape {image.shape} but view {i}'s detector is {tuple(view.detector_shape)}"
            )
        if image.dtype.kind not in "biuf":
            raise VesselfieldError(f"{name} must be numeric, got {image.dtype}")
        if not np.all(np.isfinite(image)):
            raise VesselfieldError(f"{name} contains NaN or infinite values")
        if kind == "mask":
            image = image != 0  # non-zero = vessel, as load_mask reads PNG and NPY masks
            if not image.any():
                raise VesselfieldError(f"{name} is empty: no vessel pixel")
        else:
            # Noise and a residual background make a subtracted angiogram dip below zero; an image that
            # is more negative than positive is inverted or not a line integral at all.
            if float(image.min()) < -max(float(image.max()), 0.0):
                raise VesselfieldError(f"{name} is more negative (min {float(image.min()):g} mm) than positive (max "
                                       f"{float(image.max()):g} mm): give line integrals, vessels positive")
            image = image.astype(np.float32)
            if not (image > 0).any():
                raise VesselfieldError(f"{name} is empty: all line integrals are zero")
        out.append(image)
    check_views_see_volume(geometry)
    return out


# ----------------------------------------------------------------------------- the problem
@dataclass
class _Problem:
    grid: VolumeGrid
    hull: np.ndarray  # (X, Y, Z) bool
    band_index: torch.Tensor  # (B,) flat voxel indices of the band (sorted)
    hull_in_band: torch.Tensor  # (N_hull,) positions of the hull voxels in the band vector
    eik_centre: torch.Tensor  # (E,) band positions with all three forward neighbours in the band
    eik_next: torch.Tensor  # (3, E) band positions of the +x, +y, +z neighbours
    matrices: list  # RayVoxelMatrix per view (columns = hull voxels, rows = the pixels of ``pixels``)
    pixels: list  # per view (P,) flat pixel indices (row-major) of the matrix's rows
    targets: list  # per view (H, W) float32 target: line integrals (mm) or 0/1 mask
    geo_targets: list  # per view (h, w) signed distance (mm) of the pooled target mask, or None
    masks: list  # per view (H, W) bool
    noise_sigma: list  # per view estimated noise σ of the target (mm; 0 for masks and exact views)

    def render(self, v: int, occ_hull: torch.Tensor, shape) -> torch.Tensor:
        """(H, W) line integrals (mm) of the hull occupancies in view ``v``: zero off the matrix's rows."""
        rendered = self.matrices[v].project(occ_hull)
        image = torch.zeros(shape[0] * shape[1], dtype=rendered.dtype, device=rendered.device)
        return image.index_put((self.pixels[v],), rendered).view(shape[0], shape[1])


def _build_problem(geometry: Geometry, views, masks, kind: str, config: SdfCarConfig, device,
                   noise_sigma=None) -> _Problem:
    from vesselfield.render import ray_voxel_matrix, visual_hull
    from vesselfield.render.footprint import voxel_footprint

    grid = geometry.volume
    hull = visual_hull(masks, geometry, dilate_voxels=int(config.hull_dilate_voxels))
    if not hull.any():
        raise VesselfieldError("the visual hull of the views is empty: the masks do not back-project to a common region"
                               + (" (after pose refinement)" if config.refine_pose and len(masks) > 1 else ""))
    band = ndimage.binary_dilation(hull, iterations=int(config.band_voxels)) if config.band_voxels else hull.copy()
    band_flat = np.flatnonzero(band)
    hull_flat = np.flatnonzero(hull)
    hull_in_band = np.searchsorted(band_flat, hull_flat)

    # Forward neighbours inside the band, for the finite-difference eikonal term.
    position = np.full(grid.num_voxels, -1, dtype=np.int64)
    position[band_flat] = np.arange(len(band_flat))
    ijk = np.stack(np.unravel_index(band_flat, grid.shape), axis=0)
    nxt = []
    ok = np.ones(len(band_flat), dtype=bool)
    for axis in range(3):
        moved = ijk.copy()
        moved[axis] += 1
        inside = moved[axis] < grid.shape[axis]
        moved[axis] = np.minimum(moved[axis], grid.shape[axis] - 1)
        p = position[np.ravel_multi_index(tuple(moved), grid.shape)]
        ok &= inside & (p >= 0)
        nxt.append(p)
    eik_centre = np.flatnonzero(ok)
    eik_next = np.stack([n[ok] for n in nxt])

    as_t = lambda a: torch.as_tensor(a, dtype=torch.int64, device=device)  # noqa: E731
    matrices, pixels, targets, geo_targets = [], [], [], []
    for i, view in enumerate(geometry.views):
        # Rays that can see a hull voxel, plus the mask itself: the rest render zero in any answer.
        rows = ndimage.binary_dilation(voxel_footprint(hull, grid, view) | masks[i], iterations=1)
        if kind == "line_integral":
            # Pixels with signal above the noise: exactly views > 0 on an exact view.
            rows |= views[i] > 3.0 * (noise_sigma[i] if noise_sigma is not None else 0.0)
        rc = np.argwhere(rows)
        matrices.append(ray_voxel_matrix(grid, view, rc, voxel_mask=hull).to(device))
        pixels.append(as_t(rc[:, 0] * view.detector_shape[1] + rc[:, 1]))
        targets.append(torch.as_tensor(np.asarray(views[i], dtype=np.float32), device=device))
        geo_targets.append(None)
    if config.lambda_geo > 0:
        from vesselfield.losses.projection import downsample_mask
        from vesselfield.render.soft_distance import signed_distance_2d

        for i, view in enumerate(geometry.views):
            small = downsample_mask(torch.from_numpy(masks[i]), int(config.geo_downsample))
            spacing = tuple(float(s) * config.geo_downsample for s in view.pixel_spacing_mm)
            dist = signed_distance_2d(small.cpu().numpy().astype(bool), spacing)
            geo_targets[i] = torch.as_tensor(dist, dtype=torch.float32, device=device)
    return _Problem(grid, hull, as_t(band_flat), as_t(hull_in_band), as_t(eik_centre), as_t(eik_next),
                    matrices, pixels, targets, geo_targets, masks,
                    list(noise_sigma) if noise_sigma is not None else [0.0] * len(masks))


class _JointBackground(torch.nn.Module):
    """Per-view polynomial background (mm) of ``degree`` over the detector, added to the rendering
    and optimised with the field (coefficients start at zero; ``degree`` -1: none)."""

    def __init__(self, geometry: Geometry, degree: int):
        super().__init__()
        self.n_terms = 0 if degree < 0 else (degree + 1) * (degree + 2) // 2
        bases = []
        if self.n_terms:
            from vesselfield.render.preprocess import polynomial_basis

            bases = [torch.as_tensor(polynomial_basis(tuple(v.detector_shape), degree), dtype=torch.float32)
                     for v in geometry.views]
        self.bases = bases
        self.coefficients = torch.nn.Parameter(torch.zeros(len(geometry.views), max(self.n_terms, 1)))

    def to(self, device):
        self.bases = [b.to(device) for b in self.bases]
        return super().to(device)

    def forward(self, view: int):
        if not self.n_terms:
            return 0.0
        return torch.tensordot(self.coefficients[view], self.bases[view], dims=1)


class _GaussianBlur(torch.nn.Module):
    """Separable Gaussian blur of σ pixels of an (H, W) image (zero padding; identity for σ = 0), applied
    to the box of the rendered pixels only (``box``: the rest of the view renders zero)."""

    def __init__(self, sigma_px: float, box=None):
        super().__init__()
        self.sigma_px = float(sigma_px)
        self.box = box
        self.half = max(1, int(math.ceil(4.0 * self.sigma_px)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.sigma_px <= 0:
            return image
        x = torch.arange(-self.half, self.half + 1, dtype=image.dtype, device=image.device)
        k = torch.exp(-0.5 * (x / self.sigma_px) ** 2)
        k = k / k.sum()
        r0, r1, c0, c1 = self.box if self.box is not None else (0, image.shape[0], 0, image.shape[1])
        y = torch.nn.functional.conv2d(image[r0:r1, c0:c1][None, None], k.view(1, 1, 1, -1), padding=(0, self.half))
        y = torch.nn.functional.conv2d(y, k.view(1, 1, -1, 1), padding=(self.half, 0))[0, 0]
        out = torch.zeros_like(image)
        out[r0:r1, c0:c1] = y
        return out


def _pixel_box(pixels: torch.Tensor, shape, pad: int) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1): the box of the flat pixel indices ``pixels`` of an (H, W) view, grown by ``pad``."""
    flat = pixels.cpu().numpy()
    rr, cc = flat // shape[1], flat % shape[1]
    return (max(int(rr.min()) - pad, 0), min(int(rr.max()) + pad + 1, shape[0]),
            max(int(cc.min()) - pad, 0), min(int(cc.max()) + pad + 1, shape[1]))


def _normalised_unit_mm(grid: VolumeGrid) -> float:
    """mm per normalised field unit: half the largest extent of the volume's box."""
    return 0.5 * float(np.max(np.asarray(grid.shape) * grid.spacing))


def _make_field(config: SdfCarConfig, problem: _Problem, device) -> torch.nn.Module:
    from vesselfield.fields.band import BandGridField, BandNeuralField

    if config.field == "grid":
        return BandGridField(len(problem.band_index), config.representation, config.sdf_sharpness_alpha,
                             config.init_occupancy).to(device)
    from vesselfield.encodings import HashGridEncoding
    from vesselfield.fields import NeuralField, ResidualMLP, SkipMLP

    encoding = HashGridEncoding(
        n_levels=config.hash_levels,
        n_features_per_level=config.hash_features_per_level,
        log2_hashmap_size=config.hash_log2_table_size,
        base_resolution=config.hash_base_resolution,
        finest_resolution=config.hash_finest_resolution,
        backend=config.hash_backend,
    )
    if config.method == "neca":
        network = SkipMLP(encoding.output_dim, hidden_dim=config.mlp_hidden, n_layers=config.mlp_layers,
                          skip_layer=min(4, config.mlp_layers - 1) if config.mlp_layers > 1 else 1)
    else:
        network = ResidualMLP(encoding.output_dim, hidden_dim=config.mlp_hidden, n_layers=config.mlp_layers)
    neural = NeuralField(encoding, network, output=config.representation,
                         sdf_sharpness_alpha=config.sdf_sharpness_alpha, grid=problem.grid,
                         init_occupancy=config.init_occupancy)
    grid = problem.grid
    flat = problem.band_index.cpu().numpy()
    ijk = np.stack(np.unravel_index(flat, grid.shape), axis=-1)
    points = torch.as_tensor(grid.origin + ijk * grid.spacing, dtype=torch.float32)
    return BandNeuralField(neural, points).to(device)


def _eikonal(s: torch.Tensor, problem: _Problem, unit_mm: float) -> torch.Tensor:
    """mean((|∇s| - 1)²) over the band, ``s`` in normalised units taken to mm, forward differences
    (anisotropic spacing)."""
    s = s * unit_mm
    centre = s[problem.eik_centre]
    grads = [(s[problem.eik_next[a]] - centre) / float(problem.grid.spacing[a]) for a in range(3)]
    norm = torch.sqrt(grads[0] ** 2 + grads[1] ** 2 + grads[2] ** 2 + 1e-12)
    return ((norm - 1.0) ** 2).mean()


# ----------------------------------------------------------------------------- the run
def reconstruct_xray(
    geometry: Geometry,
    views,
    *,
    kind: str = "line_integral",
    config: SdfCarConfig | None = None,
    device: str = "auto",
    out_dir=None,
    resume: bool = False,
    progress: bool = True,
    monitor=None,
    monitor_every: int = 0,
) -> XrayResult:
    """Reconstruct a vessel tree from two (or more) views (module docstring for the method).

    Args:
        geometry: the C-arm geometry; ``geometry.volume`` is the output grid.
        views: one (H, W) image per view, in the geometry's order: float line integrals (mm,
            ``kind="line_integral"``) or binary masks (``kind="mask"``; non-zero = vessel).
        kind: ``"line_integral"`` or ``"mask"``.
        config: :class:`SdfCarConfig` (default ``SdfCarConfig()``: SDF-CAR, cpu preset).
        device: ``"auto" | "cpu" | "cuda" | "cuda:N"``.
        out_dir: folder for ``checkpoint.pt`` and ``log.csv`` (a temporary one when None).
        resume: continue from ``out_dir/checkpoint.pt`` (the same inputs and config are needed).
        progress: show a progress bar.
        monitor: optional ``monitor(iteration, occupancy (X, Y, Z) float32)``, called every
            ``monitor_every`` iterations (for time-to-quality curves; its time counts in the run's).

    Returns:
        :class:`XrayResult`.
    """
    from vesselfield.device import resolve_device
    from vesselfield.losses.projection import sdf_car_loss
    from vesselfield.meshing.signed_distance import signed_distance_volume
    from vesselfield.render import project_views, projection_mask
    from vesselfield.training import run_loop, seed_everything

    config = config or SdfCarConfig()
    if not isinstance(config, SdfCarConfig):
        raise VesselfieldError("config must be an SdfCarConfig (see SdfCarConfig.cpu)")
    views = check_views(geometry, views, kind)
    dev = resolve_device(device)
    seed_everything(int(config.seed))
    grid = geometry.volume
    noise_sigma = [0.0] * len(views)
    if kind == "mask":
        masks = views
    elif config.robust_input:
        from vesselfield.render.preprocess import vessel_mask

        signals = [vessel_mask(v, background_scale_px=float(config.background_scale_px),
                               vesselness=bool(config.vesselness))
                   for v in views]
        masks = [sig.mask for sig in signals]
        views = [sig.signal for sig in signals]
        noise_sigma = [sig.noise_sigma_mm for sig in signals]
    else:
        masks = [projection_mask(torch.from_numpy(v)).numpy() for v in views]
    for i, m in enumerate(masks, start=1):
        if not m.any():
            raise VesselfieldError(f"projection {i} has no pixel above the mask threshold: nothing to reconstruct")

    t_setup = time.perf_counter()
    pose = None
    if config.refine_pose and len(masks) > 1:
        from vesselfield.methods.xray_pose import refine_poses

        pose = refine_poses(geometry, masks, max_angle_deg=float(config.pose_max_angle_deg),
                            max_shift_mm=float(config.pose_max_shift_mm))
        geometry = pose.geometry
    problem = _build_problem(geometry, views, masks, kind, config, dev, noise_sigma)
    setup_s = time.perf_counter() - t_setup
    field_module = _make_field(config, problem, dev)
    shapes = [tuple(view.detector_shape) for view in geometry.views]
    noisy = kind == "line_integral" and max(noise_sigma) > 0
    # Also on exact views: a plane that the fit may use measured better there too (clDice 0.759 against 0.729
    # without it on the left phantom, docs/benchmarks.md).
    background = _JointBackground(geometry, int(config.joint_background_degree) if (
        kind == "line_integral" and config.robust_input) else -1).to(dev)
    blur_px = float(config.detector_blur_px) if kind == "line_integral" else 0.0
    blurs = [_GaussianBlur(blur_px, box=_pixel_box(problem.pixels[v], shape, int(math.ceil(4 * blur_px)) + 1))
             for v, shape in enumerate(shapes)]
    groups = [{"params": list(field_module.parameters())}]
    if background.n_terms:
        # The background coefficients are in mm, not in field units: their own step (0.01 mm).
        groups.append({"params": list(background.parameters()), "lr": 1e-2})
    optimizer = torch.optim.Adam(groups, lr=float(config.learning_rate))
    from vesselfield.render.preprocess import smoothed_noise_sigma

    scale = [float(config.huber_k) * smoothed_noise_sigma(sigma) if sigma > 0 else None for sigma in noise_sigma]
    huber = scale if config.data_term == "huber" else None
    deadzone = scale if config.data_term == "deadzone" else None
    # The sparsity prior scales with the noise variance it has to outweigh (mm², as L_occ).
    volume_weight = float(config.volume_weight) * max(smoothed_noise_sigma(s) ** 2 for s in noise_sigma) * float(
        config.lambda_occ) if kind == "line_integral" else 0.0
    unit_mm = _normalised_unit_mm(grid)
    use_eikonal = config.eikonal_weight > 0  # 0 for occupancy fields (SdfCarConfig)
    use_geo = config.lambda_geo > 0  # 0 for the occupancy loss (SdfCarConfig)
    occ_factor = int(config.occ_downsample) if noisy else 1
    occ_pixels = problem.pixels
    if occ_factor > 1:
        # The pooled pixels whose block holds a row of the matrices (the others render zero in any answer).
        occ_pixels = []
        for v, shape in enumerate(shapes):
            rows = torch.zeros(shape[0] * shape[1], device=dev)
            rows[problem.pixels[v]] = 1.0
            pooled = torch.nn.functional.max_pool2d(rows.view(1, 1, *shape), occ_factor)[0, 0]
            occ_pixels.append(torch.nonzero(pooled.reshape(-1) > 0).reshape(-1))
    spacings = [tuple(float(s) for s in view.pixel_spacing_mm) for view in geometry.views]

    def step(i: int) -> dict:
        out = field_module()
        occ_hull = out["occupancy"].index_select(0, problem.hull_in_band)
        rendered = [blurs[v](problem.render(v, occ_hull, shape)) + background(v) for v, shape in enumerate(shapes)]
        compute_geo = use_geo and i % int(config.geo_every) == 0
        total, terms = sdf_car_loss(
            rendered, problem.targets, spacings, target_kind=kind,
            lambda_geo=float(config.lambda_geo), lambda_occ=float(config.lambda_occ),
            k_per_mm=config.silhouette_k_per_mm, target_distance_mm=problem.geo_targets if use_geo else None,
            geo_downsample=int(config.geo_downsample), with_geo=compute_geo, occ_pixels=occ_pixels,
            occ_downsample=occ_factor,
            eikonal=_eikonal(out["sdf"], problem, unit_mm) if use_eikonal else None,
            eikonal_weight=float(config.eikonal_weight), huber_delta_mm=huber, deadzone_mm=deadzone)
        if volume_weight > 0:
            volume = occ_hull.mean()
            total = total + volume_weight * volume
            terms["loss_volume"] = float(volume.detach())
        # Steps that skip L_geo (geo_every > 1) log no loss_geo: an empty cell, the same in a resumed run.
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if monitor is not None and monitor_every and (i + 1) % monitor_every == 0:
            with torch.no_grad():
                monitor(i + 1, _full_occupancy(field_module()["occupancy"], problem))
        return terms

    scratch = None
    if out_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="vesselfield-xray-")
        out_dir = scratch.name
    try:
        loop = run_loop(
            step,
            {"field": field_module, "optimizer": optimizer, **({"background": background} if background.n_terms else {})},
            out_dir,
            iterations=int(config.iterations),
            time_limit_s=config.time_limit_s,
            checkpoint_every=int(config.checkpoint_every),
            resume=resume,
            progress=progress,
            description=f"{config.method} ({config.preset})",
            extra={"config": asdict(config), "kind": kind},
        )
    finally:
        if scratch is not None:
            scratch.cleanup()

    with torch.no_grad():
        occupancy = _full_occupancy(field_module()["occupancy"], problem)
    connection = None
    max_gap_mm = config.connect_max_gap_mm
    if max_gap_mm is None:
        max_gap_mm = 40.0 if kind == "line_integral" else 0.0
    if max_gap_mm > 0 or config.min_fragment_fraction > 0:
        from vesselfield.meshing.connect import connect_components

        occupancy, connection = connect_components(occupancy, grid, problem.hull, max_gap_mm=float(max_gap_mm),
                                                   min_fragment_fraction=float(config.min_fragment_fraction))
    rendered = [v.numpy().astype(np.float32) for v in project_views(torch.from_numpy(occupancy), geometry)]
    info = {"kind": kind, "device": str(dev), "band_voxels": int(len(problem.band_index)),
            "noise_sigma_mm": [float(x) for x in noise_sigma], "connection": connection}
    if background.n_terms:
        info["joint_background_coefficients_mm"] = background.coefficients.detach().cpu().tolist()
    return XrayResult(
        grid=grid,
        occupancy=occupancy,
        sdf=signed_distance_volume(occupancy, grid),
        rendered=rendered,
        log=loop.rows,
        seconds=float(loop.elapsed_s),
        iterations=int(loop.iterations_done),
        stopped=str(loop.stopped_by),
        config=config,
        hull_voxels=int(problem.hull.sum()),
        setup_seconds=setup_s,
        info=info,
        geometry=geometry,
        pose=pose,
    )


def _full_occupancy(occ_band: torch.Tensor, problem: _Problem) -> np.ndarray:
    """Band occupancies -> the (X, Y, Z) float32 volume, zero outside the visual hull."""
    grid = problem.grid
    occupancy = np.zeros(grid.num_voxels, dtype=np.float32)
    occupancy[problem.band_index.cpu().numpy()] = occ_band.float().cpu().numpy()
    occupancy = occupancy.reshape(grid.shape) * problem.hull
    return np.clip(occupancy, 0.0, 1.0).astype(np.float32)
