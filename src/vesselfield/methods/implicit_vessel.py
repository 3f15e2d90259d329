"""Implicit neural vessel models: MLP SDFs fitted to sparse surface points (Alblas et al., STACOM 2022).

Alblas, Brune, Yeung & Wolterink, "Going off-grid: continuous implicit neural representations
for 3D vascular modeling", STACOM 2022, after Gropp et al., "Implicit Geometric Regularization
for Learning Shapes", ICML 2020.

- A shape's points (world LPS mm) are normalised per shape: ``x = (p - center_mm) / scale_mm``,
  with the points' bounding box centred and its longest half-side at ``1 - domain_padding``, so
  the domain is ``[-1, 1]^3``; ``sdf_mm = f(x) * scale_mm``.
- :class:`~vesselfield.fields.implicit.ImplicitSDFNetwork` holds one SDF channel per surface.
- Loss (IGR eq. 2): ``sum_k mean |f_k(x)| + tau * mean ||grad f_k(x) - n|| + lambda * E (||grad f_k(y)|| - 1)^2``
  (+ ``nesting_weight * nesting_loss`` for nested surfaces), ``y`` drawn as Gaussians around the
  surface points (sigma: distance to the ``near_neighbours``-th nearest surface point) and
  uniformly in the domain.
- Bare points (no normals) on branching trees: the **visibility sign prior** (``sign_prior``;
  :mod:`vesselfield.geometry.point_visibility`) labels grid voxels outside (most lattice rays
  escape the thickened points) or inside (none does); the loss adds ``sign_weight * mean relu(-side * f)``
  over the labelled samples, and ``prior_steps`` first fit the network to the SDF of the shrunk
  envelope (everything not outside), so the fit starts from the vessel's shape, not a sphere.
- :class:`ImplicitVesselModel`: the network and its normalisation; query SDFs in mm at any world
  point (with gradients), evaluate on grids, mesh, save to / load from ``model.pt`` (plain tensors
  and a YAML-able config, loaded with ``weights_only=True``: never pickled objects).

Presets (named constructors of :class:`ImplicitVesselConfig`, where every default lives): ``paper`` is the
paper's network and fitting (6 x 256 ReLU, skip into the third layer, Adam 1e-4 constant, 25,000
iterations, no sign prior: minutes per shape on a GPU, far longer on a CPU); ``fast`` (the
default) is a 4 x 128 Softplus MLP with the visibility prior: 300 prior steps, then 3000 steps at
Adam 1e-3 decaying to 1e-5 (about 80 s for 1000 points on 2 CPU threads). Measured (docs/benchmarks.md,
issue 14): from bare points the SimVascular aorto-iliac tree reaches DSC 0.93 from 400 points (0.26
with the paper's recipe) and a 31-branch tree phantom 0.91 from 1000 (0.08), each in one piece;
hash-grid features instead of the plain MLP were worse from sparse points (``encoding="hash"``
remains available).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Sequence

import numpy as np

from vesselfield.config import build_config, check_numbers
from vesselfield.errors import VesselfieldError
from vesselfield.grid import DEFAULT_MARGIN_VOXELS, VolumeGrid, grid_over_box
from vesselfield.io.torch_files import load_tensors, save_tensors

__all__ = [
    "PRESETS",
    "BlendConfig",
    "ImplicitVesselConfig",
    "MIN_POINTS",
    "FitResult",
    "ImplicitVesselModel",
    "InrConfig",
    "build_network",
    "check_normals",
    "check_points",
    "config_from_dict",
    "blend_sdf_volume",
    "fit_implicit_sdf",
    "grid_over_box",
    "inr_config",
    "nesting_check",
    "sample_mesh_surface",
]

#: Fewest surface points a fit accepts (per surface).
MIN_POINTS = 10
#: ``format`` tag of a saved model.
MODEL_FORMAT = "vesselfield-inr"
MODEL_VERSION = 1


PRESETS = ("fast", "paper")


@dataclass
class ImplicitVesselConfig:
    """Every setting of an implicit-neural-representation fit (Alblas et al. 2022; IGR), every default.

    Fields left at ``None`` take their ``preset``'s value when the config is made
    (:meth:`_fill_implied`): ``fast`` (4 x 128 Softplus MLP, 1500 steps at 1e-3; the default) or
    ``paper`` (6 x 256 ReLU, 25,000 steps at 1e-4). The presets are named constructors:
    :meth:`fast` and :meth:`paper`.
    """

    config_name: ClassVar[str] = "implicit-vessel"
    key_fields: ClassVar[tuple] = ("preset",)
    free_on_resume: ClassVar[tuple] = ("iterations", "time_limit_s", "checkpoint_every")

    preset: Literal["fast", "paper"] = "fast"
    """fast: a small Softplus MLP, seconds to a minute per shape on a CPU; paper: the paper's network and steps."""
    encoding: Literal["none", "hash"] = "none"
    """none: an MLP on x (paper); hash: also multiresolution hash-grid features (more detail from dense
    points; with sparse points the plain MLP's smoothness interpolates better)."""
    hidden_dim: int | None = None
    """Width of the hidden layers. None: the preset's (fast 128, paper 256)."""
    n_layers: int | None = None
    """Number of hidden layers. None: the preset's (fast 4, paper 6)."""
    skip_layer: int = 2
    """0-based hidden layer that also receives the input (paper: 2, the third); -1 for none."""
    activation: Literal["relu", "softplus"] | None = None
    """relu (paper) or softplus (beta = 100, IGR). None: the preset's (fast softplus, paper relu)."""
    init_radius: float = 0.5
    """Radius of the sphere the network starts as (geometric initialisation), normalised units."""
    hash_levels: int = 8
    """Hash grid: number of levels."""
    hash_features_per_level: int = 2
    """Hash grid: features per level."""
    hash_log2_size: int = 15
    """Hash grid: log2 of the table size per level."""
    hash_base_resolution: int = 4
    """Hash grid: coarsest resolution over [-1, 1]^3."""
    hash_finest_resolution: int = 64
    """Hash grid: finest resolution over [-1, 1]^3."""
    iterations: int | None = None
    """Optimisation steps; one step sees every surface point when there are at most batch_size.
    None: the preset's (fast 3000, paper 25,000; the paper trains 25,000-50,000 epochs). With the
    visibility prior, its prior_steps come first and are not counted here."""
    learning_rate: float | None = None
    """Adam learning rate. None: the preset's (fast 1e-3, paper 1e-4)."""
    learning_rate_final: float | None = None
    """Learning rate at the last step, reached by a cosine decay over the IGR steps (a fit whose
    zero level must settle to a fraction of a millimetre needs the small steps at the end).
    None: the preset's (fast 1e-5; paper: constant, as the paper)."""
    eikonal_weight: float = 0.1
    """lambda of the eikonal term (paper: 0.1)."""
    normal_weight: float = 1.0
    """tau of the IGR normal term, used when normals are given."""
    nesting_weight: float = 0.0
    """Weight of the nesting penalty for several surfaces (innermost first); 0: off."""
    sign_prior: Literal["sphere", "visibility"] | None = None
    """Which side is inside, for points without normals. sphere: only the initial sphere says it
    (the paper; on branching trees the inside leaks between the branches); visibility: samples
    where most straight rays escape the thickened point cloud must be outside (f > 0), samples from
    which no ray escapes inside (geometry.point_visibility). None: the preset's (fast visibility,
    paper sphere)."""
    sign_weight: float = 100.0
    """Weight of the sign term ``mean relu(-side * f)`` over the labelled samples. It is a hinge, zero
    where the sign is right, so a large weight acts as a constraint: at 1 a bulge that few samples
    hit (a branch end 5 mm too long) barely counts; 100 measured better on trees, the same on aortas."""
    prior_steps: int | None = None
    """Steps that first fit the network to the SDF of the visibility envelope (every sample not
    labelled outside), shrunk by ``prior_shrink`` wall radii, before the IGR steps: the fit then
    starts from the vessel's shape instead of a sphere. 0: start from the sphere (the paper).
    Only with sign_prior=visibility and no normals. None: the preset's (fast 300, paper 0)."""
    prior_shrink: float = 1.0
    """How far the envelope is shrunk for the initial shape, in units of the median wall radius
    (the true surface runs through the middle of the wall, one wall radius inside the envelope)."""
    visibility_voxels: int = 96
    """Visibility grid: voxels along the longest side of the points' box."""
    visibility_wall_factor: float = 0.75
    """Visibility: radius of the wall around each point, in units of its distance to its 6th nearest point."""
    visibility_outside_escape: float = 0.5
    """Visibility: a sample is outside when at least this fraction of its 26 lattice rays escape."""
    batch_size: int = 2048
    """Surface points per surface per step (all of them when there are fewer)."""
    n_domain_samples: int = 1024
    """Uniform samples per step for the eikonal (and sign) terms: in [-1, 1]^3, or with the
    visibility sign prior half in [-1, 1]^3 and half in the visibility grid's box."""
    near_neighbours: int = 8
    """sigma of a point's near-surface samples: distance to its k-th nearest surface point."""
    domain_padding: float = 0.2
    """The points' bounding box fills [-(1 - padding), 1 - padding] along its longest side."""
    seed: int = 0
    """Random seed (initialisation and sampling)."""
    checkpoint_every: int = 1000
    """Iterations between checkpoints (resume); 0: only at the end."""
    time_limit_s: float | None = None
    """Stop after this many seconds (checkpointed; --resume continues). None: no limit."""

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise VesselfieldError(f"unknown preset {self.preset!r}: use {' or '.join(PRESETS)}")
        self._fill_implied()
        _check_config(self)

    def _fill_implied(self) -> None:
        """The values the preset implies, in one place."""
        paper = self.preset == "paper"
        implied = {"hidden_dim": 256 if paper else 128, "n_layers": 6 if paper else 4,
                   "activation": "relu" if paper else "softplus", "iterations": 25000 if paper else 3000,
                   "learning_rate": 1e-4 if paper else 1e-3, "sign_prior": "sphere" if paper else "visibility",
                   "prior_steps": 0 if paper else 300}
        for name, value in implied.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.learning_rate_final is None:
            self.learning_rate_final = self.learning_rate if paper else 1e-5

    @classmethod
    def fast(cls, **overrides) -> "ImplicitVesselConfig":
        """The ``fast`` preset (the default): 4 x 128 Softplus MLP, 1500 steps at 1e-3."""
        return build_config(cls, {"preset": "fast", **overrides})

    @classmethod
    def paper(cls, **overrides) -> "ImplicitVesselConfig":
        """The ``paper`` preset: 6 x 256 ReLU MLP with a skip into the third layer, 25,000 steps at 1e-4."""
        return build_config(cls, {"preset": "paper", **overrides})


#: The name this config had before 0.2 (one release).
InrConfig = ImplicitVesselConfig


def inr_config(preset: str | None = None, **overrides) -> ImplicitVesselConfig:
    """An :class:`ImplicitVesselConfig` for ``preset`` (``fast`` or ``paper``; None: the class's
    default) with keyword ``overrides`` (None values: not given)."""
    return build_config(ImplicitVesselConfig, {"preset": preset, **overrides})


def config_from_dict(values: dict) -> ImplicitVesselConfig:
    """An :class:`ImplicitVesselConfig` from a plain dict (e.g. a saved model's); unknown keys are an error."""
    return build_config(ImplicitVesselConfig, values)


def _check_config(c: ImplicitVesselConfig) -> None:
    check_numbers(c, positive=("learning_rate", "init_radius", "learning_rate_final"),
                  non_negative=("iterations", "seed", "n_domain_samples", "checkpoint_every", "eikonal_weight",
                                "normal_weight", "nesting_weight", "time_limit_s", "sign_weight", "prior_steps",
                                "prior_shrink"),
                  at_least_one=("hidden_dim", "n_layers", "batch_size", "near_neighbours"),
                  flags={"time_limit_s": "--time-limit", "iterations": "--iterations"})
    if not 0.0 <= float(c.domain_padding) < 1.0:
        raise VesselfieldError(f"domain_padding must be in [0, 1), got {c.domain_padding}")
    if c.sign_prior not in ("sphere", "visibility"):
        raise VesselfieldError(f"sign_prior must be sphere or visibility, got {c.sign_prior!r}")
    if int(c.visibility_voxels) < 8:
        raise VesselfieldError(f"visibility_voxels must be at least 8, got {c.visibility_voxels}")
    if not float(c.visibility_wall_factor) > 0:
        raise VesselfieldError(f"visibility_wall_factor must be positive, got {c.visibility_wall_factor}")
    if not 0.0 < float(c.visibility_outside_escape) <= 1.0:
        raise VesselfieldError(f"visibility_outside_escape must be in (0, 1], got {c.visibility_outside_escape}")
    if c.skip_layer != -1 and not 1 <= c.skip_layer < c.n_layers:
        raise VesselfieldError(f"skip_layer must be -1 (none) or in [1, n_layers = {c.n_layers}), got {c.skip_layer}")


@dataclass
class BlendConfig:
    """Settings of a smooth-union blend of fitted models into one SDF and one mesh (Alblas et al. 2022, Sec. 2.3)."""

    config_name: ClassVar[str] = "blend"
    key_fields: ClassVar[tuple] = ()

    k_mm: float = 0.0
    """Smoothing width of the smooth union in mm (0: a plain union); the fillet between vessels is about this wide."""
    spacing_mm: float = 0.5
    """Voxel size in mm of the blended SDF volume and of its mesh."""
    margin_mm: float | None = None
    """Margin around the models' boxes in mm. None: grid.DEFAULT_MARGIN_VOXELS voxels + k_mm."""
    surface: str | None = None
    """The surface to use of multi-surface (nested) models (a name from their fit). None: the only one."""

    def __post_init__(self):
        check_numbers(self, positive=("spacing_mm",), non_negative=("k_mm", "margin_mm"),
                      flags={"k_mm": "--k", "spacing_mm": "--spacing"})
        if self.margin_mm is None:
            self.margin_mm = DEFAULT_MARGIN_VOXELS * float(self.spacing_mm) + float(self.k_mm)


# ------------------------------------------------------------------------------ input checks
def check_points(points, what: str = "points", min_points: int = MIN_POINTS) -> np.ndarray:
    """(N, 3) finite float64 surface points in mm with at least ``min_points`` distinct ones."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise VesselfieldError(f"{what} must have shape (N, 3), got {p.shape}")
    if not np.all(np.isfinite(p)):
        bad = int((~np.isfinite(p).all(axis=1)).sum())
        raise VesselfieldError(f"{what} has {bad} point(s) with NaN or infinite coordinates")
    n_unique = len(np.unique(np.round(p, 6), axis=0))
    if n_unique < min_points:
        raise VesselfieldError(
            f"{what} has {n_unique} distinct point(s); a fit needs at least {min_points}"
        )
    if np.ptp(p, axis=0).max() <= 0:
        raise VesselfieldError(f"{what} all lie at one place")
    return p


def check_normals(normals, points: np.ndarray, what: str = "normals") -> np.ndarray:
    """(N, 3) unit normals matching ``points``; zero or non-finite normals are an error."""
    n = np.asarray(normals, dtype=np.float64)
    if n.shape != points.shape:
        raise VesselfieldError(f"{what} must have the shape of the points {points.shape}, got {n.shape}")
    length = np.linalg.norm(n, axis=1)
    if not np.all(np.isfinite(length)) or np.any(length < 1e-12):
        raise VesselfieldError(f"{what} has zero, NaN or infinite vectors")
    return n / length[:, None]


# ----------------------------------------------------------------------------------- model
def _normalisation(point_sets: Sequence[np.ndarray], padding: float) -> tuple[np.ndarray, float, np.ndarray]:
    allp = np.concatenate(point_sets, axis=0)
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    center = (lo + hi) / 2
    scale = float((hi - lo).max() / 2 / (1.0 - padding))
    return center, scale, np.stack([lo, hi])


class ImplicitVesselModel:
    """A fitted implicit vessel model: network + normalisation, queried in world mm.

    Attributes:
        network: :class:`~vesselfield.fields.implicit.ImplicitSDFNetwork` (K outputs).
        center_mm: (3,) world point mapped to x = 0. scale_mm: mm per normalised unit.
        bounds_mm: (2, 3) bounding box of the fitting points. surface_names: K names.
        config: the :class:`ImplicitVesselConfig` it was fitted with.
    """

    def __init__(self, network, center_mm, scale_mm: float, bounds_mm, surface_names: Sequence[str],
                 config: ImplicitVesselConfig):
        self.network = network
        self.center_mm = np.asarray(center_mm, dtype=np.float64)
        self.scale_mm = float(scale_mm)
        self.bounds_mm = np.asarray(bounds_mm, dtype=np.float64)
        self.surface_names = list(surface_names)
        self.config = config

    @property
    def n_surfaces(self) -> int:
        return len(self.surface_names)

    @property
    def device(self):
        return next(self.network.parameters()).device

    def normalise(self, points_mm):
        """World mm -> normalised coordinates (torch in/out, differentiable)."""
        import torch

        c = torch.as_tensor(self.center_mm, dtype=points_mm.dtype, device=points_mm.device)
        return (points_mm - c) / self.scale_mm

    def sdf_torch(self, points_mm):
        """(N, 3) world mm tensor -> (N, K) SDFs in mm (autograd kept: gradients give normals)."""
        return self.network(self.normalise(points_mm)) * self.scale_mm

    def channel(self, surface) -> int:
        """Output index of ``surface`` (a name or an index)."""
        if isinstance(surface, (int, np.integer)):
            if not 0 <= int(surface) < self.n_surfaces:
                raise VesselfieldError(f"surface index {surface} out of range (model has {self.n_surfaces})")
            return int(surface)
        if surface not in self.surface_names:
            raise VesselfieldError(f"unknown surface {surface!r}: the model has {', '.join(self.surface_names)}")
        return self.surface_names.index(surface)

    def sdf(self, points_mm, surface=None, chunk: int = 1 << 16) -> np.ndarray:
        """(..., 3) world mm -> (...,) SDF in mm of one ``surface`` (default: the only/first one),
        or (..., K) for ``surface="all"``; NumPy, no gradients, chunked."""
        import torch

        p = np.asarray(points_mm, dtype=np.float32)
        if p.shape[-1] != 3:
            raise VesselfieldError(f"points must have shape (..., 3), got {p.shape}")
        flat = p.reshape(-1, 3)
        out = np.empty((len(flat), self.n_surfaces), dtype=np.float32)
        dev = self.device
        with torch.no_grad():
            for s in range(0, len(flat), chunk):
                x = torch.from_numpy(flat[s:s + chunk]).to(dev)
                out[s:s + chunk] = self.sdf_torch(x).float().cpu().numpy()
        if surface == "all":
            return out.reshape(p.shape[:-1] + (self.n_surfaces,))
        return out[:, self.channel(0 if surface is None else surface)].reshape(p.shape[:-1])

    def gradient(self, points_mm, surface=None) -> np.ndarray:
        """(N, 3) world mm -> (N, 3) SDF gradient (unit outward normal on the surface)."""
        import torch

        from vesselfield.losses.igr import spatial_gradient

        x = torch.as_tensor(np.asarray(points_mm, dtype=np.float32), device=self.device).requires_grad_(True)
        f = self.sdf_torch(x)[:, self.channel(0 if surface is None else surface)]
        return spatial_gradient(f, x, create_graph=False).detach().cpu().numpy()

    def grid(self, spacing_mm: float = 1.0, margin_mm: float | None = None) -> VolumeGrid:
        """An isotropic grid over the fitting points' box plus ``margin_mm`` (default 5 spacings)."""
        return grid_over_box(self.bounds_mm, spacing_mm, margin_mm)

    def sdf_volume(self, grid: VolumeGrid, surface=None) -> np.ndarray:
        """float32 (X, Y, Z) SDF in mm of one surface at the voxel centres of ``grid``."""
        return self.sdf(grid.voxel_centers_mm(np.float32), surface)

    # ------------------------------------------------------------------------- files
    def to_dict(self) -> dict:
        return {
            "format": MODEL_FORMAT, "version": MODEL_VERSION, "config": asdict(self.config),
            "center_mm": self.center_mm.tolist(), "scale_mm": self.scale_mm,
            "bounds_mm": self.bounds_mm.tolist(), "surface_names": list(self.surface_names),
            "state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
        }

    def save(self, path) -> None:
        """Write ``model.pt`` atomically (plain tensors, lists and numbers only;
        :func:`vesselfield.io.torch_files.save_tensors`)."""
        save_tensors(path, self.to_dict(), what="model file")

    @classmethod
    def load(cls, path, device: str = "cpu") -> "ImplicitVesselModel":
        """Read a model written by :meth:`save` (``path`` or its folder's ``model.pt``), with
        ``weights_only=True`` (:func:`vesselfield.io.torch_files.load_tensors`); a one-line error
        for anything else."""
        from vesselfield.device import resolve_device

        path = Path(path)
        if path.is_dir():
            path = path / "model.pt"
        d = load_tensors(path, what="model file")
        if not isinstance(d, dict) or d.get("format") != MODEL_FORMAT:
            raise VesselfieldError(f"{path} is not a vesselfield implicit vessel model (format {MODEL_FORMAT!r})")
        if int(d.get("version", -1)) != MODEL_VERSION:
            raise VesselfieldError(f"{path} has model version {d.get('version')}; this vesselfield reads {MODEL_VERSION}")
        config = config_from_dict(d["config"])
        network = build_network(config, len(d["surface_names"]))
        network.load_state_dict(d["state_dict"])
        network.to(resolve_device(device)).eval()
        return cls(network, d["center_mm"], d["scale_mm"], d["bounds_mm"], d["surface_names"], config)


def build_network(config: ImplicitVesselConfig, n_surfaces: int):
    """The :class:`ImplicitSDFNetwork` that ``config`` describes, with ``n_surfaces`` outputs."""
    from vesselfield.fields.implicit import ImplicitSDFNetwork

    return ImplicitSDFNetwork(
        out_dim=n_surfaces, hidden_dim=int(config.hidden_dim), n_layers=int(config.n_layers),
        skip_layer=int(config.skip_layer), activation=config.activation, init_radius=float(config.init_radius),
        encoding=config.encoding, hash_levels=int(config.hash_levels),
        hash_features_per_level=int(config.hash_features_per_level), hash_log2_size=int(config.hash_log2_size),
        hash_base_resolution=int(config.hash_base_resolution), hash_finest_resolution=int(config.hash_finest_resolution),
    )


@dataclass
class FitResult:
    """What :func:`fit_implicit_sdf` returns.

    Attributes:
        model: the fitted :class:`ImplicitVesselModel`.
        log: per-step loss terms (dicts): the prior steps (``loss_prior``), then the IGR iterations.
        seconds: optimisation wall time of this call.
        iterations: completed IGR iterations (including those before a resume), after the prior steps.
        prior_steps: completed prior steps (the visibility shape; they come first).
        stopped: ``"iterations"`` or ``"time_limit"``.
        sign_prior: per surface fitted with the visibility sign prior, the share of its label grid
            labelled ``outside``, ``inside`` and ``unknown``, and the grid (``voxels``, ``voxel_mm``).
    """

    model: ImplicitVesselModel
    log: list = field(default_factory=list)
    seconds: float = 0.0
    iterations: int = 0
    stopped: str = "iterations"
    prior_steps: int = 0
    sign_prior: dict = field(default_factory=dict)


def _local_sigma(points: np.ndarray, k: int) -> np.ndarray:
    from scipy.spatial import cKDTree

    k = min(int(k), len(points) - 1)
    d, _ = cKDTree(points).query(points, k=k + 1)
    sigma = d[:, -1]
    # Coincident points would give sigma 0: fall back to the median spacing.
    return np.where(sigma > 0, sigma, np.median(sigma[sigma > 0]) if np.any(sigma > 0) else 1e-2)


def _trilinear(volume, lo, spacing: float, points):
    """(N,) trilinear samples of an (X, Y, Z) tensor whose first voxel's corner is ``lo``, at (N, 3)
    points (same units); clamped to the border beyond it."""
    import torch

    size = torch.tensor(volume.shape, device=points.device, dtype=points.dtype)
    u = (points - lo - 0.5 * spacing) / (spacing * (size - 1)) * 2 - 1  # align_corners: voxel centres at +-1
    # The volume is the (D, H, W) = (X, Y, Z) input of grid_sample, whose grid lists (W, H, D) = (z, y, x).
    grid = u.flip(-1).view(1, 1, 1, -1, 3)
    sample = torch.nn.functional.grid_sample(volume[None, None], grid, mode="bilinear", padding_mode="border",
                                             align_corners=True)
    return sample.view(-1)


def _side_lookup(points, sides, lo, spacing: float):
    """(N,) sides (+1 outside, -1 inside, 0 unknown) of (N, 3) points on a label volume; +1 beyond it."""
    import torch

    idx = torch.floor((points.detach() - lo) / spacing).long()
    shape = torch.tensor(sides.shape, device=points.device)
    within = ((idx >= 0) & (idx < shape)).all(dim=1)
    out = torch.ones(len(points), dtype=sides.dtype, device=points.device)
    i = idx[within]
    out[within] = sides[i[:, 0], i[:, 1], i[:, 2]]
    return out


@dataclass
class _SignPrior:
    """One surface's visibility labels and initial shape, as tensors in normalised units."""

    sides: object  # (X, Y, Z) int8 tensor: +1 outside, -1 inside, 0 unknown
    lo: object  # (3,) float tensor: corner of the first voxel
    spacing: float
    prior_sdf: object  # (X, Y, Z) float tensor: SDF of the shrunk envelope

    @property
    def extent(self):
        """(3,) tensor: the label grid's size."""
        import torch

        return torch.tensor(self.sides.shape, device=self.lo.device, dtype=self.lo.dtype) * self.spacing

    def summary(self, scale_mm: float) -> dict:
        """Shares of the label grid that are outside / inside / unknown, and the grid in mm."""
        n = self.sides.numel()
        return {"outside": round(float((self.sides == 1).sum()) / n, 4),
                "inside": round(float((self.sides == -1).sum()) / n, 4),
                "unknown": round(float((self.sides == 0).sum()) / n, 4),
                "voxels": list(self.sides.shape), "voxel_mm": round(self.spacing * scale_mm, 4)}


def _sign_prior(points: np.ndarray, config: ImplicitVesselConfig, dev) -> _SignPrior:
    """The :class:`_SignPrior` of one surface's normalised points (geometry.point_visibility)."""
    import torch
    from scipy import ndimage

    from vesselfield.geometry.point_visibility import OUTSIDE, point_visibility

    vis = point_visibility(points, voxels_longest=int(config.visibility_voxels),
                           wall_factor=float(config.visibility_wall_factor))
    sides = vis.labels(float(config.visibility_outside_escape))
    envelope = sides != OUTSIDE
    sdf = (ndimage.distance_transform_edt(~envelope) - ndimage.distance_transform_edt(envelope)) * vis.spacing
    sdf = sdf + float(config.prior_shrink) * vis.median_wall_radius
    return _SignPrior(torch.as_tensor(sides, device=dev), torch.as_tensor(vis.lo, dtype=torch.float32, device=dev),
                      float(vis.spacing), torch.as_tensor(sdf, dtype=torch.float32, device=dev))


def fit_implicit_sdf(
    surfaces,
    normals=None,
    *,
    names: Sequence[str] | None = None,
    config: ImplicitVesselConfig | None = None,
    device: str = "auto",
    out_dir=None,
    resume: bool = False,
    progress: bool = False,
) -> FitResult:
    """Fit one network with one SDF channel per surface to surface points (IGR loss).

    Args:
        surfaces: an (N, 3) array of surface points in world mm, or a list of K such arrays
            (nested surfaces, innermost first when ``nesting_weight > 0``).
        normals: None, an (N, 3) array, or a list matching ``surfaces`` (entries may be None):
            outward normals; used by the IGR normal term.
        names: K surface names (default ``surface``, or ``surface0..``).
        config: :class:`ImplicitVesselConfig` (default: the ``fast`` preset).
        device: ``auto``, ``cpu`` or ``cuda``.
        out_dir: folder for ``checkpoint.pt`` and ``log.csv`` (a temporary folder when None).
        resume: continue an interrupted fit in ``out_dir``.
        progress: show a progress bar.

    Returns:
        :class:`FitResult`. A NaN/Inf loss stops with a one-line :class:`VesselfieldError`.
    """
    import torch

    from vesselfield.device import resolve_device
    from vesselfield.losses.igr import (eikonal_loss, nesting_loss, normal_loss, sign_loss, spatial_gradient,
                                        surface_loss)
    from vesselfield.training import run_loop, seed_everything

    config = config or inr_config()
    if not isinstance(config, ImplicitVesselConfig):
        raise VesselfieldError("config must be an ImplicitVesselConfig (see ImplicitVesselConfig.fast)")
    single = not isinstance(surfaces, (list, tuple))
    point_sets = [check_points(surfaces)] if single else [
        check_points(p, f"surface {i} points") for i, p in enumerate(surfaces)]
    if not point_sets:
        raise VesselfieldError("no surfaces to fit")
    if normals is None:
        normal_sets = [None] * len(point_sets)
    elif single or not isinstance(normals, (list, tuple)):
        normal_sets = [normals] + [None] * (len(point_sets) - 1) if len(point_sets) == 1 else None
        if normal_sets is None:
            raise VesselfieldError("normals for several surfaces must be a list, one entry per surface")
    else:
        if len(normals) != len(point_sets):
            raise VesselfieldError(f"{len(normals)} normal sets for {len(point_sets)} surfaces")
        normal_sets = list(normals)
    normal_sets = [None if n is None else check_normals(n, p) for n, p in zip(normal_sets, point_sets)]
    k = len(point_sets)
    if names is None:
        names = ["surface"] if k == 1 else [f"surface{i}" for i in range(k)]
    names = [str(n) for n in names]
    if len(names) != k or len(set(names)) != k:
        raise VesselfieldError(f"need {k} distinct surface names, got {names}")
    if config.nesting_weight > 0 and k < 2:
        raise VesselfieldError("nesting_weight > 0 needs at least two surfaces")

    dev = resolve_device(device)
    seed_everything(int(config.seed))
    center, scale, bounds = _normalisation(point_sets, float(config.domain_padding))
    network = build_network(config, k).to(dev)
    model = ImplicitVesselModel(network, center, scale, bounds, names, config)
    xs = [torch.as_tensor((p - center) / scale, dtype=torch.float32, device=dev) for p in point_sets]
    ns = [None if n is None else torch.as_tensor(n, dtype=torch.float32, device=dev) for n in normal_sets]
    sigmas = [torch.as_tensor(_local_sigma(p, config.near_neighbours) / scale, dtype=torch.float32, device=dev)
              for p in point_sets]
    # The sign prior: for surfaces fitted without normals (with normals, the normal term says it).
    sides = [_sign_prior((p - center) / scale, config, dev)
             if config.sign_prior == "visibility" and config.sign_weight > 0 and n is None else None
             for p, n in zip(point_sets, normal_sets)]
    optimizer = torch.optim.Adam(network.parameters(), lr=float(config.learning_rate))
    batch, n_dom = int(config.batch_size), int(config.n_domain_samples)

    n_prior = int(config.prior_steps) if any(sd is not None for sd in sides) else 0

    def prior_step() -> dict:
        # Regress every channel with a prior on the SDF of its shrunk envelope (L1), at uniform
        # samples in the envelope's grid, around the points and in the whole domain.
        loss = 0.0
        for c, (sd, x, sg) in enumerate(zip(sides, xs, sigmas)):
            if sd is None:
                continue
            box = sd.lo + torch.rand(n_dom, 3, device=dev) * sd.extent
            j = torch.randint(len(x), (min(len(x), batch),), device=dev)
            near = x[j] + torch.randn(len(j), 3, device=dev) * sg[j, None]
            y = torch.cat([box, near, torch.rand(n_dom, 3, device=dev) * 2.0 - 1.0])
            # Beyond the grid (all outside) the target grows with the distance from it.
            beyond = (torch.relu(sd.lo - y) + torch.relu(y - sd.lo - sd.extent)).norm(dim=1)
            target = _trilinear(sd.prior_sdf, sd.lo, sd.spacing, y) + beyond
            loss = loss + (network(y)[:, c] - target).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach()), "loss_prior": float(loss.detach())}

    def step(i: int) -> dict:
        if i < n_prior:
            return prior_step()
        if config.learning_rate_final is not None:
            # A function of the step alone, so a resumed run continues exactly.
            t = (i - n_prior) / max(int(config.iterations) - 1, 1)
            lr0, lr1 = float(config.learning_rate), float(config.learning_rate_final)
            for group in optimizer.param_groups:
                group["lr"] = lr1 + 0.5 * (lr0 - lr1) * (1 + math.cos(math.pi * min(t, 1.0)))
        idx = [torch.randperm(len(x), device=dev)[:batch] if len(x) > batch else None for x in xs]
        surf = [x if j is None else x[j] for x, j in zip(xs, idx)]
        near = [s + torch.randn_like(s) * (sg if j is None else sg[j])[:, None]
                for s, sg, j in zip(surf, sigmas, idx)]
        # With a sign prior, half the domain samples go uniformly into the surfaces' visibility
        # boxes instead: thin vessels fill a small part of [-1, 1]^3, and their surroundings are
        # where the sign is at stake.
        boxed = [sd for sd in sides if sd is not None]
        n_box = n_dom // (2 * len(boxed)) if boxed else 0
        dom = torch.rand(n_dom - n_box * len(boxed), 3, device=dev) * 2.0 - 1.0
        counts = [len(s) for s in surf]
        boxes = [sd.lo + torch.rand(n_box, 3, device=dev) * sd.extent for sd in boxed]
        pts = torch.cat(surf + near + [dom] + boxes).requires_grad_(True)
        f = network(pts)
        need_grad = config.eikonal_weight > 0 or any(n is not None for n in ns)
        grad = spatial_gradient(f, pts) if need_grad else None  # (P, K, 3)
        terms = {}
        l_surf = f.new_zeros(())
        l_norm = f.new_zeros(())
        start = 0
        for c, (cnt, n, j) in enumerate(zip(counts, ns, idx)):
            l_surf = l_surf + surface_loss(f[start:start + cnt, c])
            if n is not None and config.normal_weight > 0:
                l_norm = l_norm + normal_loss(grad[start:start + cnt, c], n if j is None else n[j])
            start += cnt
        loss = l_surf + config.normal_weight * l_norm
        terms["loss_surface"] = float(l_surf.detach())
        if any(n is not None for n in ns):
            terms["loss_normal"] = float(l_norm.detach())
        samples = slice(sum(counts), None)
        if config.eikonal_weight > 0:
            l_eik = eikonal_loss(grad[samples])
            loss = loss + config.eikonal_weight * l_eik
            terms["loss_eikonal"] = float(l_eik.detach())
        if any(s is not None for s in sides):
            y = pts[samples]
            l_sign = sum(sign_loss(f[samples, c], _side_lookup(y, sd.sides, sd.lo, sd.spacing))
                         for c, sd in enumerate(sides) if sd is not None)
            loss = loss + config.sign_weight * l_sign
            terms["loss_sign"] = float(l_sign.detach())
        if k > 1 and config.nesting_weight > 0:
            l_nest = nesting_loss(f)
            loss = loss + config.nesting_weight * l_nest
            terms["loss_nesting"] = float(l_nest.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach()), **terms}

    with tempfile.TemporaryDirectory(prefix="vesselfield-inr-") as tmp:
        run_dir = Path(out_dir) if out_dir is not None else Path(tmp)
        network.train()
        loop = run_loop(step, {"network": network, "optimizer": optimizer}, run_dir,
                        iterations=n_prior + int(config.iterations), time_limit_s=config.time_limit_s,
                        checkpoint_every=int(config.checkpoint_every), resume=resume, progress=progress,
                        description=f"fitting ({config.preset})", extra={"config": asdict(config)})
    network.eval()
    prior_info = {name: sd.summary(scale) for name, sd in zip(names, sides) if sd is not None}
    done = int(loop.iterations_done)
    return FitResult(model, loop.rows, loop.elapsed_s, max(done - n_prior, 0), loop.stopped_by,
                     min(done, n_prior), prior_info)


# --------------------------------------------------------------------------- surfaces from meshes
def _signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume of a triangle mesh (divergence theorem): > 0 when wound outwards."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def sample_mesh_surface(mesh, n_points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(points, normals): ``n_points`` points drawn uniformly by area on a triangle mesh, with the
    unit normals of their faces (outward for a closed, consistently oriented mesh, whichever way
    it is wound; for an open mesh, as wound); world mm."""
    from vesselfield.metrics.surface import sample_surface_points

    try:
        vertices, faces = np.asarray(mesh.vertices, float), np.asarray(mesh.faces, np.int64)
    except AttributeError:
        raise VesselfieldError("need a triangle mesh with vertices and faces") from None
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise VesselfieldError("the mesh has no triangles: it is not a surface")
    if int(n_points) < MIN_POINTS:
        raise VesselfieldError(f"--n-points must be at least {MIN_POINTS}, got {n_points}")
    points, tri = sample_surface_points(vertices, faces, int(n_points), seed, return_faces=True)
    a, b, c = vertices[faces[tri, 0]], vertices[faces[tri, 1]], vertices[faces[tri, 2]]
    cross = np.cross(b - a, c - a)
    normals = cross / np.maximum(np.linalg.norm(cross, axis=1, keepdims=True), 1e-30)
    # Face normals follow the winding; a closed mesh wound inwards (negative signed volume, as
    # some vmtk surfaces are) would give inward normals: flip them.
    if _signed_volume(vertices, faces) < 0:
        normals = -normals
    return points, normals


# --------------------------------------------------------------------------- several surfaces and models
#: Uniform samples in the surfaces' bounding box for :func:`nesting_check`.
NESTING_SAMPLES = 200_000
#: Grid points evaluated at once when blending.
BLEND_CHUNK_POINTS = 1 << 18


def nesting_check(sdf_of, bounds_mm, volumes, names, n_samples: int = NESTING_SAMPLES, seed: int = 0) -> dict:
    """Nesting of K surfaces (innermost first): how often ``f_k >= f_{k+1}`` is broken.

    ``sdf_of(k, points (N, 3) mm) -> (N,)`` mm is surface k's SDF (one joint model's channel, or
    separate models).

    ``violation_fraction``: over ``n_samples`` uniform points in ``bounds_mm``; ``violation_fraction_grid``:
    over the voxels of ``volumes`` ((X, Y, Z) SDFs in mm, one per surface); ``max_violation_mm``: the
    largest ``f_{k+1} - f_k`` at the uniform points; ``escaped_voxels``: voxels inside a surface but
    outside the next one out.
    """
    from vesselfield.losses.igr import nesting_violation_fraction

    lo, hi = np.asarray(bounds_mm, dtype=np.float64)
    samples = np.random.default_rng(seed).uniform(lo, hi, size=(int(n_samples), 3))
    f = np.stack([sdf_of(k, samples) for k in range(len(names))], axis=1)
    g = np.stack([v.ravel() for v in volumes], axis=1)
    excess = np.maximum(f[:, 1:] - f[:, :-1], 0.0)
    return {
        "surfaces_innermost_first": list(names),
        "uniform_samples": int(n_samples),
        "sample_box_mm": [lo.tolist(), hi.tolist()],
        "violation_fraction": nesting_violation_fraction(f),
        "violation_fraction_grid": nesting_violation_fraction(g),
        "max_violation_mm": float(excess.max()) if excess.size else 0.0,
        "grid_voxels": int(g.shape[0]),
        # What a wall model cares about: voxels inside surface k but outside surface k + 1.
        "escaped_voxels": int(sum(((volumes[k] < 0) & (volumes[k + 1] >= 0)).sum() for k in range(len(volumes) - 1))),
    }


def blend_sdf_volume(models, channels, grid, k_mm: float) -> tuple[np.ndarray, list[int]]:
    """Smooth union (:func:`~vesselfield.csg.union_all`, width ``k_mm``) of the models' SDFs (mm) on ``grid``.

    Evaluated slab by slab along x, so memory stays at one float32 volume plus a chunk.

    Returns:
        ``(sdf (X, Y, Z) float32 mm, voxels inside each model)``.
    """
    from vesselfield.csg import union_all

    x, y, z = grid.axes_mm()
    yy, zz = np.meshgrid(y, z, indexing="ij")
    out = np.empty(grid.shape, dtype=np.float32)
    inside = [0] * len(models)
    slab = max(1, BLEND_CHUNK_POINTS // (len(y) * len(z)))
    for i0 in range(0, len(x), slab):
        xs = x[i0:i0 + slab]
        pts = np.stack(np.broadcast_arrays(xs[:, None, None], yy[None], zz[None]), axis=-1).astype(np.float32)
        values = [m.sdf(pts, c) for m, c in zip(models, channels)]
        for j, v in enumerate(values):
            inside[j] += int((v < 0).sum())
        out[i0:i0 + slab] = union_all(values, k_mm)
    return out, inside
