"""Deprecated alias of :mod:`vesselfield.methods.sdf_car` (the module's name before 0.2).

``from vesselfield.methods.xray import reconstruct_xray, xray_config`` keeps working for one
release, with a :class:`DeprecationWarning`; import from :mod:`vesselfield.methods.sdf_car`.
"""

import warnings

from vesselfield.methods.sdf_car import *  # noqa: F401,F403
from vesselfield.methods.sdf_car import __all__  # noqa: F401

warnings.warn("vesselfield.methods.xray is now vesselfield.methods.sdf_car; the old name goes in the next release",
              DeprecationWarning, stacklevel=2)
