"""Preparing public datasets for the methods (see docs/data.md).

- ImageCAS (coronary CT angiography labels): :func:`prepare_imagecas` splits every label volume
  into its left and right coronary trees and resamples each onto the NeCA / SDF-CAR grid
  (128^3 voxels of 0.8 mm); :func:`read_cases_csv` reads back the table it writes.

Importing this package imports no dataset module; each loads on first use.
"""

from __future__ import annotations

from vesselfield.lazy import lazy_exports

_EXPORTS = {
    "CoronarySplit": "imagecas",
    "find_label_files": "imagecas",
    "prepare_imagecas": "imagecas",
    "read_cases_csv": "imagecas",
    "split_coronary_trees": "imagecas",
    "summarize_cases": "imagecas",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
