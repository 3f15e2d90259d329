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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from scipy import ndimage

from vesselfield.errors import VesselfieldError
from vesselfield.geometry import Geometry, check_views_see_volume
from vesselfield.grid import VolumeGrid

__all__ = [
    "METHODS",
    "PRESETS",
    "XrayConfig",
    "XrayResult",
    "xray_config",
    "reconstruct_xray",
    "signed_distance_volume",
]

METHODS = ("sdf-car", "neca", "occ-combined", "sdf-occ")
PRESETS = ("cpu", "gpu")

_METHOD_SWITCHES = {
    "sdf-car": ("sdf", "combined"),
    "sdf-occ": ("sdf", "occupancy"),
    "occ-combined": ("occupancy", "combined"),
    "neca": ("occupancy", "occupancy"),
}


@dataclass
class XrayConfig:
    """Every setting of a two-view reconstruction; :func:`xray_config` fills method and preset defaults.

    ``dataclasses.asdict`` of it is what ``config.yaml`` stores and what a rerun reads back.
    """

    method: str = "sdf-car"
    """One of :data:`METHODS`; sets ``representation`` and ``loss`` (table in the module docstring)."""
    preset: str = "cpu"
    """``cpu`` (explicit band grid) or ``gpu`` (hash grid + MLP, as the paper)."""
    representation: Literal["sdf", "occupancy"] = "sdf"
    """``sdf``: the field is ``s`` and occupancy ``sigmoid(-alpha s)``; ``occupancy``: ``sigmoid(v)``."""
    loss: Literal["combined", "occupancy"] = "combined"
    """``combined``: lambda_geo L_geo + lambda_occ L_occ; ``occupancy``: L_occ only."""
    field: Literal["grid", "hash-mlp"] = "grid"
    """``grid``: one value per band voxel; ``hash-mlp``: hash encoding + MLP at band voxel centres."""
    iterations: int = 3000
    """Optimisation steps (all rays of every view each step)."""
    learning_rate: float = 1e-2
    """Adam step, in normalised field units (grid) or on the network weights (hash-mlp)."""
    sdf_sharpness_alpha: float = 50.0
    """α of ``o = sigmoid(-α s)`` with ``s`` in normalised units (half the volume's largest extent = 1), as the paper."""
    lambda_geo: float = 1.0
    """Weight of L_geo (paper: 1.0)."""
    lambda_occ: float = 0.25
    """Weight of L_occ (paper: 0.25)."""
    eikonal_weight: float = 2e-3
    """Weight of the eikonal prior on the band relative to L_occ (SDF representations only; 0 turns it
    off): the loss is ``λ1 L_geo + λ2 (L_occ + eikonal_weight E)``."""
    geo_downsample: int = 4
    """L_geo is computed on views max-pooled by this factor (a 512² view becomes 128²)."""
    geo_every: int = 1
    """Compute L_geo every this many iterations (1: every iteration)."""
    silhouette_k_per_mm: float = math.log(10.0)
    """k of the soft silhouette ``1 - exp(-k I)`` that compares a rendering with a mask (1/mm)."""
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
    mlp_hidden: int = 64
    """Hidden width of the SDF-CAR residual MLP (NeCA uses 256 in its skip MLP)."""
    mlp_layers: int = 8
    """Hidden layers of the MLP (both papers: 8)."""
    seed: int = 0
    """Seed of every random number generator."""
    checkpoint_every: int = 500
    """Iterations between checkpoints (``--resume`` restarts from the last one)."""
    time_limit_s: float | None = None
    """Stop after this many seconds (a checkpoint is written; ``--resume`` continues)."""

    def __post_init__(self):
        if self.method not in METHODS:
            raise VesselfieldError(f"unknown method {self.method!r}: use one of {', '.join(METHODS)}")
        if self.preset not in PRESETS:
            raise VesselfieldError(f"unknown preset {self.preset!r}: use cpu or gpu")
        if self.representation not in ("sdf", "occupancy"):
            raise VesselfieldError(f"unknown representation {self.representation!r}")
        if self.loss not in ("combined", "occupancy"):
            raise VesselfieldError(f"unknown loss {self.loss!r}")
        if self.field not in ("grid", "hash-mlp"):
            raise VesselfieldError(f"unknown field {self.field!r}: use grid or hash-mlp")
        if int(self.iterations) != self.iterations or self.iterations < 0:
            raise VesselfieldError(f"iterations must be a non-negative integer, got {self.iterations}")
        for name in ("learning_rate", "sdf_sharpness_alpha", "silhouette_k_per_mm"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise VesselfieldError(f"{name} must be a positive number, got {value!r}")
        for name in ("lambda_geo", "lambda_occ", "eikonal_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise VesselfieldError(f"{name} must be a non-negative number, got {value!r}")
        if not 0 < self.init_occupancy < 1:
            raise VesselfieldError(f"init_occupancy must lie in (0, 1), got {self.init_occupancy}")
        for name in ("geo_downsample", "geo_every"):
            if int(getattr(self, name)) < 1:
                raise VesselfieldError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("hull_dilate_voxels", "band_voxels"):
            if int(getattr(self, name)) < 0:
                raise VesselfieldError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.time_limit_s is not None and not self.time_limit_s >= 0:
            raise VesselfieldError(f"time_limit_s must be >= 0, got {self.time_limit_s}")


# Defaults that differ by method or preset, in one place. Everything else is XrayConfig's default.
_PRESET_DEFAULTS = {
    "cpu": dict(field="grid", iterations=3000, learning_rate=1e-2),
    # The paper's learning rate and iteration count on its hash-grid MLP.
    "gpu": dict(field="hash-mlp", iterations=5000, learning_rate=1e-4),
}
_NECA_GPU = dict(mlp_hidden=256)
# An occupancy logit v plays the role of -α s: the same step in logit units is α times larger.
_OCCUPANCY_CPU = dict(learning_rate=0.5)


def xray_config(method: str = "sdf-car", preset: str = "cpu", **overrides) -> XrayConfig:
    """The configuration of ``method`` under ``preset``, with ``overrides`` (XrayConfig field names).

    Raises :class:`VesselfieldError` for an unknown method, preset or field name.
    """
    if method not in METHODS:
        raise VesselfieldError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if preset not in PRESETS:
        raise VesselfieldError(f"unknown preset {preset!r}: use cpu or gpu")
    names = {f.name for f in fields(XrayConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise VesselfieldError(f"unknown configuration field(s): {', '.join(unknown)}")
    representation, loss = _METHOD_SWITCHES[method]
    values = dict(method=method, preset=preset, representation=representation, loss=loss)
    values.update(_PRESET_DEFAULTS[preset])
    if method == "neca" and preset == "gpu":
        values.update(_NECA_GPU)
    if representation == "occupancy" and preset == "cpu":
        values.update(_OCCUPANCY_CPU)
    values.update({k: v for k, v in overrides.items() if v is not None or k == "time_limit_s"})
    return XrayConfig(**values)


def config_from_dict(values: dict) -> XrayConfig:
    """An :class:`XrayConfig` from a dict such as ``config.yaml``'s (unknown keys are errors)."""
    values = dict(values)
    method = values.pop("method", "sdf-car")
    preset = values.pop("preset", "cpu")
    return xray_config(method, preset, **values)


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
        setup_seconds: time spent on the hull and the projection matrices.
    """

    grid: VolumeGrid
    occupancy: np.ndarray
    sdf: np.ndarray
    rendered: list
    log: list
    seconds: float
    iterations: int
    stopped: str
    config: XrayConfig
    hull_voxels: int = 0
    setup_seconds: float = 0.0
    info: dict = field(default_factory=dict)


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
            if (image < 0).any():
                raise VesselfieldError(f"{name} has negative line integrals (min {image.min():g} mm)")
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
    matrices: list  # RayVoxelMatrix per view (columns = hull voxels)
    targets: list  # per view (N_rays,) target at each row's pixel (line integral mm or 0/1)
    geo_targets: list  # per view (h, w) target signed distance of the downsampled mask (mm), or None
    masks: list  # per view (H, W) bool


def _build_problem(geometry: Geometry, views, masks, kind: str, config: XrayConfig, device) -> _Problem:
    from vesselfield.render import ray_voxel_matrix, visual_hull

    grid = geometry.volume
    hull = visual_hull(masks, geometry, dilate_voxels=int(config.hull_dilate_voxels))
    if not hull.any():
        raise VesselfieldError("the visual hull of the views is empty: the masks do not back-project to a common region")
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

    matrices, targets, geo_targets = [], [], []
    for i, view in enumerate(geometry.views):
        # Rays that can see a hull voxel, plus the mask itself: the rest render zero in any answer.
        rows = ndimage.binary_dilation(voxel_footprint(hull, grid, view) | masks[i], iterations=1)
        if kind == "line_integral":
            rows |= views[i] > 0
        pixels = np.argwhere(rows)
        matrices.append(ray_voxel_matrix(grid, view, pixels, voxel_mask=hull).to(device))
        values = views[i][pixels[:, 0], pixels[:, 1]]
        targets.append(torch.as_tensor(np.asarray(values, dtype=np.float32), device=device))
        geo_targets.append(None)
    if config.loss == "combined":
        from vesselfield.losses.projection import downsample_mask
        from vesselfield.render.soft_distance import signed_distance_2d

        for i, view in enumerate(geometry.views):
            small = downsample_mask(torch.from_numpy(masks[i]), int(config.geo_downsample))
            spacing = tuple(float(s) * config.geo_downsample for s in view.pixel_spacing_mm)
            dist = signed_distance_2d(small.cpu().numpy().astype(bool), spacing)
            geo_targets[i] = torch.as_tensor(dist, dtype=torch.float32, device=device)
    as_t = lambda a: torch.as_tensor(a, dtype=torch.int64, device=device)  # noqa: E731
    return _Problem(grid, hull, as_t(band_flat), as_t(hull_in_band), as_t(eik_centre), as_t(eik_next),
                    matrices, targets, geo_targets, masks)


def voxel_footprint(voxels: np.ndarray, grid: VolumeGrid, view) -> np.ndarray:
    """(H, W) bool: detector pixels whose ray can cross one of the ``voxels`` ((X, Y, Z) bool).

    A voxel's value reaches every ray that passes within one voxel of its centre (trilinear
    interpolation), so the eight corners of that (2 voxel)³ box are projected and the pixels
    of their bounding box are marked: a superset of the rays the voxel can reach.
    """
    h, w = view.detector_shape
    out = np.zeros((h, w), dtype=bool)
    ijk = np.argwhere(voxels)
    if len(ijk) == 0:
        return out
    corners = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], dtype=np.float64)
    pts = (grid.origin + (ijk[:, None, :] + corners[None]) * grid.spacing).reshape(-1, 3)
    rc = view.project_points(pts).reshape(len(ijk), 8, 2)
    rc = np.nan_to_num(rc, nan=-1e9)
    lo = np.clip(np.floor(rc.min(axis=1) + 0.5), -1, [h, w]).astype(np.int64)
    hi = np.clip(np.floor(rc.max(axis=1) + 0.5), -1, [h, w]).astype(np.int64)
    size = (hi - lo).max(axis=0) + 1
    for dr in range(int(size[0])):
        for dc in range(int(size[1])):
            r = lo[:, 0] + dr
            c = lo[:, 1] + dc
            keep = (r <= hi[:, 0]) & (c <= hi[:, 1]) & (r >= 0) & (r < h) & (c >= 0) & (c < w)
            out[r[keep], c[keep]] = True
    return out


# ----------------------------------------------------------------------------- fields on the band
class BandGridField(torch.nn.Module):
    """One learnable value per band voxel (preset ``cpu``): ``s`` (normalised units) or an occupancy logit."""

    def __init__(self, n_values: int, init_raw: float):
        super().__init__()
        self.values = torch.nn.Parameter(torch.full((n_values,), float(init_raw)))

    def forward(self) -> torch.Tensor:
        return self.values


class BandNeuralField(torch.nn.Module):
    """A neural field evaluated at the band voxel centres (preset ``gpu``); returns its raw values."""

    def __init__(self, field_module, points_mm: torch.Tensor):
        super().__init__()
        self.field = field_module
        self.register_buffer("points_mm", points_mm, persistent=False)

    def forward(self) -> torch.Tensor:
        from vesselfield.encodings.hash_grid import normalize_points

        x = normalize_points(self.points_mm, self.field.grid)
        return self.field.network(self.field.encoding(x)).reshape(-1)


def _normalised_unit_mm(grid: VolumeGrid) -> float:
    """mm per normalised field unit: half the largest extent of the volume's box."""
    return 0.5 * float(np.max(np.asarray(grid.shape) * grid.spacing))


def _init_raw(config: XrayConfig) -> float:
    o = config.init_occupancy
    logit = math.log(o) - math.log1p(-o)
    return -logit / config.sdf_sharpness_alpha if config.representation == "sdf" else logit


def _make_field(config: XrayConfig, problem: _Problem, device) -> torch.nn.Module:
    if config.field == "grid":
        return BandGridField(len(problem.band_index), _init_raw(config)).to(device)
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


def _occupancy(raw: torch.Tensor, config: XrayConfig) -> torch.Tensor:
    if config.representation == "sdf":
        return torch.sigmoid(-config.sdf_sharpness_alpha * raw)
    return torch.sigmoid(raw)


def _eikonal(raw: torch.Tensor, problem: _Problem, unit_mm: float) -> torch.Tensor:
    """mean((|∇s| - 1)²) over the band, ``s`` in mm, forward differences (anisotropic spacing)."""
    s = raw * unit_mm
    centre = s[problem.eik_centre]
    grads = [(s[problem.eik_next[a]] - centre) / float(problem.grid.spacing[a]) for a in range(3)]
    norm = torch.sqrt(grads[0] ** 2 + grads[1] ** 2 + grads[2] ** 2 + 1e-12)
    return ((norm - 1.0) ** 2).mean()


# ----------------------------------------------------------------------------- the run
def _write_config_file(path: Path, config: XrayConfig) -> None:
    import yaml

    from vesselfield.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(yaml.safe_dump(asdict(config), sort_keys=False))


def reconstruct_xray(
    geometry: Geometry,
    views,
    *,
    kind: str = "line_integral",
    config: XrayConfig | None = None,
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
        config: :class:`XrayConfig` (default ``xray_config("sdf-car", "cpu")``).
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
    from vesselfield.render import project_volume, projection_mask
    from vesselfield.training import run_loop, seed_everything

    config = config or xray_config()
    if not isinstance(config, XrayConfig):
        raise VesselfieldError("config must be an XrayConfig (see xray_config)")
    views = check_views(geometry, views, kind)
    dev = resolve_device(device)
    seed_everything(int(config.seed))
    grid = geometry.volume
    if kind == "mask":
        masks = views
    else:
        masks = [projection_mask(torch.from_numpy(v)).numpy() for v in views]
        for i, m in enumerate(masks, start=1):
            if not m.any():
                raise VesselfieldError(f"projection {i} has no pixel above the mask threshold: nothing to reconstruct")

    t_setup = time.perf_counter()
    problem = _build_problem(geometry, views, masks, kind, config, dev)
    setup_s = time.perf_counter() - t_setup
    field_module = _make_field(config, problem, dev)
    optimizer = torch.optim.Adam(field_module.parameters(), lr=float(config.learning_rate))
    unit_mm = _normalised_unit_mm(grid)
    use_eikonal = config.representation == "sdf" and config.eikonal_weight > 0
    use_geo = config.loss == "combined" and config.lambda_geo > 0
    lambda_occ = float(config.lambda_occ) if config.loss == "combined" else 1.0
    target_kind = "mask" if kind == "mask" else "line_integral"

    from vesselfield.losses.projection import geometric_projection_loss, occupancy_projection_loss

    last_geo = [0.0]

    def step(i: int) -> dict:
        raw = field_module()
        occ = _occupancy(raw, config)
        occ_hull = occ.index_select(0, problem.hull_in_band)
        terms = {}
        total = 0.0
        occ_loss = 0.0
        geo_loss = 0.0
        compute_geo = use_geo and i % int(config.geo_every) == 0
        for v, (matrix, target) in enumerate(zip(problem.matrices, problem.targets)):
            rendered = matrix.project(occ_hull)
            occ_loss = occ_loss + occupancy_projection_loss(rendered, target, target_kind=target_kind,
                                                            k_per_mm=config.silhouette_k_per_mm)
            if compute_geo:
                view = geometry.views[v]
                h, w = view.detector_shape
                image = torch.zeros(h * w, dtype=rendered.dtype, device=rendered.device)
                rows = torch.as_tensor(matrix.pixels[:, 0] * w + matrix.pixels[:, 1], device=rendered.device)
                image = image.index_put((rows,), rendered).view(h, w)
                # Max-pooling keeps the silhouette consistent with downsample_mask's "any pixel"
                # (the silhouette is monotone in I); average pooling would fade thin vessels.
                small = torch.nn.functional.max_pool2d(image[None, None], int(config.geo_downsample))[0, 0]
                spacing = tuple(float(s) * config.geo_downsample for s in view.pixel_spacing_mm)
                geo_loss = geo_loss + geometric_projection_loss(
                    small, None, spacing, k_per_mm=config.silhouette_k_per_mm,
                    target_distance_mm=problem.geo_targets[v])
        n_views = len(problem.matrices)
        occ_loss = occ_loss / n_views
        total = lambda_occ * occ_loss
        terms["loss_occ"] = float(occ_loss.detach())
        if use_geo:
            if compute_geo:
                geo_loss = geo_loss / n_views
                total = total + config.lambda_geo * geo_loss
                terms["loss_geo"] = last_geo[0] = float(geo_loss.detach())
            else:  # between L_geo evaluations the log repeats the last value
                terms["loss_geo"] = last_geo[0]
        if use_eikonal:
            eik = _eikonal(raw, problem, unit_mm)
            total = total + lambda_occ * config.eikonal_weight * eik
            terms["loss_eikonal"] = float(eik.detach())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        terms["loss"] = float(total.detach())
        if monitor is not None and monitor_every and (i + 1) % monitor_every == 0:
            with torch.no_grad():
                monitor(i + 1, _full_occupancy(_occupancy(field_module(), config), problem))
        return terms

    scratch = None
    if out_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="vesselfield-xray-")
        out_dir = scratch.name
    try:
        loop = run_loop(
            step,
            {"field": field_module, "optimizer": optimizer},
            out_dir,
            iterations=int(config.iterations),
            time_limit_s=config.time_limit_s,
            checkpoint_every=int(config.checkpoint_every),
            resume=resume,
            progress=progress,
            description=f"{config.method} ({config.preset})",
            extra={"config": asdict(config), "kind": kind},
        )
        log_rows = _read_log(Path(out_dir) / "log.csv")
    finally:
        if scratch is not None:
            scratch.cleanup()

    with torch.no_grad():
        occupancy = _full_occupancy(_occupancy(field_module(), config), problem)
    occ_t = torch.from_numpy(occupancy)
    rendered = [project_volume(occ_t, grid, view).numpy().astype(np.float32) for view in geometry.views]
    return XrayResult(
        grid=grid,
        occupancy=occupancy,
        sdf=signed_distance_volume(occupancy, grid),
        rendered=rendered,
        log=log_rows,
        seconds=float(loop.elapsed_s),
        iterations=int(loop.iterations_done),
        stopped=str(loop.stopped_by),
        config=config,
        hull_voxels=int(problem.hull.sum()),
        setup_seconds=setup_s,
        info={"kind": kind, "device": str(dev), "band_voxels": int(len(problem.band_index))},
    )


def _full_occupancy(occ_band: torch.Tensor, problem: _Problem) -> np.ndarray:
    """Band occupancies -> the (X, Y, Z) float32 volume, zero outside the visual hull."""
    grid = problem.grid
    occupancy = np.zeros(grid.num_voxels, dtype=np.float32)
    occupancy[problem.band_index.cpu().numpy()] = occ_band.float().cpu().numpy()
    occupancy = occupancy.reshape(grid.shape) * problem.hull
    return np.clip(occupancy, 0.0, 1.0).astype(np.float32)


def _read_log(path: Path) -> list[dict]:
    import csv

    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.append({k: (float(v) if v not in ("", None) else float("nan")) for k, v in row.items()})
    return rows


def signed_distance_volume(occupancy, grid: VolumeGrid, level: float = 0.5) -> np.ndarray:
    """(X, Y, Z) float32 signed distance (mm, negative inside) to the ``level`` surface of an occupancy.

    Voxel-centre Euclidean distance transforms with the grid's spacing, each side measured to
    the half-way point between an inside and an outside voxel centre (so |d| >= half a voxel).
    """
    inside = np.asarray(occupancy) >= level
    spacing = tuple(float(s) for s in grid.spacing)
    if not inside.any():
        return np.full(grid.shape, np.inf, dtype=np.float32)
    if inside.all():
        return np.full(grid.shape, -np.inf, dtype=np.float32)
    half = 0.5 * min(spacing)
    outside_d = ndimage.distance_transform_edt(~inside, sampling=spacing) - half
    inside_d = ndimage.distance_transform_edt(inside, sampling=spacing) - half
    return np.where(inside, -inside_d, outside_d).astype(np.float32)
