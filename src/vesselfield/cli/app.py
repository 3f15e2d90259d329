"""The ``vesselfield`` typer application: the command groups, shared options, printing, ``main``.

Only typer is imported at start-up; every command imports what it needs when it runs, so
``vesselfield --help`` never loads torch. A user error prints ``error: <one line>`` to stderr
and exits with status 2; no traceback.
"""

from __future__ import annotations

import sys
from typing import List, Optional, Tuple

import typer

from vesselfield.errors import VesselfieldError

app = typer.Typer(
    help="vesselfield: blood vessels as neural distance fields.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
phantom_app = typer.Typer(help="Synthetic vessels with exact ground truth.", no_args_is_help=True)
geometry_app = typer.Typer(help="C-arm cone-beam geometry files.", no_args_is_help=True)
reconstruct_app = typer.Typer(help="Reconstruct vessels (two-view X-ray: SDF-CAR, NeCA).", no_args_is_help=True)
benchmark_app = typer.Typer(help="Batch benchmarks that reproduce the papers' tables.", no_args_is_help=True)
data_app = typer.Typer(help="Prepare public datasets (ImageCAS, ...).", no_args_is_help=True)
fit_app = typer.Typer(help="Fit implicit neural vessel models (Alblas et al. 2022) to surface points or meshes.",
                      no_args_is_help=True)
study_app = typer.Typer(help="Studies of the implicit vessel models (Alblas et al. 2022).", no_args_is_help=True)
config_app = typer.Typer(help="Every setting of every method, with its default and its documentation.",
                         no_args_is_help=True)
app.add_typer(phantom_app, name="phantom")
app.add_typer(geometry_app, name="geometry")
app.add_typer(reconstruct_app, name="reconstruct")
app.add_typer(benchmark_app, name="benchmark")
app.add_typer(data_app, name="data")
app.add_typer(fit_app, name="fit")
app.add_typer(study_app, name="study")
app.add_typer(config_app, name="config")

# Options that take several values after one flag (``--masks A.png B.png``); click options take
# one value per flag, so main() rewrites ``--masks A B`` into ``--masks A --masks B``.
MULTI_VALUE_OPTIONS = ("--projections", "--masks", "--methods", "--cases", "--surfaces", "--models", "--names",
                       "--shapes", "--counts", "--set", "--test-cases")

# Options shared by several commands. Options that set a config field default to None: the
# method's config class holds the default (`vesselfield config show NAME`).
Triple = Optional[Tuple[float, float, float]]
GeometryOpt = typer.Option(None, "--geometry", help="Geometry JSON; its volume grid places .npy volumes.")
SpacingOpt = typer.Option(None, "--spacing", help="Voxel spacing X Y Z in mm for a .npy volume.")
OriginOpt = typer.Option(None, "--origin", help="World position X Y Z (LPS mm) of voxel (0,0,0) of a .npy volume; "
                                                "default centres it.")
DegradeOpt = typer.Option(None, "--degrade", help="Simulate a real acquisition, e.g. noise=0.02,blur_px=1,"
                          "background=0.03,angle_deg=1,shift_mm=1.5 (also poisson, breaks, gap_px, thin_px, blobs, "
                          "blob_px, seed; fractions of each view's peak, pixels, degrees, mm: docs/methods/sdf-car.md).")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu or cuda.")
QuietOpt = typer.Option(False, "--quiet", help="No progress bar.")
ResumeOpt = typer.Option(False, "--resume", help="Continue an interrupted run in --out (same settings and inputs).")
IterationsOpt = typer.Option(None, "--iterations", help="Optimisation steps (default: the preset's).")
TimeLimitOpt = typer.Option(None, "--time-limit", help="Stop after S seconds (checkpointed; --resume continues).")
NoAnalyzeOpt = typer.Option(False, "--no-analyze", help="Skip the vessel analysis at the end (centrelines, radii, "
                                                        "stenoses into OUT/analysis/; `vesselfield analyze`).")


def set_option(config_name: str):
    """The ``--set FIELD=VALUE ...`` option of a command whose method config is ``config_name``."""
    return typer.Option(None, "--set", help=f"Set any field of the {config_name} config, e.g. --set FIELD=VALUE "
                                            f"GROUP.FIELD=VALUE (`vesselfield config show {config_name}` lists them).")


def given(**values) -> dict:
    """The keyword arguments that were given (not None): the pipeline's own defaults hold for the rest."""
    return {k: v for k, v in values.items() if v is not None}


def build(cls, flags: dict, assignments) -> object:
    """A config of class ``cls`` from a command's flags (None = not given) and its ``--set`` items."""
    from vesselfield.config import build_config

    return build_config(cls, flags, assignments)


def echo_summary(summary, *, metrics: bool = True) -> None:
    """Print a :class:`~vesselfield.io.run_folder.RunSummary` the same way for every command:
    its lines, its metrics table, its warnings, then one ``wrote PATH`` per file."""
    for line in summary.lines:
        typer.echo(line)
    if metrics and summary.metrics:
        from vesselfield.metrics import format_metrics_table

        typer.echo(format_metrics_table({k: v for k, v in summary.metrics.items()
                                         if k not in ("seconds", "iterations")}))
    for warning in summary.warnings:
        typer.echo(f"warning: {warning}")
    for path in summary.files.values():
        typer.echo(f"wrote {path}")


# The words main() is running (sys.argv's, or those given to main() from Python).
_RUNNING: List[str] = []


def command_line() -> str:
    """The command line being run, as the user typed it (for benchmark and study headers)."""
    import shlex

    return shlex.join(["vesselfield", *_RUNNING])


# --------------------------------------------------------------------------------------- main
def expand_multi_value_options(args: List[str]) -> List[str]:
    """``--masks A B --out D`` -> ``--masks A --masks B --out D`` for :data:`MULTI_VALUE_OPTIONS`."""
    out: List[str] = []
    current = None
    for word in args:
        if word == "--":
            current = None
            out.append(word)
        elif word.startswith("-") and len(word) > 1 and not _is_number(word):
            current = word if word in MULTI_VALUE_OPTIONS else None
            out.append(word)
        elif current is not None and out and out[-1] != current:
            out += [current, word]
        else:
            out.append(word)
    return out


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the console script; returns the exit status when called from Python."""
    given = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    _RUNNING[:] = given
    args = expand_multi_value_options(given)
    try:
        app(args=args, prog_name="vesselfield", standalone_mode=False)
    except VesselfieldError as exc:
        typer.echo(f"error: {exc}", err=True)
        return _exit(2, argv)
    except FileNotFoundError as exc:
        typer.echo(f"error: file not found: {exc.filename or exc}", err=True)
        return _exit(2, argv)
    except OSError as exc:
        typer.echo(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
        return _exit(2, argv)
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        return _exit(130, argv)
    except typer.Exit as exc:  # --help and friends
        return _exit(exc.exit_code, argv)
    except Exception as exc:
        # Usage errors from typer's bundled click: report them in one line like ours.
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            message = exc.format_message()
            if message:  # an empty message follows a help page already printed (no arguments)
                typer.echo(f"error: {message} (see --help)", err=True)
            return _exit(2, argv)
        if type(exc).__name__ == "Abort":
            typer.echo("error: aborted", err=True)
            return _exit(1, argv)
        raise
    return _exit(0, argv)


def _exit(code: int, argv) -> int:
    # As a console script, exit with the status; from Python (argv given), return it.
    if argv is None:
        sys.exit(code)
    return code
