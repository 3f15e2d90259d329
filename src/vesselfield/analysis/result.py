"""What a vessel analysis returns: the centreline forest with its per-point geometry, the branch
graph, the bifurcations and the lesions (all LPS, mm).

:class:`AnalyzedTree` is a :class:`~vesselfield.tree.VesselTree` (one SWC node per centreline
sample, radius = the area-equivalent cross-section radius), so everything that reads a tree reads
it; the extra attributes hold what the tables and the report show.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vesselfield.tree import VesselTree

# CAD-RADS 2.0 stenosis bins (percent diameter stenosis): grade k covers [lower_k, upper_k).
# 0 = no plaque, 1 = 1-24 %, 2 = 25-49 %, 3 = 50-69 %, 4 = 70-99 %, 5 = 100 % (occlusion).
CAD_RADS_BINS = ((0, "0 %"), (1, "1-24 %"), (25, "25-49 %"), (50, "50-69 %"), (70, "70-99 %"), (100, "100 %"))


def cad_rads_grade(percent_diameter_stenosis: float) -> str:
    """The CAD-RADS bin of a percent diameter stenosis (0-100 %): ``"0 %"``, ``"1-24 %"``, ...

    Values are rounded to the nearest whole percent first (CAD-RADS reports whole percent), and
    clipped to [0, 100].
    """
    value = int(round(min(max(float(percent_diameter_stenosis), 0.0), 100.0)))
    label = CAD_RADS_BINS[0][1]
    for lower, name in CAD_RADS_BINS:
        if value >= lower:
            label = name
    return label


@dataclass
class Segment:
    """One branch of the centreline graph, between two graph nodes, oriented away from its root.

    Per-sample arrays have one entry per centreline sample (``n`` >= 2, samples <= 0.5 mm apart,
    the first at ``start_node``, the last at ``end_node``).

    Attributes:
        segment_id: index in :attr:`AnalyzedTree.segments`.
        parent_id: the segment that ends where this one starts, -1 for a segment leaving a root.
        start_node, end_node: graph node ids (:attr:`AnalyzedTree.nodes`).
        component: connected component (tree) id, 0, 1, ...
        points_mm: (n, 3) centred samples (LPS mm).
        radius_area_mm: (n,) area-equivalent radius sqrt(A / pi) of the cross-section in the
            plane normal to the centreline, mm.
        radius_inscribed_mm: (n,) |SDF| at the sample: the largest inscribed sphere, mm.
        diameter_min_mm, diameter_max_mm: (n,) the shortest and longest chord of the
            cross-section through the sample, mm.
        curvature_per_mm: (n,) curvature of the smoothed centreline, 1/mm.
        in_bifurcation: (n,) True where the sample lies in a bifurcation zone (its cross-section
            cuts a neighbouring branch); left out of the segment statistics.
        valid: (n,) True where the cross-section was closed (every ray met the wall).
        length_mm: arc length of the centreline, mm.
        chord_mm: distance between the end samples, mm.
        mean_radius_mm, min_radius_mm: statistics of ``radius_area_mm`` outside bifurcation zones
            (over all valid samples when the segment is all bifurcation zone), mm.
        mean_curvature_per_mm: mean of ``curvature_per_mm``, 1/mm.
    """

    segment_id: int
    parent_id: int
    start_node: int
    end_node: int
    component: int
    points_mm: np.ndarray
    radius_area_mm: np.ndarray
    radius_inscribed_mm: np.ndarray
    diameter_min_mm: np.ndarray
    diameter_max_mm: np.ndarray
    curvature_per_mm: np.ndarray
    in_bifurcation: np.ndarray
    valid: np.ndarray
    length_mm: float = 0.0
    chord_mm: float = 0.0
    mean_radius_mm: float = float("nan")
    min_radius_mm: float = float("nan")
    mean_curvature_per_mm: float = float("nan")
    in_end_zone: np.ndarray = None  # type: ignore[assignment]
    """(n,) True within one radius of a vessel's free end (the section plane cuts its cap): left out of the
    statistics and of stenosis detection like bifurcation zones. None: no end zone."""

    def __post_init__(self):
        if self.in_end_zone is None:
            self.in_end_zone = np.zeros(len(self.points_mm), dtype=bool)

    @property
    def tortuosity(self) -> float:
        """Length / chord (1 for a straight segment; the distance metric of Bullitt et al. 2003)."""
        return self.length_mm / self.chord_mm if self.chord_mm > 0 else float("nan")

    @property
    def tortuosity_vmtk(self) -> float:
        """VMTK's tortuosity: length / chord - 1 (0 for a straight segment)."""
        return self.tortuosity - 1.0


@dataclass
class GraphNode:
    """A node of the branch graph.

    Attributes:
        node_id: index in :attr:`AnalyzedTree.nodes`.
        kind: ``"root"``, ``"endpoint"``, ``"bifurcation"`` (3 or more segments meet) or
            ``"loop"`` (a node only kept to hold a closed loop).
        position_mm: (3,) LPS mm.
        radius_mm: inscribed radius (|SDF|) at the node, mm.
        degree: number of segment ends at the node.
        component: connected component id.
    """

    node_id: int
    kind: str
    position_mm: np.ndarray
    radius_mm: float
    degree: int
    component: int


@dataclass
class Bifurcation:
    """A branching node, with its angles (degrees) and Murray exponent.

    Attributes:
        node_id: the graph node.
        parent_segment: the segment entering the node (-1 at a root with several children).
        child_segments: segments leaving the node.
        position_mm: (3,) LPS mm.
        parent_radius_mm, child_radii_mm: mean area-equivalent radii of the segments outside
            bifurcation zones, mm.
        angle_between_children_deg: angle between the directions of the first two children
            (the two largest), degrees.
        angles_to_parent_deg: for each child, the angle between its direction and the parent's
            direction of travel (0 = straight on), degrees.
        murray_exponent: x with r_p^x = sum r_c^x (Murray's law: 3), NaN when it has no
            solution (a child wider than its parent).
    """

    node_id: int
    parent_segment: int
    child_segments: list
    position_mm: np.ndarray
    parent_radius_mm: float
    child_radii_mm: list
    angle_between_children_deg: float
    angles_to_parent_deg: list
    murray_exponent: float


@dataclass
class Lesion:
    """One narrowing along a root-to-leaf path (quantitative coronary analysis).

    Attributes:
        path: index of the root-to-leaf path in :attr:`AnalyzedTree.paths`.
        segment_id: the segment holding the minimal lumen diameter.
        position_mm: arc length from the path's root to the MLD, mm.
        point_mm: (3,) position of the MLD, LPS mm.
        mld_mm: minimal lumen diameter (2 x area-equivalent radius), mm.
        reference_diameter_mm: the interpolated reference diameter at the MLD (a line fitted
            to the healthy diameters around the lesion), mm.
        reference_diameter_mean_local_mm: the mean of the healthy diameters just proximal and
            distal to the lesion, mm.
        percent_diameter_stenosis: 100 (1 - MLD / reference), interpolated reference.
        percent_diameter_stenosis_mean_local: the same with the mean-local reference.
        percent_area_stenosis: 100 (1 - (MLD / reference)^2).
        lesion_length_mm: length of the stretch where D is below the reference by more than the
            lesion threshold, mm.
        grade: CAD-RADS bin of ``percent_diameter_stenosis`` (:func:`cad_rads_grade`).
    """

    path: int
    segment_id: int
    position_mm: float
    point_mm: np.ndarray
    mld_mm: float
    reference_diameter_mm: float
    reference_diameter_mean_local_mm: float
    percent_diameter_stenosis: float
    percent_diameter_stenosis_mean_local: float
    percent_area_stenosis: float
    lesion_length_mm: float
    grade: str


@dataclass
class DiameterProfile:
    """D(s) along one root-to-leaf path.

    Attributes:
        segment_ids: the path's segments, root first.
        s_mm: (m,) arc length from the root, mm.
        diameter_mm: (m,) 2 x area-equivalent radius, mm.
        reference_mm: (m,) interpolated reference diameter, mm.
        excluded: (m,) True in bifurcation zones and where the cross-section was open.
    """

    segment_ids: list
    s_mm: np.ndarray
    diameter_mm: np.ndarray
    reference_mm: np.ndarray
    excluded: np.ndarray


@dataclass
class AnalyzedTree(VesselTree):
    """The result of :func:`vesselfield.analysis.analyze`: an SWC forest plus its measurements.

    The :class:`VesselTree` part has one node per centreline sample (radius = area-equivalent
    radius, mm; ``labels`` = segment id + 1, the SWC type column). Every connected component is
    its own tree; its root is the endpoint with the largest radius, or the one nearest the
    ``root_mm`` asked for.

    Attributes (besides the tree's):
        segments: :class:`Segment` list (segment_id = index).
        nodes: :class:`GraphNode` list (node_id = index).
        bifurcations: :class:`Bifurcation` list.
        lesions: :class:`Lesion` list (empty when there is none).
        paths: root-to-leaf paths, each a :class:`DiameterProfile`.
        loops: closed loops kept in the graph, each a list of segment ids, the one closing it last;
            the SWC cannot hold a loop, so each is cut at the middle of that closing segment.
        input_kind: what was analysed (``"sdf"``, ``"mask"``, ``"mesh"``, ``"network"``, ``"swc"``).
        spacing_mm: the isotropic spacing of the topology grid, mm.
        warnings: one-line problems the user should know about.
        details: timings and counts (JSON-able).
    """

    segments: list = field(default_factory=list)
    nodes: list = field(default_factory=list)
    bifurcations: list = field(default_factory=list)
    lesions: list = field(default_factory=list)
    paths: list = field(default_factory=list)
    loops: list = field(default_factory=list)
    input_kind: str = "sdf"
    spacing_mm: float = float("nan")
    warnings: list = field(default_factory=list)
    details: dict = field(default_factory=dict)
