"""The ``vesselfield`` command line: verbs over the pipelines, imported lazily.

- :mod:`vesselfield.cli.app`: the typer application, shared options, printing and :func:`main`;
- :mod:`vesselfield.cli.data`: phantom, geometry, project, evaluate, mesh, data;
- :mod:`vesselfield.cli.xray`: demo, reconstruct xray, benchmark xray;
- :mod:`vesselfield.cli.implicit`: fit, blend, study;
- :mod:`vesselfield.cli.ct`: train, predict, benchmark ct (VesselSDF and its baselines);
- :mod:`vesselfield.cli.analysis`: analyze (centrelines, radii, graph, stenosis);
- :mod:`vesselfield.cli.config`: config show / list.

Only typer is imported at start-up; ``vesselfield --help`` never loads torch.
"""

from vesselfield.cli import analysis, config, ct, data, implicit, view, xray  # noqa: F401  (registers the commands)
from vesselfield.cli.app import app, expand_multi_value_options, main

__all__ = ["app", "expand_multi_value_options", "main"]
