"""The generic report page (vesselfield.report.html): escaping, embedded figures, no link out, values, tables."""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass, field

import numpy as np
import pytest
import trimesh

from vesselfield.errors import VesselfieldError
from vesselfield.metrics.evaluate import METRIC_INFO
from vesselfield.report.figures import new_figure, save_png
from vesselfield.report.html import (
    ReportPage,
    embedded_figure,
    format_metric,
    format_setting,
    metric_rows,
    optional_mapping,
    report_folder,
)

DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def small_png(path, value: float):
    """A 2 x 1.5 inch PNG filled with one grey level (``value`` in [0, 1])."""
    fig = new_figure(2.0, 1.5)
    fig.add_subplot().imshow(np.full((4, 4), value), cmap="gray", vmin=0.0, vmax=1.0)
    return save_png(fig, path)


def without_images(text: str) -> str:
    # Base64 data can spell any four letters ("http" included) by chance: look only at the rest.
    return DATA_URI.sub("data:image/png;base64,", text)


# ------------------------------------------------------------------------- values
def test_metric_values_are_formatted_like_the_metrics_table():
    assert format_metric(0.912345) == "0.9123"
    assert format_metric(2.5e-4) == "2.500e-04"  # below 1e-3: scientific, not "0.0003"
    assert format_metric(0.0) == "0.0000"
    assert format_metric(300) == "300" and format_metric(np.int64(7)) == "7"
    assert format_metric(np.float32(0.5)) == "0.5000"
    assert format_metric(math.inf) == "inf" and format_metric(-math.inf) == "-inf"
    assert format_metric(math.nan) == "n/a" and format_metric(None) == "n/a"
    assert format_metric(True) == "True" and format_metric("cpu") == "cpu"


def test_settings_keep_six_significant_digits():
    assert format_setting(1 / 3) == "0.333333"
    assert format_setting(1e-7) == "1e-07"
    assert format_setting(12345678.0) == "1.23457e+07"
    assert format_setting(3) == "3" and format_setting(False) == "False"
    assert format_setting(math.nan) == "n/a" and format_setting(None) == "n/a"
    assert format_setting((1, 2)) == "(1, 2)"


def test_metric_rows_carry_unit_direction_and_description():
    metrics = {"dice": 0.912345, "hausdorff_mm": math.nan, "assd_mm": None, "re_mse": 2.5e-4,
               "seconds": 12.0, "iterations": 300, "my_score": 0.5}
    rows = metric_rows(metrics)
    assert rows == [
        ("dice", "0.9123", "", "higher", METRIC_INFO["dice"][0]),  # dimensionless: blank unit
        ("hausdorff_mm", "n/a", "mm", "lower", METRIC_INFO["hausdorff_mm"][0]),
        ("assd_mm", "n/a", "mm", "lower", METRIC_INFO["assd_mm"][0]),
        ("re_mse", "2.500e-04", "", "lower", METRIC_INFO["re_mse"][0]),
        ("seconds", "12.0000", "s", "", "wall time of the optimisation"),
        ("iterations", "300", "", "", "iterations completed"),
        ("my_score", "0.5000", "", "", ""),
    ]
    assert metric_rows({"epochs": 4}, extra={"epochs": ("epochs trained", "")}) == [
        ("epochs", "4", "", "", "epochs trained")]


def test_optional_mapping_accepts_dicts_and_none_only():
    assert optional_mapping(None, "metrics", "name -> value") is None
    assert optional_mapping({"a": 1}, "metrics", "name -> value") == {"a": 1}
    with pytest.raises(VesselfieldError, match=r"^metrics must be a dict of name -> value, got list$"):
        optional_mapping([0.9], "metrics", "name -> value")


# ------------------------------------------------------------------------- page
def test_page_escapes_every_text_it_is_given(tmp_path):
    nasty = 'a <b>"quoted"</b> & <script>alert(1)</script>'
    escaped = "a &lt;b&gt;&quot;quoted&quot;&lt;/b&gt; &amp; &lt;script&gt;alert(1)&lt;/script&gt;"
    png = small_png(tmp_path / "f.png", 0.5)
    page = ReportPage(nasty, note=nasty, warnings=[nasty])
    page.add_summary([(nasty, nasty)])
    page.add_table(nasty, (nasty,), [(nasty,)])
    page.add_paragraph(nasty)
    page.add_figure(png, nasty, nasty, heading=nasty)
    text = page.to_html()
    assert "<script" not in text and "<b>" not in text and '"quoted"' not in text
    assert f"<title>{escaped}</title>" in text and f"<h1>{escaped}</h1>" in text
    assert f'<p class="note">{escaped}</p>' in text
    assert f'<p class="warning">Warning: {escaped}</p>' in text
    assert f"<td>{escaped}</td><td>{escaped}</td>" in text  # summary row
    assert f"<th>{escaped}</th>" in text and f"<h2>{escaped}</h2>" in text and f"<p>{escaped}</p>" in text
    assert f'alt="{escaped}"' in text and f"<figcaption>{escaped}</figcaption>" in text
    # Title, h1, note, warning, 2 summary cells, heading, th, td, paragraph, figure heading, alt, caption.
    assert text.count(escaped) == 13


def test_page_embeds_figures_in_order_and_links_nowhere(tmp_path):
    first, second = small_png(tmp_path / "a.png", 0.2), small_png(tmp_path / "b.png", 0.9)
    assert first.read_bytes() != second.read_bytes()
    page = ReportPage("figures")
    page.add_figure(first, "loss curves", "first")
    page.add_figure(second, "surface mesh", "second", heading="Mesh view")
    path = page.write(tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    embedded = DATA_URI.findall(text)
    assert [base64.b64decode(e) for e in embedded] == [first.read_bytes(), second.read_bytes()]
    # The default heading is the alt text capitalised.
    assert "<h2>Loss curves</h2>" in text and "<h2>Mesh view</h2>" in text
    assert text.index("<h2>Loss curves</h2>") < text.index(embedded[0]) < text.index("<h2>Mesh view</h2>")
    rest = without_images(text)
    for outside in ("http", "www.", "<link", "<script", "href", "url(", "@import", "<iframe"):
        assert outside not in rest.lower()
    assert re.findall(r'src="([^"]*)"', rest) == ["data:image/png;base64,"] * 2
    assert text.startswith("<!DOCTYPE html>\n") and text.endswith("</body></html>\n")
    assert "<style>" in text and 'charset="utf-8"' in text
    # Written atomically: the page and the figures, no temporary file left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "report.html"]


def test_page_shows_warnings_first_and_nan_as_na():
    page = ReportPage("run", note="what was fitted", warnings=["the mesh is not CFD-ready", "empty view 2"])
    page.add_summary([("voxels", 1200), ("radius (mm)", math.nan), ("scale", 1 / 3), ("device", None)])
    page.add_metrics({"dice": math.nan, "chamfer_mm": 1.23456})
    text = page.to_html()
    order = [text.index(s) for s in ("<h1>run</h1>", "what was fitted", "Warning: the mesh is not CFD-ready",
                                     "Warning: empty view 2", "<h2>Summary</h2>", "<h2>Metrics</h2>")]
    assert order == sorted(order)
    assert text.count('class="warning"') == 2
    assert "<td>voxels</td><td>1200</td>" in text and "<td>radius (mm)</td><td>n/a</td>" in text
    assert "<td>scale</td><td>0.333333</td>" in text and "<td>device</td><td>n/a</td>" in text
    assert '<td>dice</td><td class="num">n/a</td><td></td><td>higher</td>' in text
    assert '<td>chamfer_mm</td><td class="num">1.2346</td><td>mm</td><td>lower</td>' in text
    assert not re.findall(r"<td[^>]*>[^<]*nan[^<]*</td>", text.lower())  # no raw NaN in any cell
    with pytest.raises(VesselfieldError, match="warnings must be a list"):
        ReportPage("run", warnings="one string")


def test_page_without_metrics_says_so():
    text = ReportPage("run").add_metrics(None, empty="No metrics (no ground truth).").to_html()
    assert '<h2>Metrics</h2>\n<p class="note">No metrics (no ground truth).</p>' in text
    assert "<table>" not in text and 'class="warning"' not in text
    assert "No metrics were given." in ReportPage("run").add_metrics({}).to_html()


@dataclass
class TinyConfig:
    learning_rate: float = 1e-3
    steps: int = 10
    name: str = "a<b"
    sizes: list = field(default_factory=lambda: [64, 64])


def test_config_table_lists_fields_in_order():
    text = ReportPage("run").add_config(TinyConfig()).to_html()
    flat = text.split("<h2>Configuration</h2>\n")[1]
    assert re.findall(r"<tr><td>(\w+)</td>", flat) == ["learning_rate", "steps", "name", "sizes"]
    assert "<td>learning_rate</td><td>0.001</td>" in text and "<td>name</td><td>a&lt;b</td>" in text
    assert "<td>sizes</td><td>[64, 64]</td>" in text
    assert "<td>steps</td><td>3</td>" in ReportPage("run").add_config({"steps": 3}, heading="Settings").to_html()
    for bad in (TinyConfig, 3):
        with pytest.raises(VesselfieldError, match="config must be a dataclass or a dict"):
            ReportPage("run").add_config(bad)


def test_mesh_summary_counts_and_volume():
    closed = trimesh.creation.icosphere(subdivisions=1, radius=2.0)  # 42 vertices, 80 faces
    text = ReportPage("run").add_mesh_summary(closed).to_html()
    assert '<td>vertices</td><td class="num">42</td>' in text and '<td>faces</td><td class="num">80</td>' in text
    assert '<td>watertight</td><td class="num">yes</td>' in text
    assert '<td>connected components</td><td class="num">1</td>' in text
    assert f'<td>volume (mm³)</td><td class="num">{closed.volume:.6g}</td>' in text
    assert f'<td>area (mm²)</td><td class="num">{closed.area:.6g}</td>' in text
    opened = trimesh.Trimesh(closed.vertices, closed.faces[1:], process=False)
    text = ReportPage("run").add_mesh_summary(opened).to_html()
    # An open mesh has no enclosed volume.
    assert '<td>watertight</td><td class="num">no</td>' in text and '<td>volume (mm³)</td><td class="num">n/a</td>' in text


# ------------------------------------------------------------------------- files
def test_embedding_needs_a_png(tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_text("<svg/>")
    with pytest.raises(VesselfieldError, match="is not a PNG image"):
        embedded_figure(fake, "alt", "caption")
    with pytest.raises(FileNotFoundError):
        embedded_figure(tmp_path / "missing.png", "alt", "caption")


def test_a_saved_figure_is_embedded_from_its_bytes_not_read_back(tmp_path):
    saved = small_png(tmp_path / "grey.png", 0.25)
    # save_png renders once: the bytes it carries are the file's, and it is still the Path given.
    assert saved == tmp_path / "grey.png" and saved.data == (tmp_path / "grey.png").read_bytes()
    # A page embeds those bytes: with the file replaced by another PNG, or gone, it shows the saved one.
    other = small_png(tmp_path / "other.png", 0.75).data
    assert other != saved.data
    (tmp_path / "grey.png").write_bytes(other)
    embedded = DATA_URI.search(embedded_figure(saved, "alt", "caption")).group(1)
    assert base64.b64decode(embedded) == saved.data
    (tmp_path / "grey.png").unlink()
    assert base64.b64decode(DATA_URI.search(embedded_figure(saved, "a", "c")).group(1)) == saved.data
    # A plain path (a PNG from elsewhere) is read from disk; a derived path carries no bytes.
    from_disk = DATA_URI.search(embedded_figure(tmp_path / "other.png", "alt", "caption")).group(1)
    assert base64.b64decode(from_disk) == other and (saved.parent / "other.png").data is None


def test_report_folder_is_created_and_a_file_is_refused(tmp_path):
    assert report_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(VesselfieldError, match="exists and is not a folder"):
        report_folder(tmp_path / "file")
