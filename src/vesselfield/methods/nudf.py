"""NUDF: neural unsigned distance fields of (open) anatomical surfaces from a CT region of interest.

Sørensen, Juhl et al., "NUDF: Neural Unsigned Distance Fields for high resolution 3D medical
image segmentation", ISBI 2022 (``../shared/papers/nudf-sorensen-juhl-2022.txt``):

- a fixed-size cube (70 mm) placed around the structure by any detector, its intensities
  clipped to [-1000, 1000] HU and scaled to [-1, 1], its coordinates normalised to [-1, 1];
- an image encoder and a point decoder (:mod:`vesselfield.networks.udf_net`, eq. 1) trained with
  the clamped L1 distance loss (:mod:`vesselfield.losses.udf`, eq. 2) on shape-diameter samples
  near the surface plus uniform samples in the ROI (:mod:`vesselfield.datasets.udf_samples`);
- augmentation (each with probability 0.5): translation, rotation, Gaussian intensity noise;
  early stopping on the validation loss;
- meshing by projecting points onto the zero level with ``p - f grad f`` and screened Poisson
  reconstruction of the dense cloud, trimmed where no point supports it
  (:mod:`vesselfield.meshing.udf`).

The baseline ``unet-roi`` (the paper's Sec. 4): a 3D U-Net on the same ROI with the encoder's
levels and a symmetric decoder, trained on the occupancy of the closed surface, its probability
trilinearly upsampled and meshed by marching cubes.

Frames: the ROI of centre ``c`` (world LPS mm), rotation ``R`` (its axes' world directions as
columns) and side ``L`` maps normalised ``u ∈ [-1, 1]^3`` to ``p = c + R u L/2``; voxel ``i`` of
the ``N``-voxel ROI sits at ``u = -1 + 2 i / (N - 1)``. Normalised distances are mm / (L/2).
This module holds the config, the ROI sampling, the training data, the objective and the trained
model; :mod:`vesselfield.pipelines.train_nudf` and :mod:`vesselfield.pipelines.predict_nudf` read
and write the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from vesselfield.config import check_numbers
from vesselfield.datasets.udf_samples import DEFAULT_THIN_FACTOR, DEFAULT_THIN_MM
from vesselfield.errors import VesselfieldError
from vesselfield.meshing.udf import UdfMeshConfig
from vesselfield.training.trainer import TrainerConfig

__all__ = ["MODEL_FILE", "MODEL_FORMAT", "VARIANTS", "NudfConfig", "NudfRoiDataset", "Roi", "TrainedNudf",
           "build_model", "is_nudf_run", "load_model_file", "make_metrics", "make_objective", "model_payload", "roi_image",
           "with_predict_settings"]

MODEL_FILE = "model.pt"
MODEL_FORMAT = "vesselfield.nudf/1"

VARIANTS: dict[str, str] = {
    "nudf": "image encoder + point decoder regressing the unsigned distance (the paper)",
    "unet-roi": "a 3D U-Net on the same ROI, occupancy of the closed surface, marching cubes (the paper's baseline)",
}
Variant = Literal["nudf", "unet-roi"]


def _paper_trainer() -> TrainerConfig:
    # The paper: batch 4, early stopping on the validation loss (patience not given; 20 epochs
    # here); Adam at 1e-4 as IF-Net, whose networks NUDF follows.
    return TrainerConfig(epochs=200, batch_size=4, learning_rate=1e-4, val_fraction=0.2, monitor="val_loss",
                         monitor_mode="min", patience=20)


def _nudf_mesher() -> UdfMeshConfig:
    # Measured on the open phantoms (docs/methods/nudf.md): a trained network's UDF is smooth at the
    # surface (no kink: kink_mm 0) but does not reach zero there: on the true surface of a test case it
    # read 0.14-0.28 mm (5th-95th percentile), so no point came within the volume mesher's 0.1 mm;
    # keep_mm 0.5 mm is about half the 1.11 mm ROI voxel the network sees. Beyond the clamp (3.5 mm)
    # its value is not trained to be a distance: start points there are dropped (start_max_mm), and
    # offsets 1 mm around the surface land in 3 steps. A decoder call costs ~40 us per point on 2 CPU
    # cores, so the cloud is smaller than the volume mesher's: 50k start points, 60k dense points, 20k
    # Poisson-disk points (measured on two test phantoms: 30-44 s per ROI instead of 74-80 s with 100k /
    # 100k / 30k, Chamfer 0.19-0.20 mm either way).
    return UdfMeshConfig(kink_mm=0.0, keep_mm=0.5, start_max_mm=3.5, steps=3, resample_sigma_mm=1.0,
                         seed_points=50_000, dense_points=60_000, poisson_disk_points=20_000)


@dataclass
class NudfConfig:
    """Every setting of a NUDF (or unet-roi) training and of its inference, every default.

    Values the paper states are marked "(paper)"; the others are ours, with the reason.
    """

    config_name: ClassVar[str] = "nudf"
    key_fields: ClassVar[tuple] = ("variant",)
    free_on_resume: ClassVar[tuple] = ("predict_batch_points", "mesh_spacing_mm", "mesh")

    variant: Variant = "nudf"
    """nudf (the method) or unet-roi (the paper's 3D U-Net baseline on the same ROI)."""
    roi_mm: float = 70.0
    """Side of the cubic region of interest, mm (paper: 70 mm around the left atrial appendage)."""
    roi_voxels: int = 64
    """Voxels along each side of the ROI image, the network's input size (paper: 64 or 128; 64 gave the same
    accuracy there). 64 voxels over 70 mm are 1.11 mm voxels."""
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    """Intensities are clipped to this window (HU) and mapped linearly to [-1, 1] (paper)."""
    channels: tuple[int, ...] = (16, 32, 64, 128)
    """Features per encoder level (IF-Net's first levels); unet-roi uses the same encoder levels."""
    hidden: tuple[int, ...] = (256, 256)
    """Widths of the point decoder's hidden layers (paper: two of 256)."""
    neighbour_offset: float = 0.0722
    """Displacement of the six neighbour samples of a query point, normalised units (IF-Net's value)."""
    dropout: float = 0.1
    """Dropout after each encoder level (the paper uses dropout in the encoder and gives no rate)."""
    clamp: float = 0.1
    """Distances are clamped at this value (normalised units) in the loss (paper: 0.1; 3.5 mm for a 70 mm ROI)."""
    points_per_roi: int = 4096
    """Training points drawn from a case's samples for one ROI in one step (NDF draws 50k on a GPU)."""
    surface_samples: int = 100_000
    """Shape-diameter samples near the surface per training case (paper: 100 000)."""
    uniform_samples: int = 10_000
    """Uniform samples in the (augmented) ROI per training case (paper: 10 000)."""
    cone_deg: float = 45.0
    """Cone of the shape-diameter rays, degrees (paper: 45)."""
    thin_mm: float = DEFAULT_THIN_MM
    """Surface whose shape diameter is below this (mm) counts as thin and is sampled thin_factor times more
    densely (the authors' code: 0.1 normalised units of the 70 mm ROI, 3.5 mm)."""
    thin_factor: float = DEFAULT_THIN_FACTOR
    """How many times more densely (per unit area) thin parts are sampled (the authors' 500 per cell puts nearly
    every sample there; 10 is ours, see docs/methods/nudf.md)."""
    rois_per_case: int = 8
    """Training items (ROIs with their points) per case and epoch."""
    augment_probability: float = 0.5
    """Probability of each augmentation of a training item (paper: 50 %)."""
    translate_mm: float = 5.0
    """Largest translation of the augmented ROI along each axis, mm (the paper's value is lost; also what the
    ROI detector may miss by)."""
    rotate_deg: float = 15.0
    """Largest rotation of the augmented ROI about a random axis, degrees (the paper's value is lost)."""
    noise_sigma: float = 0.02
    """Standard deviation of the Gaussian noise added to the scaled intensities (20 HU)."""
    predict_batch_points: int = 65_536
    """Query points per decoder call at inference (memory, not results)."""
    mesh_spacing_mm: float | None = None
    """unet-roi: the probability is trilinearly upsampled to this isotropic spacing before marching cubes
    (None: the image's finest voxel size, at least 0.25 mm)."""
    mesh: UdfMeshConfig = field(default_factory=_nudf_mesher)
    """The UDF mesher's settings (--set mesh.support_radius_mm=0.5); kink_mm 0 for a network's smooth UDF."""
    trainer: TrainerConfig = field(default_factory=_paper_trainer)
    """The dataset trainer's settings (--set trainer.epochs=50): batch 4 (paper), Adam 1e-4, early stop (20)."""

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise VesselfieldError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        check_numbers(self, positive=("roi_mm", "clamp", "cone_deg", "thin_factor", "mesh_spacing_mm"),
                      non_negative=("neighbour_offset", "thin_mm", "translate_mm", "rotate_deg", "noise_sigma",
                                    "uniform_samples"),
                      at_least_one=("points_per_roi", "surface_samples", "rois_per_case", "predict_batch_points"))
        self.channels = tuple(int(c) for c in self.channels)
        self.hidden = tuple(int(h) for h in self.hidden)
        if not self.channels or min(self.channels) < 1:
            raise VesselfieldError(f"channels must be positive numbers, got {self.channels}")
        if not self.hidden or min(self.hidden) < 1:
            raise VesselfieldError(f"hidden must be positive numbers, got {self.hidden}")
        step = 2 ** (len(self.channels) - 1)
        if self.roi_voxels < 2 * step or self.roi_voxels % step:
            raise VesselfieldError(f"roi_voxels must be a multiple of {step} and at least {2 * step} for "
                                   f"{len(self.channels)} encoder levels, got {self.roi_voxels}")
        lo, hi = (float(v) for v in self.hu_window)
        if not lo < hi:
            raise VesselfieldError(f"hu_window must be (low, high) with low < high, got {self.hu_window}")
        self.hu_window = (lo, hi)
        if not 0 <= self.dropout < 1:
            raise VesselfieldError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.augment_probability <= 1:
            raise VesselfieldError(f"augment_probability must be in [0, 1], got {self.augment_probability}")
        if not 0 < self.cone_deg < 90:
            raise VesselfieldError(f"cone_deg must be in (0, 90), got {self.cone_deg}")
        if not isinstance(self.trainer, TrainerConfig):
            raise VesselfieldError("trainer must be a TrainerConfig")
        if not isinstance(self.mesh, UdfMeshConfig):
            raise VesselfieldError("mesh must be a UdfMeshConfig")

    @property
    def voxel_mm(self) -> float:
        """The ROI image's voxel size (mm)."""
        return self.roi_mm / (self.roi_voxels - 1)

    @property
    def half_mm(self) -> float:
        """Half the ROI side (mm): one normalised unit."""
        return self.roi_mm / 2.0


# ------------------------------------------------------------------------------- ROI
@dataclass(frozen=True)
class Roi:
    """A cubic region of interest: ``p = center_mm + rotation @ (u * side_mm / 2)`` for ``u ∈ [-1, 1]^3``."""

    center_mm: tuple[float, float, float]
    side_mm: float
    voxels: int
    rotation: tuple = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    @property
    def half_mm(self) -> float:
        return self.side_mm / 2.0

    def to_world(self, u) -> np.ndarray:
        """(N, 3) world mm of normalised ``u`` (N, 3)."""
        return np.asarray(self.center_mm) + (np.asarray(u, dtype=np.float64) * self.half_mm) @ np.asarray(
            self.rotation).T

    def to_normalised(self, p) -> np.ndarray:
        """(N, 3) normalised coordinates of world points ``p`` (N, 3) mm."""
        return ((np.asarray(p, dtype=np.float64) - np.asarray(self.center_mm)) @ np.asarray(self.rotation)) / self.half_mm

    def grid(self):
        """The ROI's voxel grid (axis-aligned ROIs only: what ``udf.nii.gz`` is written on)."""
        from vesselfield.grid import VolumeGrid

        if not np.allclose(self.rotation, np.eye(3)):
            raise VesselfieldError("only an axis-aligned ROI has a VolumeGrid")
        step = self.side_mm / (self.voxels - 1)
        return VolumeGrid((self.voxels,) * 3, (step,) * 3, tuple(np.asarray(self.center_mm) - self.half_mm))

    @property
    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """World bounding box ``(lo, hi)`` of the (possibly rotated) cube, as ``VolumeGrid.bounds_mm``."""
        corners = self.to_world(np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1], indexing="ij")).reshape(3, -1).T)
        return corners.min(axis=0), corners.max(axis=0)


def image_overlap(roi: Roi, grid) -> float:
    """Fraction of the ROI's bounding box inside the image's box (0: the ROI is outside the image)."""
    lo, hi = roi.bounds_mm
    glo, ghi = grid.bounds_mm
    inter = np.clip(np.minimum(hi, ghi) - np.maximum(lo, glo), 0, None)
    return float(np.prod(inter) / np.prod(hi - lo))


def scale_intensities(image, hu_window) -> np.ndarray:
    """(X, Y, Z) float32: ``image`` clipped to ``hu_window`` and mapped linearly to [-1, 1]."""
    lo, hi = hu_window
    x = np.clip(np.asarray(image, dtype=np.float32), lo, hi)
    return ((x - np.float32(lo)) * np.float32(2.0 / (hi - lo)) - 1.0).astype(np.float32)


def roi_sample(volume, grid, roi: Roi, fill: float, order: int = 1) -> np.ndarray:
    """(N, N, N) float32: ``volume`` (on ``grid``) trilinearly sampled at the ROI's voxel centres; ``fill`` outside."""
    from scipy.ndimage import map_coordinates

    n = roi.voxels
    u = np.linspace(-1.0, 1.0, n)
    uu = np.stack(np.meshgrid(u, u, u, indexing="ij"), axis=-1).reshape(-1, 3)
    idx = grid.world_to_index(roi.to_world(uu)).T
    out = map_coordinates(np.asarray(volume, dtype=np.float32), idx, order=order, mode="constant", cval=float(fill),
                          prefilter=False)
    return out.reshape(n, n, n).astype(np.float32)


def roi_image(scaled_image, grid, roi: Roi) -> np.ndarray:
    """(N, N, N) float32 network input: scaled intensities (:func:`scale_intensities`) in the ROI; -1 (air) outside the image."""
    return roi_sample(scaled_image, grid, roi, fill=-1.0)


def random_rotation(rng, max_deg: float) -> np.ndarray:
    """A rotation by an angle uniform in [-max_deg, max_deg] about a uniformly random axis (Rodrigues)."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(max_deg) * (2.0 * rng.random() - 1.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


# ------------------------------------------------------------------------------- training data
@dataclass
class NudfCase:
    """One training case in memory: scaled image on its grid, ROI centre, distance samples, label.

    Attributes:
        name: case name.
        image: (X, Y, Z) float32 scaled intensities (:func:`scale_intensities`).
        grid: the image's :class:`~vesselfield.grid.VolumeGrid`.
        center_mm: (3,) the ROI centre (the surface's bounding-box centre).
        points_mm: (S, 3) float32 sample points (world mm); distances_mm: (S,) their exact unsigned
            distances to the surface (nudf; None for unet-roi).
        occupancy: (X, Y, Z) float32 fraction of each voxel inside the closed surface (unet-roi; None
            for nudf).
    """

    name: str
    image: np.ndarray
    grid: object
    center_mm: np.ndarray
    points_mm: np.ndarray | None = None
    distances_mm: np.ndarray | None = None
    occupancy: np.ndarray | None = None


class NudfRoiDataset:
    """Map-style dataset of ROIs: ``{"image": (1,N,N,N), "points": (P,3), "distances": (P,)}`` (nudf) or
    ``{"image", "occupancy": (1,N,N,N)}`` (unet-roi), normalised units.

    Item ``i`` is case ``i // rois_per_case``. With ``augment`` each item draws, from torch's global
    generator (which the trainer seeds per epoch and checkpoints, so resumed runs repeat it), a
    translation, a rotation and intensity noise (each with ``augment_probability``) and its points;
    without, items are the un-augmented ROI and a fixed seeded choice of points.
    """

    def __init__(self, cases, config: NudfConfig, *, augment: bool, seed: int = 0, rois_per_case: int | None = None):
        self.cases = list(cases)
        self.config = config
        self.augment = augment
        self.seed = int(seed)
        self.per_case = int(rois_per_case or config.rois_per_case)

    def __len__(self) -> int:
        return len(self.cases) * self.per_case

    def _rng(self, index: int):
        import torch

        if self.augment:
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        return np.random.default_rng([self.seed, index])

    def roi_for(self, case: NudfCase, rng) -> Roi:
        c = self.config
        center = np.asarray(case.center_mm, dtype=np.float64)
        rotation = np.eye(3)
        if self.augment:
            if rng.random() < c.augment_probability:
                center = center + rng.uniform(-c.translate_mm, c.translate_mm, 3)
            if rng.random() < c.augment_probability:
                rotation = random_rotation(rng, c.rotate_deg)
        return Roi(tuple(center), c.roi_mm, c.roi_voxels, tuple(map(tuple, rotation)))

    def __getitem__(self, index: int) -> dict:
        import torch

        c = self.config
        case = self.cases[index // self.per_case]
        rng = self._rng(index)
        roi = self.roi_for(case, rng)
        image = roi_image(case.image, case.grid, roi)
        if self.augment and c.noise_sigma > 0 and rng.random() < c.augment_probability:
            image = image + rng.standard_normal(image.shape).astype(np.float32) * np.float32(c.noise_sigma)
        item = {"image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]}
        if case.occupancy is not None:
            occ = roi_sample(case.occupancy, case.grid, roi, fill=0.0)
            item["occupancy"] = torch.from_numpy(occ)[None]
            return item
        u = roi.to_normalised(case.points_mm)
        inside = np.flatnonzero(np.all(np.abs(u) <= 1.0, axis=1))
        if len(inside) == 0:
            raise VesselfieldError(f"case {case.name}: no distance sample inside its ROI")
        pick = inside[rng.integers(0, len(inside), c.points_per_roi)]
        item["points"] = torch.from_numpy(u[pick].astype(np.float32))
        item["distances"] = torch.from_numpy((case.distances_mm[pick] / roi.half_mm).astype(np.float32))
        return item


# ------------------------------------------------------------------------------- model
def build_model(config: NudfConfig):
    """The variant's untrained network (plain ``nn.Module``)."""
    if config.variant == "nudf":
        from vesselfield.networks.udf_net import build_udf_net

        return build_udf_net(config.channels, config.hidden, config.neighbour_offset, output_scale=config.clamp,
                             dropout=config.dropout)
    from vesselfield.networks.unet import plain_unet

    return plain_unet(1, 1, config.channels, [(2, 2, 2)] * (len(config.channels) - 1), norm="batch")


def make_objective(config: NudfConfig):
    """``objective(model, batch) -> (loss, {term: float})``: eq. 2 (nudf) or Dice + cross-entropy (unet-roi)."""
    from vesselfield.losses.udf import clamped_l1_loss

    half = config.half_mm
    if config.variant == "nudf":
        def objective(model, batch):
            pred = model(batch["image"], batch["points"])
            loss = clamped_l1_loss(pred, batch["distances"], config.clamp)
            return loss, {"l1_mm": float(loss.detach()) * half}
        return objective

    from monai.losses import DiceCELoss

    dice_ce = DiceCELoss(sigmoid=True)

    def objective_unet(model, batch):
        logits = model(batch["image"])
        loss = dice_ce(logits, (batch["occupancy"] >= 0.5).to(logits.dtype))
        return loss, {}

    return objective_unet


def make_metrics(config: NudfConfig):
    """Validation metrics: ``near_mae_mm`` (nudf: mean |error| in mm of the points within the clamp) or
    ``dice`` (unet-roi: Dice of ``p >= 0.5`` against the occupancy ``>= 0.5``)."""
    half = config.half_mm

    def nudf_metrics(model, batch):
        pred = model(batch["image"], batch["points"])
        near = batch["distances"] < config.clamp
        err = (pred - batch["distances"]).abs()[near]
        return {"near_mae_mm": float(err.mean()) * half if err.numel() else 0.0}

    def unet_metrics(model, batch):
        mask = model(batch["image"]) > 0
        target = batch["occupancy"] >= 0.5
        total = float(mask.sum() + target.sum())
        return {"dice": 2.0 * float((mask & target).sum()) / total if total else 1.0}

    return nudf_metrics if config.variant == "nudf" else unet_metrics


# ------------------------------------------------------------------------------- trained model
@dataclass
class TrainedNudf:
    """A trained model as :func:`load_model_file` gives it back (what ``predict`` uses).

    Attributes:
        config: the training's :class:`NudfConfig`.
        model: the network, weights loaded, in eval mode, on the CPU.
        details: training cases, epochs, best epoch, training voxel size ... (plain values).
    """

    config: NudfConfig
    model: object
    details: dict

    def roi_at(self, center_mm) -> Roi:
        return Roi(tuple(float(v) for v in center_mm), self.config.roi_mm, self.config.roi_voxels)

    def input_of(self, image, grid, roi: Roi) -> np.ndarray:
        """(N, N, N) network input of a raw CT image (HU) in ``roi``."""
        return roi_image(scale_intensities(image, self.config.hu_window), grid, roi)

    def encode(self, roi_input, device="cpu"):
        """The encoder's feature maps of one ROI input (N, N, N) (nudf)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(roi_input, dtype=np.float32))[None, None].to(device)
        model = self.model.to(device).eval()
        with torch.no_grad():
            return model.encode(x)

    def udf_function(self, maps, roi: Roi, device="cpu"):
        """``udf_fn(points (M, 3) world mm tensor) -> (M,) mm``, differentiable: the mesher's input.

        Axis-aligned ROI: ``u = (p - c) / (L/2)``, ``f_mm = f(u) L/2``.
        """
        import torch

        center = torch.tensor(roi.center_mm, dtype=torch.float32)
        half = float(roi.half_mm)
        model = self.model.to(device).eval()

        def udf_fn(points):
            u = ((points.to(torch.float32) - center.to(points.device)) / half).to(device)
            return (model.decode(maps, u[None])[0] * half).to(points.device)

        return udf_fn

    def udf_volume(self, maps, roi: Roi, device="cpu") -> np.ndarray:
        """(N, N, N) float32 predicted unsigned distance (mm) at the ROI's voxel centres."""
        import torch

        n = roi.voxels
        u = np.linspace(-1.0, 1.0, n, dtype=np.float32)
        uu = torch.from_numpy(np.stack(np.meshgrid(u, u, u, indexing="ij"), axis=-1).reshape(-1, 3))
        out = []
        model = self.model.to(device).eval()
        with torch.no_grad():
            for chunk in torch.split(uu, self.config.predict_batch_points):
                out.append(model.decode(maps, chunk.to(device)[None])[0].float().cpu())
        return (torch.cat(out).numpy() * roi.half_mm).reshape(n, n, n).astype(np.float32)

    def probability(self, roi_input, device="cpu") -> np.ndarray:
        """(N, N, N) float32 probability of the unet-roi baseline in the ROI."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(roi_input, dtype=np.float32))[None, None].to(device)
        model = self.model.to(device).eval()
        with torch.no_grad():
            return torch.sigmoid(model(x))[0, 0].float().cpu().numpy()


def with_predict_settings(config: NudfConfig, assignments) -> NudfConfig:
    """``config`` with ``--set`` items of prediction applied: ``mesh.FIELD=VALUE`` (the UDF mesher),
    ``predict_batch_points`` and ``mesh_spacing_mm`` (the fields free on resume). Any other field was fixed
    by the training: setting it is a one-line error."""
    from vesselfield.config import build_config, config_to_dict

    items = [str(a) for a in (assignments or [])]
    if not items:
        return config
    free = {"predict_batch_points", "mesh_spacing_mm"}
    mesh_items, top_items = [], []
    for item in items:
        key = item.split("=", 1)[0].strip()
        if key.startswith("mesh."):
            mesh_items.append(item.strip()[len("mesh."):])
        elif key in free:
            top_items.append(item)
        else:
            raise VesselfieldError(f"--set {key} does not apply to a prediction: only mesh.FIELD, "
                                   "predict_batch_points and mesh_spacing_mm; the training fixed the rest")
    mesh_values = config_to_dict(config.mesh)
    for item in mesh_items:
        mesh_values.pop(item.split("=", 1)[0].strip(), None)
    values = config_to_dict(config)
    values["mesh"] = config_to_dict(build_config(UdfMeshConfig, mesh_values, mesh_items))
    for item in top_items:
        values.pop(item.split("=", 1)[0].strip(), None)
    return build_config(NudfConfig, values, top_items)


def model_payload(config: NudfConfig, state: dict, details: dict) -> dict:
    """What :data:`MODEL_FILE` holds (plain values and tensors; loads with ``weights_only=True``)."""
    from vesselfield.config import config_to_dict
    from vesselfield.io.run_folder import to_plain

    return {"format": MODEL_FORMAT, "config": config_to_dict(config), "state": state, "details": to_plain(details)}


def is_nudf_run(run_dir) -> bool:
    """Whether ``run_dir`` is a ``train nudf|unet-roi`` run: its config.yaml's command says so (a few bytes,
    not the weights); a folder with a model file and no config.yaml is asked its model file's format."""
    from pathlib import Path

    from vesselfield.io.run_folder import CONFIG_NAME, read_config_yaml

    run = Path(run_dir)
    if (run / CONFIG_NAME).is_file():
        words = str(read_config_yaml(run / CONFIG_NAME).get("command") or "").split()
        return words[1:2] == ["train"] and words[2:3] in (["nudf"], ["unet-roi"])
    return (run / MODEL_FILE).is_file() and model_format(run / MODEL_FILE) == MODEL_FORMAT


def model_format(path) -> str | None:
    """The ``format`` a model file says it has (None when it is not a vesselfield model file)."""
    from vesselfield.io.torch_files import load_tensors

    payload = load_tensors(path, what="model file")
    return payload.get("format") if isinstance(payload, dict) else None


def load_model_file(path) -> TrainedNudf:
    """A :data:`MODEL_FILE` back as a :class:`TrainedNudf` (a file of another kind -> error)."""
    from vesselfield.config import build_config
    from vesselfield.io.torch_files import load_state, load_tensors

    payload = load_tensors(path, what="NUDF model file")
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise VesselfieldError(f"{path} is not a NUDF model file (format {MODEL_FORMAT})")
    config = build_config(NudfConfig, payload["config"])
    model = build_model(config)
    load_state(model, payload["state"], path)
    return TrainedNudf(config, model, dict(payload["details"]))
