"""Every setting of the vessel analysis (:func:`vesselfield.analysis.analyze`), every default.

Defaults were chosen on the exact phantoms of tests/test_analysis.py and docs/benchmarks.md
("Vessel analysis"); the reason is given under each field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vesselfield.config import check_numbers
from vesselfield.errors import VesselfieldError

REFERENCE_METHODS = ("interpolated", "mean-local")


@dataclass
class AnalysisConfig:
    """Settings of centreline extraction, cross-section measurement and stenosis grading."""

    config_name: ClassVar[str] = "analysis"
    key_fields: ClassVar[tuple] = ()
    free_on_resume: ClassVar[tuple] = ()

    spacing_mm: float | None = None
    """Isotropic spacing of the topology grid (thinning), mm. None: the input's smallest voxel spacing (volumes),
    the box's longest side / 192 (meshes, networks, SWC trees). Geometry is measured on the continuous field, so
    this sets which vessels are found (radius >= about one voxel), not how precisely they are measured."""
    min_branch_mm: float = 0.0
    """Terminal branches shorter than this (mm, measured from the junction) are pruned, besides the radius rule
    below (--min-branch-mm)."""
    prune_factor: float = 1.5
    """A terminal branch is a spur and pruned when its length from the junction is below prune_factor x the
    inscribed radius at the junction (a surface bump's skeleton reaches about one radius; with 1.5 the phantoms
    of tests/test_analysis.py and docs/benchmarks.md show no spur, and a real side branch must reach at least
    half a radius beyond its parent's wall to be kept)."""
    small_loop_factor: float = 6.0
    """Loops whose length is below small_loop_factor x the largest inscribed radius on them are thinning
    artefacts and broken (a hole through a vessel's own wall is shorter than its circumference, 2 pi r)."""
    step_mm: float = 0.25
    """Spacing of the centreline samples, mm (<= 0.5: the SWC holds a node every step_mm)."""
    rays: int = 32
    """Rays per cross-section (even). Area and centroid are the trapezoid rule on the rays, exact for a circle
    and spectrally accurate for smooth sections."""
    ray_samples: int = 24
    """Samples per ray before the zero crossing is refined (bisection, then one secant step)."""
    ray_reach: float = 3.0
    """Rays reach ray_reach x (inscribed radius + one voxel); a ray that meets no wall within it leaves the
    cross-section open (bifurcation, vessel end): such samples are not measured."""
    centering_iterations: int = 3
    """Times each sample is moved to the centroid of its cross-section (in the plane normal to the centreline)."""
    smoothing_mm: float = 1.0
    """Standard deviation (mm) of the Gaussian smoothing of the voxel skeleton path before centring, and of the
    tangent estimate."""
    bifurcation_zone_factor: float = 1.5
    """Samples within bifurcation_zone_factor x the junction's inscribed radius of a junction are in its
    bifurcation zone: not centred, left out of the segment statistics and of stenosis detection (VMTK leaves out
    the bifurcation's inscribed sphere)."""
    angle_length_factor: float = 3.0
    """A branch's direction at a bifurcation is the chord from its zone boundary over max(2 mm,
    angle_length_factor x its radius)."""
    lesion_threshold: float = 0.2
    """A lesion is where the diameter falls below (1 - lesion_threshold) x the reference diameter."""
    reference_method: str = "interpolated"
    """Reference diameter of the stenosis grade (percent_diameter_stenosis): interpolated (a line fitted to the
    healthy diameters around the lesion, DICOM PS3.17 Annex T) or mean-local (the mean of the healthy diameters
    just proximal and distal). Both are written; this one is graded."""
    reference_window_mm: float | None = None
    """Scale of the reference fit (Gaussian window's sigma) and of the mean-local windows, mm. None: the larger of
    5 mm and 3 x the path's median diameter."""
    min_lesion_mm: float = 0.5
    """Narrowings shorter than this (mm) are not lesions."""
    max_memory_gb: float = 4.0
    """The topology grid's estimated memory must fit in this many GB; otherwise a one-line error says which
    --spacing fits."""
    batch_points: int = 1 << 20
    """Field evaluations per call (memory, not results)."""

    def __post_init__(self):
        check_numbers(self, positive=("spacing_mm", "prune_factor", "small_loop_factor", "step_mm", "ray_reach",
                                      "smoothing_mm", "reference_window_mm", "max_memory_gb", "angle_length_factor"),
                      non_negative=("min_branch_mm", "bifurcation_zone_factor", "min_lesion_mm",
                                    "centering_iterations"),
                      at_least_one=("rays", "ray_samples", "batch_points"),
                      flags={"spacing_mm": "--spacing", "min_branch_mm": "--min-branch-mm"})
        if self.step_mm > 0.5:
            raise VesselfieldError(f"step_mm must be at most 0.5 (nodes every <= 0.5 mm), got {self.step_mm}")
        if self.rays < 8 or self.rays % 2:
            raise VesselfieldError(f"rays must be an even number >= 8, got {self.rays}")
        if not 0 < self.lesion_threshold < 1:
            raise VesselfieldError(f"lesion_threshold must be in (0, 1), got {self.lesion_threshold}")
        if self.reference_method not in REFERENCE_METHODS:
            raise VesselfieldError(f"reference_method must be one of {', '.join(REFERENCE_METHODS)}, "
                                   f"got {self.reference_method!r}")
