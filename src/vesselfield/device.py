"""Choosing a torch device: ``auto`` picks CUDA when present, else the CPU."""

from __future__ import annotations

from vesselfield.errors import VesselfieldError


def resolve_device(name: str = "auto"):
    """``"auto" | "cpu" | "cuda" | "cuda:N"`` -> ``torch.device``; a clear error if CUDA is absent."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise VesselfieldError("--device cuda was asked for but this torch has no CUDA device")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise VesselfieldError(f"unknown device {name!r}: use auto, cpu or cuda")
