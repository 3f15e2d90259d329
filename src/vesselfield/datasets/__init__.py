"""Preparing public datasets for the methods (see docs/data.md).

- ImageCAS (coronary CT angiography labels): :func:`prepare_imagecas` splits every label volume
  into its left and right coronary trees and resamples each onto the NeCA / SDF-CAR grid
  (128^3 voxels of 0.8 mm); :func:`read_cases_csv` reads back the table it writes.
- MSD / nnU-Net v2 raw layouts (:mod:`.msd`): :func:`read_msd_dataset`, :func:`load_case`,
  :func:`sparsify_dataset` (sparse axial slices, dense SDF truth), :func:`export_nnunet`,
  :func:`write_msd_dataset`.
- CT datasets without downloads (:mod:`.synthetic_ct`): :func:`make_phantom_ct_dataset`,
  :func:`make_hepatic_ct_dataset`, :func:`make_vmtk_aorta_dataset`.
- (CT image, surface mesh) datasets for NUDF (:mod:`.surface_ct`): :func:`read_surface_dataset`,
  :func:`load_surface_case`, :func:`write_surface_dataset`; without downloads
  (:mod:`.synthetic_surfaces`): :func:`make_open_surface_dataset`, :func:`make_vmtk_open_aorta_dataset`;
  NUDF's shape-diameter training samples (:mod:`.udf_samples`): :func:`udf_training_samples`.

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
    "CaseVolumes": "msd",
    "LoadedCase": "msd",
    "MsdCase": "msd",
    "MsdDataset": "msd",
    "choose_label": "msd",
    "export_nnunet": "msd",
    "load_case": "msd",
    "load_dense_mask": "msd",
    "read_msd_dataset": "msd",
    "sparsify_dataset": "msd",
    "write_msd_dataset": "msd",
    "make_hepatic_ct_dataset": "synthetic_ct",
    "make_phantom_ct_dataset": "synthetic_ct",
    "make_vmtk_aorta_dataset": "synthetic_ct",
    "load_surface_case": "surface_ct",
    "read_surface_dataset": "surface_ct",
    "write_surface_dataset": "surface_ct",
    "make_open_surface_dataset": "synthetic_surfaces",
    "make_vmtk_open_aorta_dataset": "synthetic_surfaces",
    "shape_diameter": "udf_samples",
    "udf_training_samples": "udf_samples",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
