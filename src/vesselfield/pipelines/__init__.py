"""The file-level jobs behind the command line: read inputs, run a method, write a run folder.

One module per job; each job validates every input before it writes anything, writes each file
atomically, and returns a :class:`~vesselfield.io.run_folder.RunSummary` (files written, metrics,
warnings), which the command line prints the same way for every method:

- :mod:`~vesselfield.pipelines.phantom`: ``vesselfield phantom coronary|swc|aaa``;
- :mod:`~vesselfield.pipelines.project`: ``vesselfield project``;
- :mod:`~vesselfield.pipelines.evaluate`: ``vesselfield evaluate``;
- :mod:`~vesselfield.pipelines.mesh`: ``vesselfield mesh``;
- :mod:`~vesselfield.pipelines.reconstruct_xray`: ``vesselfield reconstruct xray`` (SDF-CAR, NeCA);
- :mod:`~vesselfield.pipelines.demo`: ``vesselfield demo`` (a phantom, its views, the reconstruction
  pipeline);
- :mod:`~vesselfield.pipelines.fit`: ``vesselfield fit points|mesh|nested`` (implicit vessel models);
- :mod:`~vesselfield.pipelines.blend`: ``vesselfield blend``.

:mod:`~vesselfield.pipelines.common` holds what several jobs read the same way (a volume and its
grid). Imports run one way: cli -> pipelines -> methods -> shared parts.
"""
