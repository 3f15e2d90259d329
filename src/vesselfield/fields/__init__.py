"""Fields over world space (imports torch): neural (encoding + MLP) and explicit voxel grids.

Both take (..., 3) world points in LPS mm and return ``{"occupancy": (...,), "sdf": (...,) or None}``.
"""

from vesselfield.fields.band import BandGridField, BandNeuralField
from vesselfield.fields.grid_field import GridField
from vesselfield.fields.mlp import DEFAULT_CHUNK_POINTS, NeuralField, ResidualMLP, SkipMLP, field_outputs

__all__ = ["BandGridField", "BandNeuralField", "DEFAULT_CHUNK_POINTS", "GridField", "NeuralField", "ResidualMLP", "SkipMLP", "field_outputs"]
