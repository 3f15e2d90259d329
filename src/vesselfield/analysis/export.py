"""The files of a vessel analysis: SWC tree, centreline VTP, graph (JSON and GraphML) and CSV tables.

:func:`write_analysis_files` writes, each file atomically (:mod:`vesselfield.io.atomic`), into
one folder (see :data:`ANALYSIS_FILES`):

- ``tree.swc``: the SWC forest (``id type x y z radius parent``; ids 1..N in node order, type =
  segment id + 1, parent -1 for a root; numbers as shortest round-trip decimals, so
  :func:`vesselfield.io.swc.load_swc` returns the same tree). Its comment lines say the units and
  frame, that the radius is the area-equivalent cross-section radius, that every connected
  component is a tree of its own, and, one line per loop, which closed loop the SWC had to cut;
- ``centerlines.vtp``: one polyline cell per segment (its samples, so a bifurcation point appears
  once per segment that touches it), point arrays ``radius_area_mm``, ``radius_inscribed_mm``,
  ``diameter_min_mm``, ``diameter_max_mm``, ``curvature_per_mm`` (Float64), ``segment_id`` (Int64),
  ``in_bifurcation``, ``in_end_zone`` and ``valid`` (UInt8, 0/1), cell array ``segment_id``. VTK XML has no place
  for a comment that readers keep and :func:`vesselfield.io.vtp.write_vtp` writes no FieldData:
  the points are LPS mm (as everywhere in vesselfield) and the array names carry their units;
- ``graph.json``: units, frame, input kind, grid spacing, nodes, segments, bifurcations, lesions,
  root-to-leaf paths and loops (segment ids), warnings and details; strict JSON (NaN -> ``null``,
  :func:`vesselfield.io.run_folder.write_json`);
- ``graph.graphml``: the branch graph as a ``networkx.MultiGraph`` (one edge per segment, keyed by
  its id; a loop closed by one segment is a self-loop), graph attributes ``units="mm"``,
  ``frame="LPS"``, preceded by an XML comment saying so. GraphML floats may be NaN (written
  ``nan``, read back as NaN);
- ``segments.csv``, ``bifurcations.csv``, ``stenoses.csv``: a ``#`` comment line with units and
  frame, a header, one row per item (``stenoses.csv`` is the header alone when no lesion was
  found). Floats have 6 significant digits (``f"{v:.6g}"``: relative rounding error <= 5e-6,
  i.e. < 1 um on coronary coordinates); **NaN is written as an empty field** (what CSV readers,
  pandas included, read as missing); lists (child segments, radii, angles) are joined with ``;``.
  :func:`read_csv_table` reads them back (rows as dicts of strings).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vesselfield.analysis.result import AnalyzedTree
from vesselfield.errors import VesselfieldError
from vesselfield.io.atomic import write_bytes_atomic, write_text_atomic
from vesselfield.io.run_folder import write_json
from vesselfield.io.vtp import PolyData, write_vtp

__all__ = [
    "ANALYSIS_FILES",
    "BIFURCATION_COLUMNS",
    "SEGMENT_COLUMNS",
    "STENOSIS_COLUMNS",
    "analysis_graph",
    "centerline_polydata",
    "format_float",
    "graph_dict",
    "read_csv_table",
    "swc_text",
    "write_analysis_files",
]

ANALYSIS_FILES = {
    "swc": "tree.swc",
    "centerlines": "centerlines.vtp",
    "graph_json": "graph.json",
    "graphml": "graph.graphml",
    "segments": "segments.csv",
    "bifurcations": "bifurcations.csv",
    "stenoses": "stenoses.csv",
}
"""Key (as :func:`write_analysis_files` returns them, in this order) -> file name."""

SEGMENT_COLUMNS = ("segment_id", "parent_id", "component", "length_mm", "mean_radius_mm", "min_radius_mm",
                   "tortuosity", "tortuosity_vmtk", "mean_curvature_per_mm")
BIFURCATION_COLUMNS = ("node_id", "parent_segment", "child_segments", "x_mm", "y_mm", "z_mm", "parent_radius_mm",
                       "child_radii_mm", "angle_between_children_deg", "angles_to_parent_deg", "murray_exponent")
STENOSIS_COLUMNS = ("path", "segment_id", "position_mm", "x_mm", "y_mm", "z_mm", "mld_mm", "reference_diameter_mm",
                    "reference_diameter_mean_local_mm", "percent_diameter_stenosis",
                    "percent_diameter_stenosis_mean_local", "percent_area_stenosis", "lesion_length_mm", "grade")

_CSV_COMMENTS = {
    "segments": "# vesselfield vessel analysis: lengths and radii in mm, curvature in 1/mm, LPS frame",
    "bifurcations": "# vesselfield vessel analysis: positions and radii in mm (LPS frame), angles in degrees; "
                    "lists joined with ';'",
    "stenoses": "# vesselfield vessel analysis: positions, lengths and diameters in mm (LPS frame), "
                "stenoses in percent, grade = CAD-RADS bin",
}
_FRAME_TEXT = "units mm, LPS frame (x +L, y +P, z +S)"


# ------------------------------------------------------------------------------------ values
def format_float(value) -> str:
    """A CSV number: 6 significant digits (``f"{v:.6g}"``); NaN and None -> ``""`` (missing)."""
    if value is None:
        return ""
    v = float(value)
    return "" if math.isnan(v) else f"{v:.6g}"


def _int_list(values) -> str:
    return ";".join(str(int(v)) for v in values)


def _float_list(values) -> str:
    return ";".join(format_float(v) for v in values)


def _plain_float(value) -> float:
    return float(value) if value is not None else math.nan


# ------------------------------------------------------------------------------------ checks
def _check_tree(tree) -> AnalyzedTree:
    if not isinstance(tree, AnalyzedTree):
        raise VesselfieldError(f"expected an AnalyzedTree (vesselfield.analysis.analyze), got {type(tree).__name__}")
    for i, seg in enumerate(tree.segments):
        if int(seg.segment_id) != i:
            raise VesselfieldError(f"segment {i} has segment_id {seg.segment_id}: segment ids must be list indices")
        points = np.asarray(seg.points_mm)
        if points.ndim != 2 or points.shape[1] != 3 or len(points) < 2:
            raise VesselfieldError(f"segment {i}: points_mm must be (n, 3) with n >= 2, got shape {points.shape}")
        for name in ("radius_area_mm", "radius_inscribed_mm", "diameter_min_mm", "diameter_max_mm",
                     "curvature_per_mm", "in_bifurcation", "valid"):
            if np.asarray(getattr(seg, name)).shape != (len(points),):
                raise VesselfieldError(f"segment {i}: {name} has shape {np.asarray(getattr(seg, name)).shape}, "
                                       f"expected ({len(points)},) like its points")
    for i, node in enumerate(tree.nodes):
        if int(node.node_id) != i:
            raise VesselfieldError(f"graph node {i} has node_id {node.node_id}: node ids must be list indices")
    return tree


def _out_folder(out_dir) -> Path:
    from vesselfield.io.run_folder import check_out_dir

    out = check_out_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


# ------------------------------------------------------------------------------------ SWC
def swc_text(tree: AnalyzedTree) -> str:
    """The SWC file of ``tree`` (format of :func:`vesselfield.io.swc.save_swc`, LPS, plus comments)."""
    lines = [
        "# SWC written by vesselfield: id type x y z radius parent (mm, LPS)",
        "# vessel analysis: radius = area-equivalent cross-section radius sqrt(A / pi); type = segment id + 1; "
        "each connected component is its own tree (parent -1 at its root)",
    ]
    for k, loop in enumerate(tree.loops):
        lines.append(f"# loop {k}: segments {', '.join(str(int(s)) for s in loop)} close a loop; the SWC cannot "
                     f"hold it and cuts it at the middle of segment {int(loop[-1])}")
    for i in range(len(tree)):
        p = int(tree.parent[i])
        x, y, z = (repr(float(v)) for v in tree.points_mm[i])
        lines.append(f"{i + 1} {int(tree.labels[i])} {x} {y} {z} {float(tree.radius_mm[i])!r} {p + 1 if p >= 0 else -1}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ VTP
def centerline_polydata(tree: AnalyzedTree) -> PolyData:
    """One polyline per segment with the per-sample arrays (see the module docstring), LPS mm."""
    segs = tree.segments
    if not segs:
        return PolyData(points=np.zeros((0, 3)))
    counts = [len(s.points_mm) for s in segs]
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    lines = [np.arange(a, a + n, dtype=np.int64) for a, n in zip(starts, counts)]

    def cat(name, dtype):
        return np.concatenate([np.asarray(getattr(s, name)).astype(dtype) for s in segs])

    point_data = {name: cat(name, np.float64) for name in ("radius_area_mm", "radius_inscribed_mm",
                                                           "diameter_min_mm", "diameter_max_mm", "curvature_per_mm")}
    point_data["segment_id"] = np.repeat(np.arange(len(segs), dtype=np.int64), counts)
    point_data["in_bifurcation"] = cat("in_bifurcation", bool).astype(np.uint8)
    point_data["valid"] = cat("valid", bool).astype(np.uint8)
    point_data["in_end_zone"] = cat("in_end_zone", bool).astype(np.uint8)
    return PolyData(points=np.concatenate([np.asarray(s.points_mm, np.float64) for s in segs]), lines=lines,
                    point_data=point_data, cell_data={"segment_id": np.arange(len(segs), dtype=np.int64)})


# ------------------------------------------------------------------------------------ graph
def _xyz(point) -> dict[str, float]:
    p = np.asarray(point, dtype=np.float64).reshape(3)
    return {"x_mm": float(p[0]), "y_mm": float(p[1]), "z_mm": float(p[2])}


def _node_record(node) -> dict[str, Any]:
    return {"id": int(node.node_id), "kind": str(node.kind), **_xyz(node.position_mm),
            "radius_mm": _plain_float(node.radius_mm), "degree": int(node.degree), "component": int(node.component)}


def _segment_record(seg) -> dict[str, Any]:
    return {"id": int(seg.segment_id), "parent_id": int(seg.parent_id), "start_node": int(seg.start_node),
            "end_node": int(seg.end_node), "component": int(seg.component), "length_mm": float(seg.length_mm),
            "chord_mm": float(seg.chord_mm), "mean_radius_mm": float(seg.mean_radius_mm),
            "min_radius_mm": float(seg.min_radius_mm), "tortuosity": float(seg.tortuosity),
            "tortuosity_vmtk": float(seg.tortuosity_vmtk), "mean_curvature_per_mm": float(seg.mean_curvature_per_mm)}


def _bifurcation_record(b) -> dict[str, Any]:
    return {"node_id": int(b.node_id), "parent_segment": int(b.parent_segment),
            "child_segments": [int(c) for c in b.child_segments], **_xyz(b.position_mm),
            "parent_radius_mm": _plain_float(b.parent_radius_mm),
            "child_radii_mm": [_plain_float(r) for r in b.child_radii_mm],
            "angle_between_children_deg": _plain_float(b.angle_between_children_deg),
            "angles_to_parent_deg": [_plain_float(a) for a in b.angles_to_parent_deg],
            "murray_exponent": _plain_float(b.murray_exponent)}


def _lesion_record(lesion) -> dict[str, Any]:
    return {"path": int(lesion.path), "segment_id": int(lesion.segment_id),
            "position_mm": float(lesion.position_mm), **_xyz(lesion.point_mm), "mld_mm": float(lesion.mld_mm),
            "reference_diameter_mm": float(lesion.reference_diameter_mm),
            "reference_diameter_mean_local_mm": float(lesion.reference_diameter_mean_local_mm),
            "percent_diameter_stenosis": float(lesion.percent_diameter_stenosis),
            "percent_diameter_stenosis_mean_local": float(lesion.percent_diameter_stenosis_mean_local),
            "percent_area_stenosis": float(lesion.percent_area_stenosis),
            "lesion_length_mm": float(lesion.lesion_length_mm), "grade": str(lesion.grade)}


def graph_dict(tree: AnalyzedTree) -> dict[str, Any]:
    """The content of ``graph.json`` (plain types; NaN still NaN, :func:`write_json` makes it null)."""
    return {
        "units": "mm",
        "frame": "LPS",
        "input_kind": str(tree.input_kind),
        "spacing_mm": _plain_float(tree.spacing_mm),
        "nodes": [_node_record(n) for n in tree.nodes],
        "segments": [_segment_record(s) for s in tree.segments],
        "bifurcations": [_bifurcation_record(b) for b in tree.bifurcations],
        "lesions": [_lesion_record(le) for le in tree.lesions],
        "paths": [[int(s) for s in p.segment_ids] for p in tree.paths],
        "loops": [[int(s) for s in loop] for loop in tree.loops],
        "warnings": [str(w) for w in tree.warnings],
        "details": tree.details,
    }


def analysis_graph(tree: AnalyzedTree):
    """The branch graph as a ``networkx.MultiGraph``: nodes = graph node ids, one edge per segment.

    Node attributes ``kind, x_mm, y_mm, z_mm, radius_mm, degree, component``; edge key = segment
    id, attributes ``segment_id, parent_id, start_node, end_node, component, length_mm,
    mean_radius_mm, min_radius_mm, tortuosity``; graph attributes ``units="mm"``, ``frame="LPS"``,
    ``input_kind``, ``spacing_mm``. Every value is a plain int, float or str.
    """
    import networkx as nx

    graph = nx.MultiGraph(units="mm", frame="LPS", input_kind=str(tree.input_kind),
                          spacing_mm=_plain_float(tree.spacing_mm))
    for node in tree.nodes:
        record = _node_record(node)
        node_id = record.pop("id")
        graph.add_node(node_id, **record)
    for seg in tree.segments:
        record = _segment_record(seg)
        graph.add_edge(int(seg.start_node), int(seg.end_node), key=int(seg.segment_id),
                       segment_id=record["id"], parent_id=record["parent_id"], start_node=record["start_node"],
                       end_node=record["end_node"], component=record["component"], length_mm=record["length_mm"],
                       mean_radius_mm=record["mean_radius_mm"], min_radius_mm=record["min_radius_mm"],
                       tortuosity=record["tortuosity"])
    return graph


def _graphml_bytes(tree: AnalyzedTree) -> bytes:
    import networkx as nx

    buffer = io.BytesIO()
    nx.write_graphml(analysis_graph(tree), buffer)
    data = buffer.getvalue()
    comment = f"<!-- vesselfield vessel analysis: branch graph, {_FRAME_TEXT} -->\n".encode()
    if data.startswith(b"<?xml"):
        end = data.index(b"?>") + 2
        return data[:end] + b"\n" + comment + data[end:].lstrip(b"\r\n")
    return comment + data


# ------------------------------------------------------------------------------------ CSV
def _csv_text(comment: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return comment + "\n" + buffer.getvalue()


def _segment_rows(tree: AnalyzedTree) -> list[list[str]]:
    return [[str(int(s.segment_id)), str(int(s.parent_id)), str(int(s.component)), format_float(s.length_mm),
             format_float(s.mean_radius_mm), format_float(s.min_radius_mm), format_float(s.tortuosity),
             format_float(s.tortuosity_vmtk), format_float(s.mean_curvature_per_mm)] for s in tree.segments]


def _bifurcation_rows(tree: AnalyzedTree) -> list[list[str]]:
    rows = []
    for b in tree.bifurcations:
        p = np.asarray(b.position_mm, dtype=np.float64).reshape(3)
        rows.append([str(int(b.node_id)), str(int(b.parent_segment)), _int_list(b.child_segments),
                     *(format_float(v) for v in p), format_float(b.parent_radius_mm), _float_list(b.child_radii_mm),
                     format_float(b.angle_between_children_deg), _float_list(b.angles_to_parent_deg),
                     format_float(b.murray_exponent)])
    return rows


def _stenosis_rows(tree: AnalyzedTree) -> list[list[str]]:
    rows = []
    for le in tree.lesions:
        p = np.asarray(le.point_mm, dtype=np.float64).reshape(3)
        rows.append([str(int(le.path)), str(int(le.segment_id)), format_float(le.position_mm),
                     *(format_float(v) for v in p), format_float(le.mld_mm), format_float(le.reference_diameter_mm),
                     format_float(le.reference_diameter_mean_local_mm), format_float(le.percent_diameter_stenosis),
                     format_float(le.percent_diameter_stenosis_mean_local), format_float(le.percent_area_stenosis),
                     format_float(le.lesion_length_mm), str(le.grade)])
    return rows


def read_csv_table(path) -> list[dict[str, str]]:
    """Rows of a CSV table written here (or any CSV), ``#`` comment lines skipped.

    Returns one dict per row, column name -> the field's text (``""`` for a missing value, e.g.
    NaN); convert with ``float(v) if v else math.nan``.
    """
    path = Path(path)
    if not path.is_file():
        raise VesselfieldError(f"CSV file {path} does not exist")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")]
    if not lines:
        raise VesselfieldError(f"CSV file {path} has no header line")
    return [dict(row) for row in csv.DictReader(lines)]


# ------------------------------------------------------------------------------------ all files
def write_analysis_files(tree: AnalyzedTree, out_dir) -> dict[str, Path]:
    """Write the analysis files (module docstring; names in :data:`ANALYSIS_FILES`) into ``out_dir``.

    Args:
        tree: the :class:`~vesselfield.analysis.result.AnalyzedTree` (LPS mm).
        out_dir: output folder, created if needed; files of the same names are replaced.

    Returns:
        ``{key: path}`` in the order of :data:`ANALYSIS_FILES` (``swc``, ``centerlines``,
        ``graph_json``, ``graphml``, ``segments``, ``bifurcations``, ``stenoses``).
    """
    tree = _check_tree(tree)
    out = _out_folder(out_dir)
    paths = {key: out / name for key, name in ANALYSIS_FILES.items()}
    write_text_atomic(paths["swc"], swc_text(tree))
    write_vtp(paths["centerlines"], centerline_polydata(tree))
    write_json(paths["graph_json"], graph_dict(tree))
    write_bytes_atomic(paths["graphml"], _graphml_bytes(tree))
    write_text_atomic(paths["segments"], _csv_text(_CSV_COMMENTS["segments"], SEGMENT_COLUMNS, _segment_rows(tree)))
    write_text_atomic(paths["bifurcations"], _csv_text(_CSV_COMMENTS["bifurcations"], BIFURCATION_COLUMNS,
                                                       _bifurcation_rows(tree)))
    write_text_atomic(paths["stenoses"], _csv_text(_CSV_COMMENTS["stenoses"], STENOSIS_COLUMNS, _stenosis_rows(tree)))
    return paths
