"""Preparing public datasets for the methods (see docs/data.md).

- ImageCAS (coronary CT angiography labels): :func:`prepare_imagecas` splits every label volume
  into its left and right coronary trees and resamples each onto the NeCA / SDF-CAR grid
  (128^3 voxels of 0.8 mm); :func:`read_cases_csv` reads back the table it writes.

Importing this package imports no dataset module; each loads on first use.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CoronarySplit": "vesselfield.datasets.imagecas",
    "find_label_files": "vesselfield.datasets.imagecas",
    "prepare_imagecas": "vesselfield.datasets.imagecas",
    "read_cases_csv": "vesselfield.datasets.imagecas",
    "split_coronary_trees": "vesselfield.datasets.imagecas",
    "summarize_cases": "vesselfield.datasets.imagecas",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
