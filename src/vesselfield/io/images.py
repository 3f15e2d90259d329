"""2D images: projection masks as PNG (or NPY) and line-integral views as NPY.

Image arrays are indexed ``[row, col]`` with row 0 at the top of the PNG, the same indexing as
the detector in :mod:`vesselfield.geometry` (see docs/geometry.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.io.atomic import atomic_path


def save_mask_png(path, mask) -> None:
    """Write a binary mask as an 8-bit PNG (vessel = 255), atomically."""
    from PIL import Image

    m = np.asarray(mask)
    if m.ndim != 2:
        raise VesselfieldError(f"a mask image must be 2D, got shape {m.shape}")
    with atomic_path(path) as tmp:
        Image.fromarray(np.where(m > 0, 255, 0).astype(np.uint8)).save(tmp, format="PNG")


def save_image_npy(path, image) -> None:
    """Write a 2D float32 array (e.g. a line-integral view in mm) as ``.npy``, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(image, dtype=np.float32))


def load_image(path, *, what: str = "image") -> np.ndarray:
    """Read a 2D image from ``.npy`` (any numeric dtype) or ``.png``/``.jpg``/``.tif`` (grey or colour).

    Colour images are reduced to their maximum over channels (a vessel drawn in any colour counts).
    Returns a float32 (H, W) array.
    """
    path = Path(path)
    if not path.is_file():
        raise VesselfieldError(f"{what} file not found: {path}")
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im)
    except VesselfieldError:
        raise
    except Exception as exc:  # any decoder failure is a bad file, not a bug of ours
        raise VesselfieldError(f"cannot read {what} {path}: {type(exc).__name__}: {exc}") from None
    if arr.ndim == 3 and arr.shape[-1] in (2, 3, 4):
        arr = arr[..., :3].max(axis=-1) if arr.shape[-1] != 2 else arr[..., 0]
    if arr.ndim != 2:
        raise VesselfieldError(f"{what} {path} must be a 2D image, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise VesselfieldError(f"{what} {path} has non-numeric type {arr.dtype}")
    return arr.astype(np.float32)


def load_mask(path, *, what: str = "mask") -> np.ndarray:
    """A 2D binary mask (bool (H, W)) from PNG (non-zero = vessel) or NPY (non-zero = vessel)."""
    img = load_image(path, what=what)
    if not np.all(np.isfinite(img)):
        raise VesselfieldError(f"{what} {path} contains NaN or infinite values")
    return img > 0
