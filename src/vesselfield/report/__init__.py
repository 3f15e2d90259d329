"""Figures and self-contained HTML reports.

``vesselfield.report.sdf_car`` draws the figures of an X-ray reconstruction and writes ``report.html``
(matplotlib, imported when a figure is drawn). This package imports nothing itself.
"""
