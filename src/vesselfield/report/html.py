"""One self-contained HTML page for every method's report: inline CSS, embedded PNGs, no link out.

A report is built top to bottom and written once::

    page = ReportPage("vesselfield reconstruction", note="What was fitted to what.", warnings=warnings)
    page.add_summary([("grid", "128 × 128 × 128 voxels"), ...])
    page.add_metrics(metrics)              # names of METRIC_INFO get their unit, direction, description
    page.add_config(config)                # a config dataclass or a dict
    page.add_figure(png_path, "loss curves", "Loss terms against the iteration.")
    page.write(out / "report.html")        # atomically

Every text given is HTML-escaped. Figures are embedded as base64 ``data:`` URIs of the PNGs (which
also stay next to the page as files): the bytes that :func:`~vesselfield.report.figures.save_png`
has just written, or a PNG file's read from disk, so the page is one file, viewable offline, that
fetches nothing: no ``<link>``, no ``<script>``, no URL. Numbers are shown by :func:`format_metric` in
metrics tables and :func:`format_setting` elsewhere; None and NaN show as "n/a".
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import numbers
from pathlib import Path
from typing import Any, Mapping, Sequence

from vesselfield.errors import VesselfieldError
from vesselfield.io.atomic import write_text_atomic

__all__ = [
    "CSS",
    "EXTRA_METRIC_INFO",
    "REPORT_NAME",
    "ReportPage",
    "embedded_figure",
    "format_metric",
    "format_setting",
    "html_table",
    "metric_rows",
    "optional_mapping",
    "report_folder",
]

REPORT_NAME = "report.html"
"""File name of the page in a run folder."""

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1250px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; margin-top: 0.3em; }
.note { color: #666; font-size: 0.9em; }
.warning { background: #fff4e5; border-left: 4px solid #e08a00; padding: 0.4em 0.8em; }
"""
"""The page's style sheet, inlined in ``<style>``."""

EXTRA_METRIC_INFO: dict[str, tuple[str, str]] = {
    "seconds": ("wall time of the optimisation", "s"),
    "iterations": ("iterations completed", ""),
}
"""``name -> (description, unit)`` of the run facts that metrics dicts carry besides
:data:`~vesselfield.metrics.evaluate.METRIC_INFO` (no "better" direction)."""


# ------------------------------------------------------------------------------------ values
def format_metric(value: Any) -> str:
    """A metrics-table number: 4 decimals, scientific below 1e-3, integers as they are; None/NaN -> "n/a"."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.3e}"
        return f"{v:.4f}"
    return str(value)


def format_setting(value: Any) -> str:
    """A free-form value (summary, configuration): floats to 6 significant digits; None/NaN -> "n/a"."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        v = float(value)
        return "n/a" if math.isnan(v) else f"{v:.6g}"
    return "n/a" if value is None else str(value)


def optional_mapping(value, what: str, entries: str) -> dict | None:
    """``dict(value)``, or None for None; anything but a mapping is a VesselfieldError naming ``what``.

    ``entries`` says what the mapping holds, for the message (e.g. ``"name -> value"``).
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise VesselfieldError(f"{what} must be a dict of {entries}, got {type(value).__name__}")
    return dict(value)


def metric_rows(metrics: Mapping[str, Any], extra: Mapping[str, tuple[str, str]] | None = None) -> list[tuple]:
    """``(name, value, unit, better, description)`` per metric, in the dict's order.

    Names of :data:`~vesselfield.metrics.evaluate.METRIC_INFO` get its description, unit (blank
    for dimensionless) and "higher"/"lower"; names of ``extra`` (default :data:`EXTRA_METRIC_INFO`)
    their ``(description, unit)``; other names blanks. Values by :func:`format_metric`.
    """
    from vesselfield.metrics.evaluate import METRIC_INFO

    extra = EXTRA_METRIC_INFO if extra is None else extra
    rows = []
    for name, value in metrics.items():
        if name in METRIC_INFO:
            description, unit, higher = METRIC_INFO[name]
            better = "higher" if higher else "lower"
        else:
            (description, unit), better = extra.get(name, ("", "")), ""
        rows.append((name, format_metric(value), "" if unit == "1" else unit, better, description))
    return rows


# ------------------------------------------------------------------------------------ pieces
def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; every cell is ``str(cell)`` escaped; columns in ``numeric`` are right-aligned."""
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for j, cell in enumerate(row):
            cls = ' class="num"' if j in numeric else ""
            cells.append(f"<td{cls}>{html.escape(str(cell))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def embedded_figure(png, alt: str, caption: str) -> str:
    """A ``<figure>`` holding the PNG ``png`` as a base64 data URI, with its escaped caption.

    ``png``: what :func:`~vesselfield.report.figures.save_png` returned (its bytes are embedded;
    the file is not read back), or the path of a PNG file written elsewhere (read here).
    """
    data = getattr(png, "data", None)
    if data is None:
        data = Path(png).read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise VesselfieldError(f"{png} is not a PNG image")
    encoded = base64.b64encode(data).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def report_folder(out_dir) -> Path:
    """Create the folder a report is written into; an existing file of that name is a VesselfieldError."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise VesselfieldError(f"report folder {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


# ------------------------------------------------------------------------------------ page
class ReportPage:
    """A self-contained report page, built in reading order by the ``add_*`` methods.

    Args:
        title: the page's ``<title>`` and heading.
        note: optional one-paragraph description under the heading (grey).
        warnings: one-line problems the reader must see, shown under the heading (e.g.
            :attr:`~vesselfield.io.run_folder.RunSummary.warnings`).
    """

    def __init__(self, title: str, *, note: str | None = None, warnings: Sequence[str] = ()):
        if isinstance(warnings, str):
            raise VesselfieldError("warnings must be a list of one-line messages, got one string")
        self.title = str(title)
        self._parts: list[str] = []
        self._viewers = None  # ViewerParts once a 3D view is added
        self._max_page_mb: float | None = None
        self.data_path: Path | None = None  # the 3D views' data.js after a write in folder mode
        if note:
            self.add_paragraph(note, note=True)
        for warning in warnings:
            self.add_warning(warning)

    def add_warning(self, text: str) -> ReportPage:
        """A one-line problem, shown like the page's warnings."""
        self._parts.append(f'<p class="warning">Warning: {html.escape(str(text))}</p>')
        return self

    def add_heading(self, text: str) -> ReportPage:
        """A section heading (``<h2>``)."""
        self._parts.append(f"<h2>{html.escape(str(text))}</h2>")
        return self

    def add_paragraph(self, text: str, *, note: bool = False) -> ReportPage:
        """A paragraph; ``note=True`` shows it small and grey."""
        cls = ' class="note"' if note else ""
        self._parts.append(f"<p{cls}>{html.escape(str(text))}</p>")
        return self

    def add_table(self, heading: str | None, header: Sequence[str], rows: Sequence[Sequence[Any]],
                  numeric: Sequence[int] = ()) -> ReportPage:
        """A table (see :func:`html_table`) under an optional heading."""
        if heading is not None:
            self.add_heading(heading)
        self._parts.append(html_table(header, rows, numeric))
        return self

    def add_summary(self, rows: Sequence[tuple[str, Any]], heading: str = "Summary") -> ReportPage:
        """An ``item | value`` table; values that are not already text go through :func:`format_setting`."""
        shown = [(label, value if isinstance(value, str) else format_setting(value)) for label, value in rows]
        return self.add_table(heading, ("item", "value"), shown)

    def add_metrics(self, metrics: Mapping[str, Any] | None, *, heading: str = "Metrics",
                    empty: str = "No metrics were given.",
                    extra: Mapping[str, tuple[str, str]] | None = None) -> ReportPage:
        """The metrics table (:func:`metric_rows`), or the note ``empty`` when there are none."""
        self.add_heading(heading)
        if metrics:
            self._parts.append(html_table(("metric", "value", "unit", "better", "description"),
                                          metric_rows(metrics, extra), numeric=(1,)))
        else:
            self.add_paragraph(empty, note=True)
        return self

    def add_config(self, config, heading: str = "Configuration") -> ReportPage:
        """A ``setting | value`` table of a config dataclass (its fields in order) or a dict."""
        if dataclasses.is_dataclass(config) and not isinstance(config, type):
            items = dataclasses.asdict(config).items()
        elif isinstance(config, Mapping):
            items = config.items()
        else:
            raise VesselfieldError(f"config must be a dataclass or a dict, got {type(config).__name__}")
        return self.add_table(heading, ("setting", "value"), [(k, format_setting(v)) for k, v in items])

    def add_mesh_summary(self, mesh, heading: str = "Mesh") -> ReportPage:
        """Vertices, faces, closure, components, volume and area of a surface mesh (world mm).

        From :func:`~vesselfield.meshing.marching_cubes.mesh_summary`; the volume is n/a for an
        open mesh.
        """
        from vesselfield.meshing.marching_cubes import mesh_summary

        s = mesh_summary(mesh)
        return self.add_table(heading, ("item", "value"), [
            ("vertices", s["vertices"]), ("faces", s["faces"]),
            ("watertight", "yes" if s["watertight"] else "no"),
            ("connected components", s["components"]),
            ("volume (mm³)", format_setting(s["volume_mm3"])),
            ("area (mm²)", format_setting(s["area_mm2"])),
        ], numeric=(1,))

    def add_figure(self, png, alt: str, caption: str, *, heading: str | None = None) -> ReportPage:
        """A PNG figure (see :func:`embedded_figure`) under a heading (default: ``alt`` capitalised)."""
        self.add_heading(heading if heading is not None else alt[:1].upper() + alt[1:])
        self._parts.append(embedded_figure(png, alt, caption))
        return self

    def add_viewer(self, scene, *, heading: str = "3D view", caption: str = "") -> ReportPage:
        """An interactive 3D view of ``scene`` (a :class:`~vesselfield.report.viewer.ViewerScene`):
        NiiVue inlined, the data as base64, no network (:mod:`vesselfield.report.viewer.page`).
        An empty scene adds nothing."""
        from vesselfield.report.viewer.page import ViewerParts

        if scene is None or scene.is_empty():
            return self
        if self._viewers is None:
            self._viewers = ViewerParts()
            self._max_page_mb = scene.limits.max_page_mb
        viewer_id = f"vf-view-{len(self._viewers.data) + 1}"
        self.add_heading(heading)
        self._parts.append(self._viewers.add(viewer_id, scene, caption=caption))
        return self

    def to_html(self, data_src: str | None = None) -> str:
        """The whole page as text; with 3D views, their data inline, or (``data_src``) loaded from
        that relative ``data.js`` path."""
        title = html.escape(self.title)
        style = CSS
        tail = ""
        if self._viewers:
            from vesselfield.report.viewer.page import viewer_css

            style += viewer_css()
            tail = self._viewers.tail(data_src)
        return "\n".join([
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{title}</title>",
            f"<style>{style}</style></head><body>",
            f"<h1>{title}</h1>",
            *self._parts,
            '<p class="note">Written by vesselfield.</p>',
            tail + "</body></html>",
        ]) + "\n"

    def write(self, path) -> Path:
        """Write :meth:`to_html` to ``path`` (UTF-8, atomically); returns ``Path(path)``.

        A page with 3D views larger than their ``max_page_mb`` keeps the views' data in
        ``<stem>_files/data.js`` beside it (folder mode, written first); otherwise the stale
        ``data.js`` of an earlier write is removed (and its folder, when that leaves it empty).
        """
        path = Path(path)
        text = self.to_html()
        if self._viewers:
            from vesselfield.io.atomic import write_bytes_atomic
            from vesselfield.report.viewer.page import data_folder

            folder = data_folder(path)
            if len(text.encode("utf-8")) > self._max_page_mb * 1e6:
                folder.mkdir(parents=True, exist_ok=True)
                write_bytes_atomic(folder / "data.js", self._viewers.data_text().encode("utf-8"))
                text = self.to_html(data_src=f"{folder.name}/data.js")
                self.data_path = folder / "data.js"
            elif (folder / "data.js").is_file():
                (folder / "data.js").unlink()
                if not any(folder.iterdir()):
                    folder.rmdir()
        write_text_atomic(path, text)
        return path
