"""Synthetic vessels with exact ground truth: coronary and SWC trees, nested AAAs, CT-like images.

- signed distances: :func:`round_cone_sdf`, :func:`tree_sdf`, :func:`sdf_volume`,
  :func:`occupancy_volume` (:mod:`.sdf`, the formulas and where they are exact)
- trees: :func:`coronary_tree`, :func:`coronary_branch_names`, :class:`TreePhantom`,
  :func:`swc_phantom`, :func:`default_coronary_grid` (:mod:`.coronary`), :func:`branching_tree`
  (:mod:`.branching`)
- aneurysms: :class:`AAAPhantom` (:mod:`.aaa`)
- images: :func:`ct_like_image`, :func:`sparse_slices` (:mod:`.ct`)

Names load on first use, so importing this package does not import torch.
"""

from __future__ import annotations

from vesselfield.lazy import lazy_exports

_WHERE = {
    "RoundCones": "sdf",
    "round_cone_sdf": "sdf",
    "tree_sdf": "sdf",
    "sdf_volume": "sdf",
    "occupancy_volume": "sdf",
    "branching_tree": "branching",
    "coronary_tree": "coronary",
    "coronary_branch_names": "coronary",
    "default_coronary_grid": "coronary",
    "TreePhantom": "coronary",
    "swc_phantom": "coronary",
    "AAAPhantom": "aaa",
    "ct_like_image": "ct",
    "sparse_slices": "ct",
}

__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
