"""The generic figure helpers (vesselfield.report.figures): PNG files, world planes, MIP panels, input checks.

The figures themselves (MIPs, mesh, losses) are checked pixel by pixel in test_report.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.report.figures import (
    DPI,
    WORLD_AXIS_LABELS,
    draw_world_plane,
    in_plane_axes,
    mip_panels,
    new_figure,
    save_png,
    volume_on_grid,
)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of every chunk of a PNG file (PNG spec, section 5.3: length, type, body, CRC)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, i = [], 8
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        chunks.append((data[i + 4:i + 8], data[i + 8:i + 8 + n]))
        i += 12 + n
    return chunks


def test_png_has_the_figure_size_and_no_software_url(tmp_path):
    fig = new_figure(4.0, 3.0)
    fig.add_subplot().plot([0, 1], [0, 1])
    path = save_png(fig, tmp_path / "f.png")
    assert path == tmp_path / "f.png"
    assert imread(path).shape[:2] == (3 * DPI, 4 * DPI)
    text = [body for kind, body in png_chunks(path.read_bytes()) if kind in (b"tEXt", b"iTXt", b"zTXt")]
    assert not any(b"Software" in body or b"http" in body for body in text)
    # The check can fail: matplotlib's default metadata holds its web address.
    fig.savefig(tmp_path / "default.png", format="png")
    default = [body for kind, body in png_chunks((tmp_path / "default.png").read_bytes()) if kind == b"tEXt"]
    assert any(body.startswith(b"Software\x00") and b"http" in body for body in default)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["default.png", "f.png"]  # no temporary file left


def test_in_plane_axes_are_the_other_two_in_order():
    assert [in_plane_axes(axis) for axis in range(3)] == [(1, 2), (0, 2), (0, 1)]
    with pytest.raises(VesselfieldError, match="0, 1 or 2"):
        in_plane_axes(3)


@pytest.mark.parametrize("axis, flipped", [(0, False), (1, False), (2, True)])
def test_world_plane_spans_mm_and_views_axial_from_the_feet(axis, flipped):
    fig = new_figure(4.0, 4.0)
    ax = fig.add_subplot()
    shown = draw_world_plane(ax, np.zeros((3, 5)), axis, (-10.0, 15.0), (2.0, 8.0), cmap="gray")
    assert shown.get_extent() == [-10.0, 15.0, 2.0, 8.0]
    assert ax.get_xlim() == (-10.0, 15.0)
    # Axial: y (+P) grows downwards, so the top of the panel is the smallest y (anterior).
    assert ax.get_ylim() == ((8.0, 2.0) if flipped else (2.0, 8.0))
    a, b = in_plane_axes(axis)
    assert ax.get_xlabel() == WORLD_AXIS_LABELS[a] and ax.get_ylabel() == WORLD_AXIS_LABELS[b]
    # Equal scales: one mm is as long across as up.
    assert ax.get_aspect() == 1.0


def test_mip_panels_project_a_single_voxel_to_its_coordinates():
    grid = VolumeGrid((4, 5, 6), (1.0, 2.0, 0.5))
    volume = np.zeros(grid.shape)
    volume[1, 3, 4] = 0.7
    lo, hi = grid.bounds_mm
    panels = mip_panels(volume, grid)
    assert [p.axis for p in panels] == [0, 1, 2]
    assert [p.mip_name for p in panels] == ["sagittal MIP (along x)", "coronal MIP (along y)", "axial MIP (along z)"]
    # Rows along the second in-plane axis, columns along the first.
    expected = {0: ((6, 5), (4, 3)), 1: ((6, 4), (4, 1)), 2: ((5, 4), (3, 1))}
    for p in panels:
        shape, peak = expected[p.axis]
        assert p.image.shape == shape and np.unravel_index(np.argmax(p.image), shape) == peak
        assert p.image.max() == 0.7 and p.image.sum() == pytest.approx(0.7)
        a, b = in_plane_axes(p.axis)
        assert p.u_range_mm == (lo[a], hi[a]) and p.v_range_mm == (lo[b], hi[b])


def test_volume_on_grid_checks_type_shape_and_values():
    grid = VolumeGrid((2, 3, 4), (1.0, 1.0, 1.0))
    assert volume_on_grid(torch.ones(2, 3, 4), grid, "occupancy").shape == (2, 3, 4)
    with pytest.raises(VesselfieldError, match="grid must be a VolumeGrid"):
        volume_on_grid(np.zeros((2, 3, 4)), (2, 3, 4), "occupancy")
    with pytest.raises(VesselfieldError, match=r"occupancy has shape \(2, 3, 5\)"):
        volume_on_grid(np.zeros((2, 3, 5)), grid, "occupancy")
    with pytest.raises(VesselfieldError, match="must hold numbers"):
        volume_on_grid(np.full((2, 3, 4), "a"), grid, "occupancy")
    bad = np.zeros((2, 3, 4))
    bad[1, 1, 1] = np.nan
    with pytest.raises(VesselfieldError, match="NaN"):
        volume_on_grid(bad, grid, "occupancy")
