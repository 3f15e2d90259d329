"""vesselfield: blood vessels as neural distance fields.

The top-level package imports nothing heavy (no torch), so ``vesselfield --help`` stays instant.
Import the sub-modules you need, e.g. ``from vesselfield.grid import VolumeGrid``.
"""

__version__ = "0.1.0"

from vesselfield.errors import VesselfieldError  # noqa: E402  (light, no third-party imports)
from vesselfield.grid import VolumeGrid  # noqa: E402

__all__ = ["VesselfieldError", "VolumeGrid", "__version__"]
