"""The files and the report of a vessel analysis (vesselfield.analysis.export, vesselfield.report.analysis).

A hand-built Y tree with known numbers: a root segment of 5 samples along +x (0 to 2 mm, radius
1.5 mm) and two children of 4 samples, 0.5 mm apart, along the unit directions (0.6, 0.8, 0) and
(0.6, 0, 0.8) (lengths 1.5 mm). Child 1 has radius 1.2 mm with one narrowed sample (0.6 mm): the
lesion, MLD 1.2 mm against a reference of 2.4 mm (50 % DS, 75 % AS). Known answers:

- angle between the children acos(0.6 * 0.6) = 68.8999 deg, angle of each to the parent acos(0.6)
  = 53.1301 deg;
- child mean radii outside the bifurcation zone: (1.2 + 0.6 + 1.2) / 3 = 1.0 and 1.0 mm, parent
  1.5 mm, so Murray's exponent solves 1.5^x = 2: x = ln 2 / ln 1.5 = 1.70951.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from vesselfield.analysis.export import ANALYSIS_FILES, read_csv_table, write_analysis_files
from vesselfield.analysis.result import (
    AnalyzedTree,
    Bifurcation,
    DiameterProfile,
    GraphNode,
    Lesion,
    Segment,
    cad_rads_grade,
)
from vesselfield.errors import VesselfieldError
from vesselfield.io.swc import load_swc
from vesselfield.io.vtp import read_vtp
from vesselfield.report.analysis import write_analysis_report

# The CSV files hold 6 significant digits (f"{v:.6g}"): rounding there is at most half a unit of
# the 6th digit, a relative error <= 5e-6 (the 1e-6 one might expect is too tight for 6 digits).
CSV_REL = 5e-6

MURRAY = math.log(2.0) / math.log(1.5)
ANGLE_CHILDREN_DEG = math.degrees(math.acos(0.36))
ANGLE_TO_PARENT_DEG = math.degrees(math.acos(0.6))


def _segment(segment_id, parent_id, start, end, points, radii, in_bif, curvature=0.0):
    points = np.asarray(points, dtype=np.float64)
    r = np.asarray(radii, dtype=np.float64)
    in_bif = np.asarray(in_bif, dtype=bool)
    steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    kept = r[~in_bif]
    return Segment(
        segment_id=segment_id, parent_id=parent_id, start_node=start, end_node=end, component=0,
        points_mm=points, radius_area_mm=r, radius_inscribed_mm=0.95 * r, diameter_min_mm=1.8 * r,
        diameter_max_mm=2.2 * r, curvature_per_mm=np.full(len(r), curvature), in_bifurcation=in_bif,
        valid=np.ones(len(r), bool), length_mm=float(steps.sum()),
        chord_mm=float(np.linalg.norm(points[-1] - points[0])), mean_radius_mm=float(kept.mean()),
        min_radius_mm=float(kept.min()), mean_curvature_per_mm=curvature,
    )


def y_tree(*, lesion: bool = True) -> AnalyzedTree:
    """The Y of the module docstring (``lesion=False``: no lesion, a NaN Murray exponent, a loop)."""
    fork = np.array([2.0, 0.0, 0.0])
    root_pts = np.array([[0.5 * i, 0.0, 0.0] for i in range(5)])
    d1, d2 = np.array([0.6, 0.8, 0.0]), np.array([0.6, 0.0, 0.8])
    c1_pts = fork + 0.5 * np.arange(4)[:, None] * d1
    c2_pts = fork + 0.5 * np.arange(4)[:, None] * d2
    c1_r = [1.2, 1.2, 0.6, 1.2]
    segments = [
        _segment(0, -1, 0, 1, root_pts, [1.5] * 5, [False] * 4 + [True]),
        _segment(1, 0, 1, 2, c1_pts, c1_r, [True, False, False, False], curvature=0.0),
        _segment(2, 0, 1, 3, c2_pts, [1.0] * 4, [True, False, False, False], curvature=0.0125),
    ]
    # SWC: one node per sample, the children's first sample is the fork node (index 4).
    points = np.concatenate([root_pts, c1_pts[1:], c2_pts[1:]])
    radius = np.r_[[1.5] * 5, c1_r[1:], [1.0] * 3]
    parent = np.array([-1, 0, 1, 2, 3, 4, 5, 6, 4, 8, 9])
    labels = np.array([1] * 5 + [2] * 3 + [3] * 3)
    nodes = [
        GraphNode(0, "root", root_pts[0], 1.4, 1, 0),
        GraphNode(1, "bifurcation", fork, 1.6, 3, 0),
        GraphNode(2, "endpoint", c1_pts[-1], 1.1, 1, 0),
        GraphNode(3, "endpoint", c2_pts[-1], 0.9, 1, 0),
    ]
    bif = Bifurcation(node_id=1, parent_segment=0, child_segments=[1, 2], position_mm=fork, parent_radius_mm=1.5,
                      child_radii_mm=[1.0, 1.0], angle_between_children_deg=ANGLE_CHILDREN_DEG,
                      angles_to_parent_deg=[ANGLE_TO_PARENT_DEG, ANGLE_TO_PARENT_DEG],
                      murray_exponent=MURRAY if lesion else float("nan"))
    s_path = np.r_[0.5 * np.arange(5), 2.0 + 0.5 * np.arange(1, 4)]
    paths = [
        DiameterProfile([0, 1], s_path, 2 * np.r_[[1.5] * 5, c1_r[1:]], np.r_[[3.0] * 5, [2.4] * 3],
                        np.array([False] * 4 + [True] + [False] * 3)),
        DiameterProfile([0, 2], s_path, 2 * np.r_[[1.5] * 5, [1.0] * 3], np.r_[[3.0] * 5, [2.0] * 3],
                        np.array([False] * 4 + [True] + [False] * 3)),
    ]
    lesions = []
    if lesion:
        lesions.append(Lesion(path=0, segment_id=1, position_mm=3.0, point_mm=c1_pts[2], mld_mm=1.2,
                              reference_diameter_mm=2.4, reference_diameter_mean_local_mm=2.4,
                              percent_diameter_stenosis=50.0, percent_diameter_stenosis_mean_local=50.0,
                              percent_area_stenosis=75.0, lesion_length_mm=1.0, grade=cad_rads_grade(50.0)))
    return AnalyzedTree(
        points_mm=points, radius_mm=radius, parent=parent, labels=labels, segments=segments, nodes=nodes,
        bifurcations=[bif], lesions=lesions, paths=paths, loops=[] if lesion else [[1, 2]], input_kind="sdf",
        spacing_mm=0.25, warnings=[] if lesion else ["a loop of segments 1, 2 was cut in the SWC"],
        details={"seconds": 0.5},
    )


def _float(text: str) -> float:
    return float(text) if text else math.nan


# ------------------------------------------------------------------------------------ files
def test_write_analysis_files_names_and_order(tmp_path):
    written = write_analysis_files(y_tree(), tmp_path / "out")
    assert list(written) == list(ANALYSIS_FILES)
    assert [p.name for p in written.values()] == ["tree.swc", "centerlines.vtp", "graph.json", "graph.graphml",
                                                  "segments.csv", "bifurcations.csv", "stenoses.csv"]
    assert all(p.is_file() and p.parent == tmp_path / "out" for p in written.values())
    # Atomic writes leave no temporary file behind.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(ANALYSIS_FILES.values())


def test_swc_reads_back_identically(tmp_path):
    tree = y_tree(lesion=False)
    path = write_analysis_files(tree, tmp_path)["swc"]
    back = load_swc(path)
    # Shortest round-trip decimals: exact.
    np.testing.assert_array_equal(back.points_mm, tree.points_mm)
    np.testing.assert_array_equal(back.radius_mm, tree.radius_mm)
    np.testing.assert_array_equal(back.parent, tree.parent)
    np.testing.assert_array_equal(back.labels, tree.labels)
    comments = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert comments[0] == "# SWC written by vesselfield: id type x y z radius parent (mm, LPS)"
    assert "area-equivalent" in comments[1] and "own tree" in comments[1]
    assert len(comments) == 3 and comments[2].startswith("# loop 0: segments 1, 2")


def test_vtp_reads_back(tmp_path):
    tree = y_tree()
    pd = read_vtp(write_analysis_files(tree, tmp_path)["centerlines"])
    assert len(pd.lines) == 3 and len(pd.points) == 5 + 4 + 4
    np.testing.assert_array_equal(pd.points, np.concatenate([s.points_mm for s in tree.segments]))
    for k, seg in enumerate(tree.segments):
        np.testing.assert_array_equal(pd.points[pd.lines[k]], seg.points_mm)
    for name in ("radius_area_mm", "radius_inscribed_mm", "diameter_min_mm", "diameter_max_mm", "curvature_per_mm"):
        np.testing.assert_array_equal(pd.point_data[name], np.concatenate([getattr(s, name) for s in tree.segments]))
        assert pd.point_data[name].dtype == np.float64
    np.testing.assert_array_equal(pd.point_data["segment_id"], [0] * 5 + [1] * 4 + [2] * 4)
    assert pd.point_data["segment_id"].dtype.kind == "i"
    np.testing.assert_array_equal(pd.point_data["in_bifurcation"], [0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0])
    assert pd.point_data["in_bifurcation"].dtype == np.uint8
    np.testing.assert_array_equal(pd.cell_data["segment_id"], [0, 1, 2])


def test_graph_json_numbers(tmp_path):
    tree = y_tree()
    path = write_analysis_files(tree, tmp_path)["graph_json"]
    text = path.read_text()
    data = json.loads(text)
    assert "NaN" not in text
    assert (data["units"], data["frame"], data["input_kind"], data["spacing_mm"]) == ("mm", "LPS", "sdf", 0.25)
    assert [n["kind"] for n in data["nodes"]] == ["root", "bifurcation", "endpoint", "endpoint"]
    assert data["nodes"][1] == {"id": 1, "kind": "bifurcation", "x_mm": 2.0, "y_mm": 0.0, "z_mm": 0.0,
                                "radius_mm": 1.6, "degree": 3, "component": 0}
    segs = data["segments"]
    assert [s["parent_id"] for s in segs] == [-1, 0, 0]
    assert [(s["start_node"], s["end_node"]) for s in segs] == [(0, 1), (1, 2), (1, 3)]
    # JSON floats are repr: the very numbers of the tree (1.5 mm children: 3 steps of 0.5 mm along
    # a unit vector, 1e-12 for the rounding of those sums).
    assert segs[0]["length_mm"] == 2.0 and segs[0]["chord_mm"] == 2.0 and segs[0]["tortuosity"] == 1.0
    for s, seg in zip(segs, tree.segments):
        assert s["length_mm"] == seg.length_mm and s["mean_radius_mm"] == seg.mean_radius_mm
        assert s["min_radius_mm"] == seg.min_radius_mm and s["tortuosity_vmtk"] == seg.tortuosity_vmtk
    assert segs[1]["length_mm"] == pytest.approx(1.5, abs=1e-12)
    assert segs[1]["mean_radius_mm"] == pytest.approx(1.0, abs=1e-12) and segs[1]["min_radius_mm"] == 0.6
    assert segs[2]["mean_curvature_per_mm"] == 0.0125
    b = data["bifurcations"][0]
    assert b["child_segments"] == [1, 2] and b["murray_exponent"] == MURRAY
    assert b["angle_between_children_deg"] == ANGLE_CHILDREN_DEG
    assert data["lesions"][0]["percent_diameter_stenosis"] == 50.0 and data["lesions"][0]["grade"] == "50-69 %"
    assert data["paths"] == [[0, 1], [0, 2]] and data["loops"] == [] and data["warnings"] == []
    # NaN -> null (strict JSON).
    data = json.loads(write_analysis_files(y_tree(lesion=False), tmp_path / "nan")["graph_json"].read_text())
    assert data["bifurcations"][0]["murray_exponent"] is None
    assert data["loops"] == [[1, 2]] and data["lesions"] == []


def test_graphml_reads_back(tmp_path):
    path = write_analysis_files(y_tree(lesion=False), tmp_path)["graphml"]
    assert path.read_text().splitlines()[1].startswith("<!-- vesselfield vessel analysis: branch graph, units mm, LPS")
    graph = nx.read_graphml(path, node_type=int, force_multigraph=True)
    assert graph.is_multigraph() and not graph.is_directed()
    assert graph.number_of_nodes() == 4 and graph.number_of_edges() == 3
    assert graph.graph["units"] == "mm" and graph.graph["frame"] == "LPS"
    assert graph.nodes[1] == {"kind": "bifurcation", "x_mm": 2.0, "y_mm": 0.0, "z_mm": 0.0, "radius_mm": 1.6,
                              "degree": 3, "component": 0}
    edges = {d["segment_id"]: (u, v, d) for u, v, d in graph.edges(data=True)}
    assert sorted(edges) == [0, 1, 2]
    u, v, d = edges[1]
    assert {u, v} == {1, 2} and d["parent_id"] == 0 and d["min_radius_mm"] == 0.6
    assert d["length_mm"] == pytest.approx(1.5, abs=1e-12)  # sum of three 0.5 mm steps
    assert edges[0][2]["tortuosity"] == 1.0 and edges[0][2]["length_mm"] == 2.0


def test_csv_tables(tmp_path):
    tree = y_tree()
    written = write_analysis_files(tree, tmp_path)
    segments = read_csv_table(written["segments"])
    assert written["segments"].read_text().splitlines()[:2] == [
        "# vesselfield vessel analysis: lengths and radii in mm, curvature in 1/mm, LPS frame",
        "segment_id,parent_id,component,length_mm,mean_radius_mm,min_radius_mm,tortuosity,tortuosity_vmtk,"
        "mean_curvature_per_mm",
    ]
    expected = [(0, -1, 2.0, 1.5, 1.5, 1.0, 0.0, 0.0), (1, 0, 1.5, 1.0, 0.6, 1.0, 0.0, 0.0),
                (2, 0, 1.5, 1.0, 1.0, 1.0, 0.0, 0.0125)]
    assert len(segments) == 3
    for row, (sid, pid, length, mean_r, min_r, tort, tort_vmtk, curv) in zip(segments, expected):
        assert (int(row["segment_id"]), int(row["parent_id"]), int(row["component"])) == (sid, pid, 0)
        got = [_float(row[k]) for k in ("length_mm", "mean_radius_mm", "min_radius_mm", "tortuosity",
                                        "mean_curvature_per_mm")]
        assert got == pytest.approx([length, mean_r, min_r, tort, curv], rel=CSV_REL)
        assert _float(row["tortuosity_vmtk"]) == pytest.approx(tort_vmtk, abs=1e-12)  # 0 up to 1.5 / 1.5 rounding

    lines = written["bifurcations"].read_text().splitlines()
    assert lines[0].startswith("# vesselfield vessel analysis:") and "LPS" in lines[0]
    assert lines[1] == ("node_id,parent_segment,child_segments,x_mm,y_mm,z_mm,parent_radius_mm,child_radii_mm,"
                        "angle_between_children_deg,angles_to_parent_deg,murray_exponent")
    (row,) = read_csv_table(written["bifurcations"])
    assert (row["node_id"], row["parent_segment"], row["child_segments"]) == ("1", "0", "1;2")
    assert [_float(row[k]) for k in ("x_mm", "y_mm", "z_mm", "parent_radius_mm")] == [2.0, 0.0, 0.0, 1.5]
    assert row["child_radii_mm"] == "1;1"
    assert _float(row["angle_between_children_deg"]) == pytest.approx(68.8999, rel=CSV_REL)
    assert [float(a) for a in row["angles_to_parent_deg"].split(";")] == pytest.approx([53.1301] * 2, rel=CSV_REL)
    assert _float(row["murray_exponent"]) == pytest.approx(1.70951, rel=CSV_REL)

    lines = written["stenoses"].read_text().splitlines()
    assert lines[0].startswith("# vesselfield vessel analysis:") and "LPS" in lines[0]
    assert lines[1] == ("path,segment_id,position_mm,x_mm,y_mm,z_mm,mld_mm,reference_diameter_mm,"
                        "reference_diameter_mean_local_mm,percent_diameter_stenosis,"
                        "percent_diameter_stenosis_mean_local,percent_area_stenosis,lesion_length_mm,grade")
    (row,) = read_csv_table(written["stenoses"])
    assert (row["path"], row["segment_id"], row["grade"]) == ("0", "1", "50-69 %")
    numbers = [_float(row[k]) for k in ("position_mm", "x_mm", "y_mm", "z_mm", "mld_mm", "reference_diameter_mm",
                                        "reference_diameter_mean_local_mm", "percent_diameter_stenosis",
                                        "percent_diameter_stenosis_mean_local", "percent_area_stenosis",
                                        "lesion_length_mm")]
    assert numbers == pytest.approx([3.0, 2.6, 0.8, 0.0, 1.2, 2.4, 2.4, 50.0, 50.0, 75.0, 1.0], rel=CSV_REL)


def test_csv_without_lesion_and_with_nan(tmp_path):
    written = write_analysis_files(y_tree(lesion=False), tmp_path)
    lines = written["stenoses"].read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith("#") and lines[1].startswith("path,segment_id,")
    assert read_csv_table(written["stenoses"]) == []
    (row,) = read_csv_table(written["bifurcations"])
    assert row["murray_exponent"] == ""  # NaN is written as an empty field


def test_every_file_states_units_and_frame(tmp_path):
    written = write_analysis_files(y_tree(), tmp_path)
    first = {key: path.read_text().splitlines()[0] for key, path in written.items()}
    assert first["swc"].startswith("# ") and "(mm, LPS)" in first["swc"]
    for key in ("segments", "bifurcations", "stenoses"):
        assert first[key].startswith("# vesselfield vessel analysis") and "mm" in first[key] and "LPS" in first[key]
    data = json.loads(written["graph_json"].read_text())
    assert list(data)[:2] == ["units", "frame"]
    # VTP: no comment line; the array names carry the units (module docstring).
    assert first["centerlines"].startswith("<?xml")


def test_bad_input(tmp_path):
    with pytest.raises(VesselfieldError, match="AnalyzedTree"):
        write_analysis_files(object(), tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(VesselfieldError, match="not a folder"):
        write_analysis_files(y_tree(), tmp_path / "file")
    tree = y_tree()
    tree.segments[1].valid = tree.segments[1].valid[:2]
    with pytest.raises(VesselfieldError, match="segment 1: valid"):
        write_analysis_files(tree, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    with pytest.raises(VesselfieldError, match="does not exist"):
        read_csv_table(tmp_path / "missing.csv")


# ------------------------------------------------------------------------------------ report
def test_write_analysis_report(tmp_path):
    path = write_analysis_report(tmp_path / "report", y_tree(lesion=False), title="Y tree")
    assert path == tmp_path / "report" / "report.html"
    text = path.read_text()
    for heading in ("<h2>Segments</h2>", "<h2>Bifurcations</h2>", "<h2>Stenoses</h2>", "<h2>Summary</h2>"):
        assert heading in text
    assert len(re.findall(r'<img src="data:image/png;base64,', text)) == 2
    # ':' is not a base64 character, so the embedded images cannot spell a URL either.
    assert "http://" not in text and "https://" not in text
    assert "a loop of segments 1, 2 was cut in the SWC" in text and "No lesion found." in text
    figures = sorted(p.name for p in (tmp_path / "report" / "figures").iterdir())
    assert figures == ["analysis_diameter_profiles.png", "analysis_tree_radius.png"]
    assert all(Path(tmp_path / "report" / "figures" / f).read_bytes().startswith(b"\x89PNG") for f in figures)


# ------------------------------------------------------------------------------------ CAD-RADS
@pytest.mark.parametrize("percent, grade", [
    (0, "0 %"), (0.4, "0 %"), (1, "1-24 %"), (24.4, "1-24 %"), (24.6, "25-49 %"), (49, "25-49 %"),
    (50, "50-69 %"), (69, "50-69 %"), (70, "70-99 %"), (99, "70-99 %"), (99.6, "100 %"), (100, "100 %"),
    (-3.0, "0 %"), (120.0, "100 %"),
])
def test_cad_rads_grade_bin_edges(percent, grade):
    assert cad_rads_grade(percent) == grade


def test_profile_figure_rejects_no_panel(tmp_path):
    from vesselfield.report.analysis import figure_diameter_profiles

    with pytest.raises(VesselfieldError, match="max_paths"):
        figure_diameter_profiles(tmp_path / "p.png", y_tree(), max_paths=0)
