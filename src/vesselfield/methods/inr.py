"""Deprecated alias of :mod:`vesselfield.methods.implicit_vessel` (the module's name before 0.2).

``from vesselfield.methods.inr import fit_implicit_sdf, inr_config`` keeps working for one
release, with a :class:`DeprecationWarning`; import from :mod:`vesselfield.methods.implicit_vessel`.
"""

import warnings

from vesselfield.methods.implicit_vessel import *  # noqa: F401,F403
from vesselfield.methods.implicit_vessel import __all__  # noqa: F401

warnings.warn("vesselfield.methods.inr is now vesselfield.methods.implicit_vessel; the old name goes in the next "
              "release", DeprecationWarning, stacklevel=2)
