"""``vesselfield analyze``: centrelines, radii, branch graph and stenosis grading of any vessel
field, mask, mesh, run folder or SWC tree, into a folder of tables, trees and a report.

Everything is read, checked and measured before the first file is written; every file is
written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.io.run_folder import RunSummary, check_out_dir

__all__ = ["analyze_files", "read_analysis_input", "run_analysis", "analysis_lines"]

ANALYSIS_DIR = "analysis"  # where reconstruct / predict / fit put their analysis


def _network_field(model_path: Path):
    """The wall field of a fitted implicit vessel model (model.pt), evaluated directly."""
    from vesselfield.analysis.fields import function_field
    from vesselfield.methods.implicit_vessel import ImplicitVesselModel

    model = ImplicitVesselModel.load(model_path)
    lo, hi = np.asarray(model.bounds_mm, float)
    margin = 0.1 * float((hi - lo).max()) + 2.0

    def evaluate(points_mm: np.ndarray) -> np.ndarray:
        return np.asarray(model.sdf(points_mm), dtype=np.float64).reshape(-1)

    return function_field(evaluate, lo - margin, hi + margin, kind="network", batch_points=1 << 16)


def read_analysis_input(path, *, kind: str | None = None, spacing_mm=None, origin_mm=None, geometry_path=None,
                        mesh_spacing_mm: float | None = None, max_memory_gb: float = 4.0):
    """``(field, topology, described, warnings)`` of an input file or run folder.

    Kinds: a run folder (its ``model.pt`` network, else its ``sdf.nii.gz``, else its ``mesh.stl``),
    an SWC tree, a mesh (STL / PLY / OBJ / VTP), a volume (NIfTI / MHA / NRRD / NPY): a float volume
    is an SDF (mm, negative inside), a volume of two values a mask (``kind`` overrides).
    """
    from vesselfield.analysis.api import as_wall_field, mesh_field, volume_kind
    from vesselfield.io.meshes import MESH_SUFFIXES
    from vesselfield.io.volumes import VOLUME_SUFFIXES
    from vesselfield.pipelines.common import read_volume

    path = Path(path)
    spacing_mm_analysis = mesh_spacing_mm  # the analysis grid's spacing (--spacing), for the memory check
    warnings = []
    if not path.exists():
        raise VesselfieldError(f"input not found: {path}")
    if path.is_dir():
        if (path / "model.pt").is_file() and (path / "sdf.nii.gz").is_file():
            try:
                field = _network_field(path / "model.pt")
            except VesselfieldError:
                raise
            except Exception:
                field = None
            if field is not None:
                return field, None, f"run folder {path} (its network model.pt, evaluated directly)", warnings
        if (path / "sdf.nii.gz").is_file():
            field, topo, described, w = read_analysis_input(path / "sdf.nii.gz", kind="sdf",
                                                            mesh_spacing_mm=mesh_spacing_mm,
                                                            max_memory_gb=max_memory_gb)
            return field, topo, f"run folder {path} (its SDF, sdf.nii.gz)", w
        if (path / "mesh.stl").is_file():
            field, topo, described, w = read_analysis_input(path / "mesh.stl", mesh_spacing_mm=mesh_spacing_mm)
            return field, topo, f"run folder {path} (its mesh, mesh.stl)", w
        raise VesselfieldError(f"{path} is a folder with no model.pt, sdf.nii.gz or mesh.stl: not a run folder of "
                               "vesselfield")
    name = path.name.lower()
    if name.endswith(".swc"):
        from vesselfield.io.swc import load_swc

        tree = load_swc(path)
        field, _ = as_wall_field(tree)
        return field, None, f"SWC tree {path.name} ({len(tree)} nodes; its exact round-cone surface)", warnings
    if path.suffix.lower() in MESH_SUFFIXES:
        from vesselfield.io import load_mesh

        mesh = load_mesh(path)
        if not mesh.is_watertight:
            warnings.append(f"mesh {path.name} is not watertight: its inside is taken from ray parity and may be wrong "
                            "near the holes")
        field, _ = mesh_field(mesh, mesh_spacing_mm)
        return field, None, f"mesh {path.name} ({len(mesh.faces)} faces)", warnings
    if any(name.endswith(s) for s in VOLUME_SUFFIXES):
        volume, grid = read_volume(path, geometry_path=geometry_path, spacing_mm=spacing_mm, origin_mm=origin_mm)
        detected = kind or volume_kind(volume)
        sp = "x".join(f"{s:g}" for s in grid.spacing_mm)
        if detected == "mask":
            if np.count_nonzero(volume) == 0:
                raise VesselfieldError(f"mask {path.name} is empty: no vessel voxel to analyse")
            field, _ = as_wall_field(volume != 0, grid, kind="mask", spacing_mm=spacing_mm_analysis,
                                     max_memory_gb=max_memory_gb)
            return field, None, f"mask {path.name} (two values; {grid.shape}, {sp} mm)", warnings
        if detected != "sdf":
            raise VesselfieldError(f"--kind must be sdf or mask, got {detected!r}")
        if not (volume < 0).any() or not (volume > 0).any():
            raise VesselfieldError(f"SDF {path.name} has no zero level (its values are all "
                                   f"{'positive' if not (volume < 0).any() else 'negative'}): nothing to analyse")
        field, topo = as_wall_field(volume.astype(np.float32), grid, kind="sdf", spacing_mm=spacing_mm_analysis,
                                    max_memory_gb=max_memory_gb)
        return field, topo, f"SDF {path.name} (float values, mm, negative inside; {grid.shape}, {sp} mm)", warnings
    raise VesselfieldError(f"cannot analyse {path.name}: give a volume ({', '.join(VOLUME_SUFFIXES)}), a mesh "
                           f"({', '.join(MESH_SUFFIXES)}), an SWC tree or a run folder")


def analysis_lines(tree, described: str | None = None) -> list[str]:
    """The terminal lines of an analysis: what was read, counts, length and every lesion."""
    lines = [f"analysed {described}" if described else f"analysed a {tree.input_kind}"]
    comps = len({s.component for s in tree.segments})
    total = sum(s.length_mm for s in tree.segments)
    lines.append(f"{comps} tree(s), {len(tree.segments)} segments, {len(tree.bifurcations)} bifurcations, "
                 f"{total:.1f} mm of centreline, {len(tree.loops)} loop(s); grid {tree.spacing_mm:.3g} mm, "
                 f"{tree.details.get('total_s', float('nan')):.1f} s")
    if not tree.lesions:
        lines.append("no lesion (no narrowing below the lesion threshold)")
    for les in tree.lesions:
        lines.append(f"lesion on path {les.path} (segment {les.segment_id}) at {les.position_mm:.1f} mm: MLD "
                     f"{les.mld_mm:.2f} mm, reference {les.reference_diameter_mm:.2f} mm, "
                     f"{les.percent_diameter_stenosis:.0f} % DS ({les.grade}), length {les.lesion_length_mm:.1f} mm")
    return lines


def run_analysis(field, out_dir, config=None, *, topology=None, root_mm=None, warnings=(),
                 title: str = "Vessel analysis"):
    """Analyse ``field`` and write the analysis files and their report into ``out_dir`` (created).

    ``warnings`` (the input's own, e.g. a mesh with holes) go before the analysis's in the report.
    Returns ``(tree, files)``: the :class:`~vesselfield.analysis.AnalyzedTree` and ``{name: path}``.
    """
    from vesselfield.analysis import AnalysisConfig
    from vesselfield.analysis.core import analyze_field
    from vesselfield.analysis.export import write_analysis_files
    from vesselfield.report.analysis import write_analysis_report

    config = config if config is not None else AnalysisConfig()
    field.batch_points = min(field.batch_points, config.batch_points)
    tree = analyze_field(field, config, root_mm=root_mm, topology=topology)
    tree.warnings = list(warnings) + list(tree.warnings)
    out = check_out_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = write_analysis_files(tree, out)
    files["report"] = write_analysis_report(out, tree, title=title)
    return tree, files


def analyze_files(input_path, out_dir, *, config=None, root_mm=None, kind: str | None = None, spacing_mm=None,
                  origin_mm=None, geometry_path=None) -> RunSummary:
    """``vesselfield analyze``: read ``input_path``, analyse it, write the analysis into ``out_dir``.

    Args:
        input_path: volume, mask, mesh, SWC or run folder (see :func:`read_analysis_input`).
        out_dir: the output folder (created; existing analysis files in it are replaced).
        config: :class:`~vesselfield.analysis.AnalysisConfig`.
        root_mm: (3,) LPS mm point inside the vessel to root its tree at.
        kind: ``"sdf"`` or ``"mask"`` to override the detection of a volume's kind.
        spacing_mm, origin_mm, geometry_path: the grid of a ``.npy`` volume.

    Returns:
        :class:`RunSummary`; ``objects["tree"]`` is the :class:`AnalyzedTree`.
    """
    from vesselfield.analysis import AnalysisConfig

    config = config if config is not None else AnalysisConfig()
    out = check_out_dir(out_dir)
    field, topology, described, warnings = read_analysis_input(
        input_path, kind=kind, spacing_mm=spacing_mm, origin_mm=origin_mm, geometry_path=geometry_path,
        mesh_spacing_mm=config.spacing_mm, max_memory_gb=config.max_memory_gb)
    tree, files = run_analysis(field, out, config, topology=topology, root_mm=root_mm, warnings=warnings)
    summary = RunSummary(verb="analyze", out_dir=out, files=files, warnings=list(tree.warnings),
                         lines=analysis_lines(tree, described),
                         details={"input": str(input_path), "input_kind": tree.input_kind, "described": described,
                                  "analysis": analysis_details(tree)})
    summary.objects = {"tree": tree}
    summary.write()
    return summary


def analysis_details(tree) -> dict:
    """The JSON-able counts of an analysis (summary.json's ``analysis``)."""
    return {
        "components": len({s.component for s in tree.segments}),
        "segments": len(tree.segments),
        "bifurcations": len(tree.bifurcations),
        "loops": len(tree.loops),
        "lesions": len(tree.lesions),
        "total_length_mm": float(sum(s.length_mm for s in tree.segments)),
        "max_percent_diameter_stenosis": (max(les.percent_diameter_stenosis for les in tree.lesions)
                                          if tree.lesions else 0.0),
        **tree.details,
    }


def analysis_after_run(field, out_dir, *, enabled: bool = True, config=None, topology=None):
    """The analysis step at the end of ``reconstruct xray``, ``predict`` and ``fit``.

    Writes into ``out_dir/analysis/``. A result the analysis cannot measure (empty, or no zero level)
    becomes a warning, never a failed run.

    Returns:
        ``(tree or None, files, lines, warnings)``: ``files`` keyed ``analysis_<name>``.
    """
    if not enabled:
        return None, {}, [], []
    try:
        tree, files = run_analysis(field, Path(out_dir) / ANALYSIS_DIR, config, topology=topology)
    except VesselfieldError as exc:
        return None, {}, [], [f"vessel analysis skipped: {exc}"]
    files = {f"analysis_{k}": v for k, v in files.items()}
    lines = [f"analysis: {line}" for line in analysis_lines(tree)[1:]]
    return tree, files, lines, [f"analysis: {w}" for w in tree.warnings]
