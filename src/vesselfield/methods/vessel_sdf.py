"""VesselSDF: vessel signed distance fields from sparse CT slices, supervised; and its baselines.

Esposito, Rebain, Onken, Li & Mac Aodha, "VesselSDF: Distance Field Priors for Vascular Network
Reconstruction", MICCAI 2025 (``../shared/papers/vesselsdf-esposito-2025.txt``):

- stage 1 (Sec. 3.2): a 3D attention U-Net (eq. 2) maps the CT volume to occupancy logits;
- stage 2 (Sec. 3.3, eq. 3): a lighter two-level 3D U-Net maps the **detached** stage-1
  occupancy to the SDF (mm, negative inside), so the SDF terms never reach stage 1;
- the objective is eq. 4 (:mod:`vesselfield.losses.vessel_sdf`).

The variants (the paper's baselines and ablations, one config field ``variant``):

==========================  ==============================================================
``vessel-sdf``              the full method
``vessel-sdf-no-gauss``     the full method without L_gauss (Table 2, "w/o Gaussian loss")
``attention-unet``          stage 1 alone (Table 2, "w/o SDF refinement")
``direct-sdf``              one attention U-Net regressing the SDF from the image (Table 2,
                            "w/o binary occupancy")
``unet3d``                  a plain binary 3D U-Net (Table 1, "3D-UNet")
==========================  ==============================================================

Arrays are (X, Y, Z) on a :class:`~vesselfield.grid.VolumeGrid` (Z the axial, sparse axis);
network tensors (B, C, X, Y, Z). This module holds the model, the objective, the intensity
normalisation, sliding-window prediction and the model file; the jobs that read datasets and
write run folders are :mod:`vesselfield.pipelines.train_ct` and
:mod:`vesselfield.pipelines.predict_ct`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from vesselfield.config import check_numbers
from vesselfield.errors import VesselfieldError
from vesselfield.training.trainer import TrainerConfig

__all__ = ["MODEL_FILE", "VARIANTS", "IntensityNormalisation", "TrainedVesselSdf", "VesselSdfConfig",
           "build_model", "make_metrics", "make_objective", "predict_volume", "segmentation_of"]

#: The model file users load for inference (written from best.pt's weights when training stops).
MODEL_FILE = "model.pt"
#: What a model file says it is (checked on loading, so a file of another method is refused).
MODEL_FORMAT = "vesselfield.vessel-sdf/1"

#: variant -> (stage-1 network, has stage-2 refiner, one-line description).
VARIANTS: dict[str, tuple[str, bool, str]] = {
    "vessel-sdf": ("attention", True, "attention U-Net occupancy -> detached -> U-Net SDF refiner (the paper)"),
    "vessel-sdf-no-gauss": ("attention", True, "the full method without the Gaussian regulariser (Table 2)"),
    "attention-unet": ("attention", False, "stage 1 alone: attention U-Net occupancy (Table 2, w/o SDF refinement)"),
    "direct-sdf": ("attention-sdf", False, "one attention U-Net regressing the SDF (Table 2, w/o binary occupancy)"),
    "unet3d": ("plain", False, "a plain binary 3D U-Net (Table 1, 3D-UNet)"),
}
Variant = Literal["vessel-sdf", "vessel-sdf-no-gauss", "attention-unet", "direct-sdf", "unet3d"]


def _paper_trainer() -> TrainerConfig:
    # The paper: Adam at 5e-4 for 100 epochs (AdamW with zero weight decay is Adam). Batch 16 of
    # whole 512x512x16 volumes does not fit a CPU; 2 patches per step is our default.
    return TrainerConfig(epochs=100, batch_size=2, learning_rate=5e-4, val_fraction=0.2, monitor="val_dice",
                         monitor_mode="max")


@dataclass
class VesselSdfConfig:
    """Every setting of a VesselSDF (or baseline) training and of its inference, every default.

    The loss weights are the paper's (Sec. 4). σ and β of eqs. 8-9 are not given in the paper;
    ours are one in-plane voxel of the datasets it targets (0.7-1 mm), see
    ``docs/methods/vessel-sdf.md`` for the measurement behind them.
    """

    config_name: ClassVar[str] = "vessel-sdf"
    key_fields: ClassVar[tuple] = ("variant",)
    free_on_resume: ClassVar[tuple] = ("sw_overlap", "sw_batch_size")

    variant: Variant = "vessel-sdf"
    """Which network and objective: vessel-sdf, vessel-sdf-no-gauss, attention-unet, direct-sdf, unet3d."""
    channels: tuple[int, ...] = (8, 16, 32, 64)
    """Features per level of the stage-1 (or single) U-Net; its depth is the tuple's length."""
    refiner_channels: tuple[int, ...] = (8, 16)
    """Features per level of the stage-2 SDF refiner (the paper: two encoder-decoder levels)."""
    patch_voxels: tuple[int, int, int] | None = None
    """Training patch and sliding-window size (X, Y, Z) voxels. None: (128, 128, 32) cut to the largest
    training volume, rounded down to multiples of the network's total stride."""
    patches_per_case: int = 16
    """Training patches drawn from each case per epoch (1 when the patch covers the volume)."""
    foreground_fraction: float = 1 / 3
    """Fraction of a case's patches centred on a vessel voxel (nnU-Net's oversampling)."""
    sdf_scale_mm: float = 10.0
    """The SDF networks output f / sdf_scale_mm: a network starts with outputs of order 1, targets reach tens of
    mm, and Adam's steps are about the learning rate in the weights' units, so unscaled outputs would need
    thousands of steps just to reach the targets' range."""
    refiner_prior_mm: float = 1.0
    """A residual refiner: the refiner's output is added to a signed prior of the occupancy, prior_mm * (1 - 2p),
    so the SDF starts with the stage-1 mask's sign and the refiner learns the distances (the paper does not
    say how the refiner is parametrised). 0: the refiner alone (measured: it can stall with the whole vessel
    on the positive side, docs/methods/vessel-sdf.md)."""
    sdf_band_mm: float | None = 5.0
    """Truncate the target SDF at +-this many mm (None: the full distance, as the paper). The two-level refiner
    sees about ten voxels around a voxel, so distances far beyond that are not learnable from its input, and
    fitting them cost the zero level (measured: a 20 mm band lost the vessels' sign, 5 mm kept it; see
    docs/methods/vessel-sdf.md). The eikonal term counts only voxels inside the band."""
    lambda_sdf: float = 0.1
    """λs of eq. 4: weight of L_sdf, the mean absolute SDF error (mm)."""
    lambda_occupancy: float = 0.01
    """λo of eq. 4: weight of L_occ, the binary cross-entropy of the stage-1 occupancy."""
    lambda_eikonal: float = 0.01
    """λe of eq. 4: weight of L_eik, the anisotropic eikonal term."""
    lambda_gauss: float | None = None
    """λg of eq. 4: weight of L_gauss, the distance-weighted Gaussian term. None: 0.1 (the paper), 0 for
    vessel-sdf-no-gauss."""
    lambda_surface: float = 0.1
    """λr of eq. 4: weight of L_sur = mean exp(-β|f|)."""
    gauss_sigma_mm: float = 1.0
    """σ of the Gaussian blur of L_gauss, mm (not in the paper; about one in-plane voxel)."""
    surface_beta_per_mm: float = 0.5
    """β of L_sur, 1/mm (not in the paper): exp(-β|f|) penalises values within about 1/β mm of zero. At f = 0
    its pull is λr·β against L_sdf's λs, so β >= λs/λr (1/mm with the paper's weights) would stop a wrongly
    signed voxel near the surface from crossing zero; 0.5 keeps half of L_sdf's pull there."""
    intensity_percentiles: tuple[float, float] = (0.5, 99.5)
    """Intensities are clipped to these percentiles of the training voxels, then standardised (nnU-Net's CT scheme)."""
    sw_overlap: float = 0.25
    """Sliding-window inference: overlap of neighbouring windows (fraction of the patch)."""
    sw_batch_size: int = 2
    """Sliding-window inference: windows per forward pass."""
    trainer: TrainerConfig = field(default_factory=_paper_trainer)
    """The dataset trainer's settings (--set trainer.epochs=50); paper: Adam 5e-4, 100 epochs."""

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise VesselfieldError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.lambda_gauss is None:
            self.lambda_gauss = 0.0 if self.variant == "vessel-sdf-no-gauss" else 0.1
        elif self.variant == "vessel-sdf-no-gauss" and self.lambda_gauss != 0:
            raise VesselfieldError("vessel-sdf-no-gauss is the method without L_gauss: lambda_gauss must be 0 or unset")
        check_numbers(self, positive=("gauss_sigma_mm", "surface_beta_per_mm", "sdf_band_mm", "sdf_scale_mm"),
                      non_negative=("refiner_prior_mm", "lambda_sdf", "lambda_occupancy", "lambda_eikonal", "lambda_gauss",
                                    "lambda_surface"),
                      at_least_one=("patches_per_case", "sw_batch_size"))
        self.channels = tuple(int(c) for c in self.channels)
        self.refiner_channels = tuple(int(c) for c in self.refiner_channels)
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise VesselfieldError(f"channels must be at least two positive numbers, got {self.channels}")
        if len(self.refiner_channels) < 2 or min(self.refiner_channels) < 1:
            raise VesselfieldError(f"refiner_channels must be at least two positive numbers, got {self.refiner_channels}")
        if self.patch_voxels is not None:
            self.patch_voxels = tuple(int(p) for p in self.patch_voxels)
            if len(self.patch_voxels) != 3 or min(self.patch_voxels) < 1:
                raise VesselfieldError(f"patch_voxels (--patch) must be three positive integers, got {self.patch_voxels}")
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise VesselfieldError(f"foreground_fraction must be in [0, 1], got {self.foreground_fraction}")
        if not 0.0 <= self.sw_overlap < 1.0:
            raise VesselfieldError(f"sw_overlap must be in [0, 1), got {self.sw_overlap}")
        lo, hi = (float(v) for v in self.intensity_percentiles)
        if not 0.0 <= lo < hi <= 100.0:
            raise VesselfieldError(f"intensity_percentiles must satisfy 0 <= low < high <= 100, got {self.intensity_percentiles}")
        self.intensity_percentiles = (lo, hi)
        if not isinstance(self.trainer, TrainerConfig):
            raise VesselfieldError("trainer must be a TrainerConfig")
        if self.has_sdf and not any((self.lambda_sdf, self.lambda_eikonal, self.lambda_gauss, self.lambda_surface)):
            raise VesselfieldError(f"{self.variant} predicts an SDF but every SDF loss weight is 0")
        if self.has_occupancy and not self.lambda_occupancy:
            raise VesselfieldError(f"{self.variant} predicts occupancy but lambda_occupancy is 0 (stage 1 would not learn)")

    @property
    def has_occupancy(self) -> bool:
        """The model predicts occupancy logits (stage 1)."""
        return VARIANTS[self.variant][0] in ("attention", "plain")

    @property
    def has_sdf(self) -> bool:
        """The model predicts an SDF (stage 2, or direct-sdf)."""
        return VARIANTS[self.variant][1] or VARIANTS[self.variant][0] == "attention-sdf"

    def loss_weights(self):
        from vesselfield.losses.vessel_sdf import VesselSdfLossWeights

        return VesselSdfLossWeights(sdf=self.lambda_sdf, occupancy=self.lambda_occupancy, eikonal=self.lambda_eikonal,
                                    gauss=float(self.lambda_gauss), surface=self.lambda_surface,
                                    gauss_sigma_mm=self.gauss_sigma_mm, surface_beta_per_mm=self.surface_beta_per_mm)


# ------------------------------------------------------------------------------- model
class _Lazy:
    """Builds the nn.Module subclass on first use so that importing this module does not import torch."""

    cls = None


def _net_class():
    if _Lazy.cls is not None:
        return _Lazy.cls
    import torch

    class VesselSdfNet(torch.nn.Module):
        """Stage 1 (occupancy logits) and/or stage 2 (SDF from the detached occupancy), eq. 3.

        ``forward(image (B, 1, X, Y, Z)) -> {"occupancy_logits": (B, 1, X, Y, Z) or None,
        "sdf_mm": (B, 1, X, Y, Z) or None}``. With both stages the refiner sees
        ``p = sigmoid(logits).detach()``: no gradient of an SDF term reaches stage 1; the SDF is
        ``sdf_scale_mm * refiner(p) + prior_mm * (1 - 2p)`` (mm).
        """

        def __init__(self, occupancy_net, refiner, sdf_net, sdf_scale_mm: float = 1.0, prior_mm: float = 0.0):
            super().__init__()
            self.occupancy_net = occupancy_net
            self.refiner = refiner
            self.sdf_net = sdf_net
            self.sdf_scale_mm = float(sdf_scale_mm)
            self.prior_mm = float(prior_mm)

        def forward(self, image):
            logits = sdf = None
            if self.occupancy_net is not None:
                logits = self.occupancy_net(image)
                if self.refiner is not None:
                    p = torch.sigmoid(logits).detach()
                    sdf = self.refiner(p) * self.sdf_scale_mm
                    if self.prior_mm:
                        sdf = sdf + self.prior_mm * (1.0 - 2.0 * p)
            else:
                sdf = self.sdf_net(image) * self.sdf_scale_mm
            return {"occupancy_logits": logits, "sdf_mm": sdf}

    _Lazy.cls = VesselSdfNet
    return VesselSdfNet


def network_strides(config: VesselSdfConfig, spacing_mm, patch_voxels):
    """Stride triples of the stage-1 network and of the refiner for the training spacing."""
    from vesselfield.networks.unet import pooling_strides

    return (pooling_strides(spacing_mm, patch_voxels, len(config.channels) - 1),
            pooling_strides(spacing_mm, patch_voxels, len(config.refiner_channels) - 1))


def build_model(config: VesselSdfConfig, strides, refiner_strides):
    """The variant's network (a plain ``nn.Module``; see :data:`VARIANTS`), untrained."""
    from vesselfield.networks.unet import attention_unet, plain_unet

    kind, refine, _ = VARIANTS[config.variant]
    net = _net_class()
    sdf_head = _zero_last_layer
    if kind == "attention":
        occ = attention_unet(1, 1, config.channels, strides)
        ref = sdf_head(plain_unet(1, 1, config.refiner_channels, refiner_strides, norm="batch")) if refine else None
        return net(occ, ref, None, config.sdf_scale_mm, config.refiner_prior_mm)
    if kind == "plain":
        return net(plain_unet(1, 1, config.channels, strides), None, None, config.sdf_scale_mm)
    return net(None, None, sdf_head(attention_unet(1, 1, config.channels, strides)), config.sdf_scale_mm)


def _zero_last_layer(network):
    """``network`` with its output convolution set to zero: an SDF network starts as the constant 0.

    A freshly initialised U-Net outputs noise of order one; scaled to mm (``sdf_scale_mm``) its
    finite-difference gradients are tens per mm, so the eikonal and Gaussian terms start at 1e5
    and swamp L_sdf for hundreds of steps (measured: 60 epochs of a small phantom set without
    learning the SDF). Starting from 0 they start at 1 and 0, and the other layers still get
    gradients through the output layer's (growing) weights. (The same idea as zero-initialising
    a residual branch's last layer, Goyal et al. 2017.)
    """
    import torch

    convs = [m for m in network.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    with torch.no_grad():
        convs[-1].weight.zero_()
        if convs[-1].bias is not None:
            convs[-1].bias.zero_()
    return network


def choose_patch(config: VesselSdfConfig, shapes, spacing_mm) -> tuple[tuple[int, int, int], list, list]:
    """``(patch, strides, refiner_strides)``: the configured or default patch, made a multiple of the strides.

    The default is (128, 128, 32) voxels cut to the largest training volume (so small volumes are
    trained whole). Each axis is rounded down to a multiple of the network's total stride (at least
    one multiple); sliding-window inference pads volumes smaller than the patch.
    """
    from vesselfield.networks.unet import total_strides

    largest = [max(int(s[a]) for s in shapes) for a in range(3)]
    wanted = list(config.patch_voxels) if config.patch_voxels is not None else [min(d, m) for d, m in
                                                                                zip((128, 128, 32), largest)]
    strides, ref = network_strides(config, spacing_mm, wanted)
    total = [max(a, b) for a, b in zip(total_strides(strides), total_strides(ref))]
    patch = tuple(max(t, (w // t) * t) for w, t in zip(wanted, total))
    return patch, strides, ref


# ------------------------------------------------------------------------------- intensities
@dataclass
class IntensityNormalisation:
    """CT intensities to network inputs: clip to [low, high], then ``(x - mean) / std``.

    nnU-Net's CT scheme (Isensee et al. 2021) with the statistics of every training voxel rather
    than of the foreground: the clip window keeps the tissue around the vessels, whose contrast to
    the vessel is what the network reads.
    """

    low: float
    high: float
    mean: float
    std: float

    @classmethod
    def fit(cls, images, percentiles=(0.5, 99.5), max_samples: int = 2_000_000, seed: int = 0):
        """Statistics of the training images: every voxel when they hold at most ``max_samples``, else
        ``max_samples`` voxels drawn with a fixed seed, in proportion to each image's size (drawn image
        by image, so that hundreds of CT volumes are never concatenated in memory)."""
        sizes = [int(np.asarray(im).size) for im in images]
        total = sum(sizes)
        rng = np.random.default_rng(seed)
        parts = []
        for im, n in zip(images, sizes):
            flat = np.asarray(im, dtype=np.float32).ravel()
            if total > max_samples:
                flat = flat[rng.choice(n, max(1, round(max_samples * n / total)), replace=False)]
            parts.append(flat)
        values = np.concatenate(parts)
        low, high = (float(v) for v in np.percentile(values, percentiles))
        clipped = np.clip(values, low, high).astype(np.float64)
        std = float(clipped.std())
        return cls(low, high, float(clipped.mean()), std if std > 0 else 1.0)

    def apply(self, image) -> np.ndarray:
        """(X, Y, Z) float32 network input."""
        x = np.clip(np.asarray(image, dtype=np.float32), self.low, self.high)
        return ((x - np.float32(self.mean)) / np.float32(self.std)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "mean": self.mean, "std": self.std}


# ------------------------------------------------------------------------------- objective
def make_objective(config: VesselSdfConfig):
    """``objective(model, batch) -> (loss, {term: float})``: eq. 4 on a batch of patches."""
    from vesselfield.losses.vessel_sdf import vessel_sdf_loss

    weights = config.loss_weights()

    def objective(model, batch):
        pred = model(batch["image"])
        return vessel_sdf_loss(pred, batch, batch["spacing_mm"], weights, band_mm=config.sdf_band_mm)

    return objective


def segmentation_of(pred: dict):
    """The vessel mask of a prediction (tensors or arrays): ``sdf < 0`` when there is an SDF, else
    ``occupancy logits > 0`` (probability > 0.5). The SDF is the method's output, so it decides."""
    sdf = pred.get("sdf_mm")
    if sdf is not None:
        return sdf < 0
    return pred["occupancy_logits"] > 0


def make_metrics():
    """``metrics(model, batch) -> {name: float}`` for validation: Dice of the patches' vessel masks
    (``dice``; the monitored value of best.pt) and, for SDF variants, the mean absolute SDF error
    (``sdf_mae_mm``) against the (truncated) target."""

    def metrics(model, batch):
        pred = model(batch["image"])
        mask = segmentation_of(pred)
        target = batch["occupancy"] > 0.5
        both = float((mask & target).sum())
        total = float(mask.sum() + target.sum())
        out = {"dice": 2.0 * both / total if total else 1.0}
        if pred.get("sdf_mm") is not None:
            out["sdf_mae_mm"] = float((pred["sdf_mm"] - batch["sdf_mm"]).abs().mean())
        return out

    return metrics


# ------------------------------------------------------------------------------- inference
def predict_volume(model, image_normalised, patch_voxels, *, overlap: float = 0.25, sw_batch_size: int = 2,
                   device="cpu", progress: bool = False) -> dict:
    """Sliding-window prediction of a whole volume (MONAI ``sliding_window_inference``).

    Windows of ``patch_voxels`` overlap by ``overlap``; their outputs are blended with Gaussian
    weights (MONAI's ``mode="gaussian"``), volumes smaller than a window are padded. The
    refiner runs inside each window on that window's occupancy, as in training.

    Args:
        model: a :func:`build_model` network (set to eval mode here).
        image_normalised: (X, Y, Z) float32 network input (:meth:`IntensityNormalisation.apply`).
        patch_voxels: the window (the training patch).

    Returns:
        ``{"occupancy": (X, Y, Z) float32 probability or None, "sdf_mm": (X, Y, Z) float32 or None}``.
    """
    import torch
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(np.ascontiguousarray(image_normalised, dtype=np.float32))[None, None].to(device)
    model = model.to(device).eval()

    def run(window):
        out = model(window)
        parts = [t for t in (out["occupancy_logits"], out["sdf_mm"]) if t is not None]
        return torch.cat(parts, dim=1)

    with torch.no_grad():
        y = sliding_window_inference(x, roi_size=tuple(int(p) for p in patch_voxels), sw_batch_size=int(sw_batch_size),
                                     predictor=run, overlap=float(overlap), mode="gaussian", progress=progress)
    y = y[0].float().cpu().numpy()
    has_occ = model.occupancy_net is not None
    has_sdf = model.refiner is not None or model.sdf_net is not None
    occupancy = (1.0 / (1.0 + np.exp(-y[0]))).astype(np.float32) if has_occ else None
    sdf = y[1 if has_occ else 0].astype(np.float32) if has_sdf else None
    return {"occupancy": occupancy, "sdf_mm": sdf}


@dataclass
class TrainedVesselSdf:
    """A trained model as :func:`load_model_file` gives it back (what ``predict`` uses).

    Attributes:
        config: the training's :class:`VesselSdfConfig`.
        model: the network, weights loaded, on the CPU.
        normalisation: the training intensities' :class:`IntensityNormalisation`.
        patch_voxels: the training patch (the sliding window).
        spacing_mm: the training data's median voxel size (a warning compares it to a new image).
        details: label note, training cases, epochs, best epoch ... (plain values).
    """

    config: VesselSdfConfig
    model: object
    normalisation: IntensityNormalisation
    patch_voxels: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    details: dict

    def predict(self, image, *, device="cpu", progress: bool = False) -> dict:
        """:func:`predict_volume` of a raw CT image (X, Y, Z), normalised as in training."""
        return predict_volume(self.model, self.normalisation.apply(image), self.patch_voxels,
                              overlap=self.config.sw_overlap, sw_batch_size=self.config.sw_batch_size,
                              device=device, progress=progress)


def model_payload(config: VesselSdfConfig, state: dict, strides, refiner_strides, normalisation: IntensityNormalisation,
                  patch_voxels, spacing_mm, details: dict) -> dict:
    """What :data:`MODEL_FILE` holds (plain values and tensors; loads with ``weights_only=True``)."""
    from vesselfield.config import config_to_dict
    from vesselfield.io.run_folder import to_plain

    return {"format": MODEL_FORMAT, "config": config_to_dict(config), "state": state,
            "strides": [list(s) for s in strides], "refiner_strides": [list(s) for s in refiner_strides],
            "normalisation": normalisation.to_dict(), "patch_voxels": [int(p) for p in patch_voxels],
            "spacing_mm": [float(s) for s in spacing_mm], "details": to_plain(details)}


def load_model_file(path) -> TrainedVesselSdf:
    """A :data:`MODEL_FILE` back as a :class:`TrainedVesselSdf` (a file of another kind -> error)."""
    from vesselfield.config import build_config
    from vesselfield.io.torch_files import load_state, load_tensors

    payload = load_tensors(path, what="VesselSDF model file")
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise VesselfieldError(f"{path} is not a VesselSDF model file (format {MODEL_FORMAT})")
    config = build_config(VesselSdfConfig, payload["config"])
    model = build_model(config, payload["strides"], payload["refiner_strides"])
    load_state(model, payload["state"], path)
    n = payload["normalisation"]
    return TrainedVesselSdf(config, model, IntensityNormalisation(n["low"], n["high"], n["mean"], n["std"]),
                            tuple(payload["patch_voxels"]), tuple(payload["spacing_mm"]), dict(payload["details"]))


def spacing_mismatch(train_spacing_mm, image_spacing_mm, factor: float = 1.5) -> str | None:
    """A warning when an image's voxel size differs from the training data's by more than ``factor``
    along an axis (the network has learned features at the training scale); None otherwise."""
    ratios = [float(b) / float(a) for a, b in zip(train_spacing_mm, image_spacing_mm)]
    worst = max(ratios, key=lambda r: max(r, 1 / r))
    if max(worst, 1 / worst) <= factor:
        return None
    fmt = lambda s: "x".join(f"{v:.3g}" for v in s)
    return (f"the image's voxel size {fmt(image_spacing_mm)} mm differs from the training data's "
            f"{fmt(train_spacing_mm)} mm by a factor {max(worst, 1 / worst):.2g}: expect worse results "
            "(resample the image or train on data like it)")


def default_mesh_spacing(spacing_mm) -> float:
    """The isotropic mesh spacing: the finest in-plane voxel size (mm)."""
    return float(min(spacing_mm[0], spacing_mm[1]))
