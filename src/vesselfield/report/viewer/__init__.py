"""Interactive, offline 3D views (NiiVue) for reports and ``vesselfield view``.

- :mod:`.scene`: :class:`ViewerScene`, what a view shows (surfaces, error layers, centrelines,
  C-arm views, volumes), built in LPS mm with display budgets (:class:`ViewerLimits`).
- :mod:`.mz3`: the MZ3 mesh format NiiVue reads.
- :mod:`.page`: the HTML: NiiVue inlined (``vendor/``), data as base64, folder mode above 15 MB.
- :mod:`.build`: scenes of each method's run (:func:`~.build.run_scene` and friends).
"""

from vesselfield.report.viewer.mz3 import read_mz3_bytes, write_mz3_bytes
from vesselfield.report.viewer.scene import MeshLayer, ViewerLimits, ViewerMesh, ViewerScene, ViewerVolume

__all__ = ["ViewerScene", "ViewerLimits", "ViewerMesh", "ViewerVolume", "MeshLayer", "write_mz3_bytes",
           "read_mz3_bytes"]
