"""``vesselfield view``: an interactive, offline 3D page of meshes, trees, volumes and run folders."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vesselfield.cli.app import app


@app.command("view")
def view_cmd(
    paths: List[Path] = typer.Argument(..., metavar="PATH...", help="Meshes (STL / PLY / OBJ / VTP), centreline "
                                       "trees (SWC, VTP polylines with a radius), volumes (NIfTI / MHA / NRRD; the "
                                       "first is the image, later [0, 1] volumes are overlays) or run folders."),
    out: Optional[Path] = typer.Option(None, "--out", help="The page to write (default ./view.html); above 15 MB "
                                                           "its data goes to <stem>_files/data.js beside it."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="A reference surface (mesh, or mask volume "
                                             "at 0.5): shown translucent, and the first surface coloured by its "
                                             "signed distance to it (mm)."),
    open_: bool = typer.Option(False, "--open", help="Open the page in the default browser."),
    title: Optional[str] = typer.Option(None, "--title", help="The page's title."),
):
    """Write one self-contained HTML page (NiiVue inlined, no network) that shows every PATH in 3D."""
    from vesselfield.pipelines.view import view_files

    _, lines = view_files(paths, out, reference=reference, open_browser=open_, title=title)
    for line in lines:
        typer.echo(line)
