"""``vesselfield config show NAME``: every field of a method's config, its value and its documentation."""

from __future__ import annotations

from typing import Optional

import typer

from vesselfield.cli.app import config_app
from vesselfield.errors import VesselfieldError

#: The config classes the command line knows: name -> (module, class). Imported on use.
CONFIGS = {
    "sdf-car": ("vesselfield.methods.sdf_car", "SdfCarConfig"),
    "implicit-vessel": ("vesselfield.methods.implicit_vessel", "ImplicitVesselConfig"),
    "blend": ("vesselfield.methods.implicit_vessel", "BlendConfig"),
    "vessel-sdf": ("vesselfield.methods.vessel_sdf", "VesselSdfConfig"),
    "trainer": ("vesselfield.training", "TrainerConfig"),
    "udf-mesh": ("vesselfield.meshing.udf", "UdfMeshConfig"),
    "nudf": ("vesselfield.methods.nudf", "NudfConfig"),
    "analysis": ("vesselfield.analysis.config", "AnalysisConfig"),
}
#: Other names users type for them (a method, a command).
ALIASES = {"neca": "sdf-car", "occ-combined": "sdf-car", "sdf-occ": "sdf-car", "xray": "sdf-car",
           "inr": "implicit-vessel", "fit": "implicit-vessel", "vesselsdf": "vessel-sdf", "train": "vessel-sdf",
           "unet3d": "vessel-sdf", "analyze": "analysis", "attention-unet": "vessel-sdf", "direct-sdf": "vessel-sdf",
           "vessel-sdf-no-gauss": "vessel-sdf", "unet-roi": "nudf"}


def config_class(name: str):
    """The config class called ``name`` (:data:`CONFIGS` or :data:`ALIASES`)."""
    import importlib

    key = ALIASES.get(name, name)
    if key not in CONFIGS:
        raise VesselfieldError(f"unknown config {name!r}: use one of {', '.join(list(CONFIGS) + list(ALIASES))}")
    module, cls = CONFIGS[key]
    return getattr(importlib.import_module(module), cls)


@config_app.command("show")
def config_show(
    name: str = typer.Argument(..., help="sdf-car (also neca, occ-combined, sdf-occ), implicit-vessel, blend or "
                                         "trainer."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Show this preset's values."),
):
    """Print every field with the value it takes (for the preset), its type and its documentation."""
    from vesselfield.config import describe_config

    cls = config_class(name)
    keys = {}
    if name in ("neca", "occ-combined", "sdf-occ"):
        keys["method"] = name
    if name == "unet-roi":
        keys["variant"] = name
    if preset is not None:
        keys["preset"] = preset
    typer.echo(f"# {cls.__module__}.{cls.__name__}; set any field with --set FIELD=VALUE")
    typer.echo(describe_config(cls, **keys))


@config_app.command("list")
def config_list():
    """The names of the configs."""
    for key, (module, cls) in CONFIGS.items():
        aliases = [a for a, k in ALIASES.items() if k == key]
        typer.echo(f"{key}: {module}.{cls}" + (f" (also: {', '.join(aliases)})" if aliases else ""))
