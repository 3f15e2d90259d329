"""Figures and self-contained HTML reports: one generic page and figure kit, plus one module per method.

- ``vesselfield.report.html``: :class:`~vesselfield.report.html.ReportPage`, the page every
  report writes (title, note, warnings, summary, metrics with units from ``METRIC_INFO``,
  configuration, mesh summary, embedded PNG figures; inline CSS, no external link, written
  atomically), and its pieces (tables, value formatting, the report folder).
- ``vesselfield.report.figures``: figures without pyplot, atomic PNGs, world-mm planes with the
  LPS display conventions, volume MIPs, a shaded mesh view, loss curves.
- ``vesselfield.report.sdf_car``: the X-ray reconstruction's figures (views, error overlay) and
  :func:`~vesselfield.report.sdf_car.write_xray_report`.
- ``vesselfield.report.implicit_vessel``: the implicit vessel model's figures (SDF slices, points,
  robustness box plots) and :func:`~vesselfield.report.implicit_vessel.write_inr_report`.

A new method adds ``report/<method>.py`` with its own figures and a ``write_*_report`` that fills
a ``ReportPage``. Matplotlib is imported only when a figure is drawn; this package imports
nothing itself.
"""
