"""Draw docs/figures/geometry.png: the two default C-arm views in the LPS world frame.

    python docs/figures/geometry_figure.py [--out docs/figures/geometry.png]

Isocenter, the 128³ x 0.8 mm volume box, and for each default view the source, the detector
rectangle with its column (u) and row (v) axes, the central ray and the cone to the detector's
corners; LPS axes labelled. Everything is computed with ``vesselfield.geometry``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from mpl_toolkits.mplot3d.art3d import Poly3DCollection  # noqa: E402

from vesselfield.geometry import default_geometry  # noqa: E402
from vesselfield.io.atomic import atomic_path  # noqa: E402

COLOURS = ("tab:red", "tab:blue")
# Where each detector's label goes, relative to its centre (mm), to keep labels apart.
LABEL_OFFSETS = (np.array([40.0, -120.0, -170.0]), np.array([-60.0, -120.0, 110.0]))


def _box_edges(lo, hi):
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    for i in range(8):
        for j in range(i + 1, 8):
            if np.sum(corners[i] != corners[j]) == 1:
                yield corners[[i, j]]


def draw(out: Path) -> None:
    geometry = default_geometry()
    fig = plt.figure(figsize=(9, 8))
    ax = fig.add_subplot(projection="3d")

    for edge in _box_edges(*geometry.volume.bounds_mm):
        ax.plot(*edge.T, color="0.3", lw=0.8)
    ax.scatter([0], [0], [0], color="k", s=20)
    ax.text(0, 60, -110, "isocenter +\nvolume box", fontsize=8, ha="center")

    for index, (view, colour) in enumerate(zip(geometry.views, COLOURS), start=1):
        s, c = view.source_mm, view.detector_center_mm
        corners = view.pixel_centers_mm(np.array([[0, 0], [0, 511], [511, 511], [511, 0], [0, 0]]))
        ax.plot(*corners.T, color=colour, lw=1.5)
        ax.add_collection3d(Poly3DCollection([corners[:4]], facecolor=colour, alpha=0.15))
        for corner in corners[:4]:
            ax.plot(*np.stack([s, corner]).T, color=colour, lw=0.4, alpha=0.5)
        ax.plot(*np.stack([s, c]).T, color=colour, lw=1.0, ls="--")
        ax.scatter(*s, color=colour, s=40, marker="*")
        ax.text(*(s + np.array([0, 0, 25])), f"source {index}", color=colour, fontsize=9)
        # Row 0 / column 0 is the first corner; u and v arrows start there, 100 mm long for legibility.
        start = corners[0]
        for axis, name in ((view.u, "u (columns)"), (view.v, "v (rows)")):
            ax.quiver(*start, *(80 * axis), color=colour, arrow_length_ratio=0.2, lw=1.5)
            ax.text(*(start + 95 * axis), name, color=colour, fontsize=7)
        ax.text(*(c + LABEL_OFFSETS[index - 1]),
                f"detector {index}\nα={view.primary_angle_deg:g}°, β={view.secondary_angle_deg:g}°",
                color=colour, fontsize=8)

    # LPS axes at the isocenter.
    for axis, label in zip(np.eye(3), ("x: L(eft)", "y: P(osterior)", "z: S(uperior)")):
        ax.quiver(0, 0, 0, *(150 * axis), color="k", arrow_length_ratio=0.1, lw=1.2)
        ax.text(*(165 * axis), label, fontsize=8)

    ax.set_xlabel("x (mm, L)")
    ax.set_ylabel("y (mm, P)")
    ax.set_zlabel("z (mm, S)")
    ax.set_xlim(-450, 350)
    ax.set_ylim(-400, 750)
    ax.set_zlim(-450, 350)
    ax.set_box_aspect((800, 1150, 800))
    ax.view_init(elev=18, azim=-35)
    ax.set_title("Default two-view C-arm geometry (LPS mm): source S = -DSO·d, detector centre C = (DSD-DSO)·d",
                 fontsize=10)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Draw the default C-arm geometry figure.")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("geometry.png"))
    draw(parser.parse_args(argv).out)


if __name__ == "__main__":
    main()
