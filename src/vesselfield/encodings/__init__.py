"""Input encodings for coordinate networks (imports torch).

Coordinates are normalised to the unit cube ``[0, 1]^3`` of a :class:`~vesselfield.grid.VolumeGrid`'s
box by :func:`normalize_points` before they are encoded.

- :class:`HashGridEncoding`: Instant-NGP multiresolution hash grid (pure torch; tiny-cuda-nn when present).
- :class:`FourierFeatures`: NeRF positional encoding.
"""

from vesselfield.encodings.fourier import FourierFeatures
from vesselfield.encodings.hash_grid import HASH_PRIMES, HashGridEncoding, level_resolutions, normalize_points

__all__ = ["FourierFeatures", "HASH_PRIMES", "HashGridEncoding", "level_resolutions", "normalize_points"]
