"""vesselfield.config: field documentation, --set parsing, configs built from flags and saved dicts."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import ClassVar, Literal

import pytest

from vesselfield.config import (
    build_config,
    config_arguments,
    describe_config,
    field_docs,
    format_value,
    parse_assignments,
    parse_value,
)
from vesselfield.errors import VesselfieldError


@dataclasses.dataclass
class Toy:
    """A config with one field of every kind the parser handles."""

    key_fields: ClassVar[tuple] = ("preset",)

    preset: Literal["small", "big"] = "small"
    """small or big."""
    width: int | None = None
    """Hidden width. None: the preset's (small 8, big 64)."""
    rate: float = 1e-3
    """A learning rate."""
    limit_s: float | None = None
    """A time limit; None: none."""
    flag: bool = False
    """A switch."""
    name: str = "x"
    """Free text."""
    shape: tuple[int, int, int] = (1, 2, 3)
    """Three integers."""

    def __post_init__(self):
        if self.width is None:
            self.width = 8 if self.preset == "small" else 64


def test_field_docs_are_the_strings_under_the_fields():
    docs = field_docs(Toy)
    assert docs["preset"] == "small or big."
    assert docs["width"] == "Hidden width. None: the preset's (small 8, big 64)."
    assert set(docs) == {f.name for f in dataclasses.fields(Toy)}


@pytest.mark.parametrize("name, text, value", [
    ("width", "12", 12),
    ("width", "none", None),
    ("width", "3e2", 300),
    ("rate", "1e-3", 1e-3),  # YAML would read this as a string; we read a float
    ("rate", "2", 2.0),
    ("limit_s", "null", None),
    ("flag", "yes", True),
    ("flag", "False", False),
    ("name", "none", "none"),  # not optional: the text itself
    ("shape", "4,5,6", (4, 5, 6)),
    ("preset", "big", "big"),
])
def test_parse_value_reads_command_line_text_by_field_type(name, text, value):
    got = parse_value(Toy, name, text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("name, text, message", [
    ("width", "2.5", "width must be an integer"),
    ("width", "abc", "width must be an integer"),
    ("rate", "fast", "rate must be a number"),
    ("flag", "maybe", "flag must be true or false"),
    ("preset", "huge", "unknown preset 'huge': use one of small, big"),
    ("shape", "1,2", "shape needs 3 values"),
    ("rat", "1", "has no field 'rat' (did you mean rate?)"),
])
def test_parse_value_errors_name_the_problem(name, text, message):
    with pytest.raises(VesselfieldError, match=re.escape(message)):
        parse_value(Toy, name, text)


def test_parse_assignments_and_build_config():
    assert parse_assignments(["a=1", "b-c=x=y"]) == {"a": "1", "b_c": "x=y"}
    for bad, message in ((["a"], "FIELD=VALUE"), (["=1"], "FIELD=VALUE"), (["a=1", "a=2"], "gives a twice")):
        with pytest.raises(VesselfieldError, match=message):
            parse_assignments(bad)
    c = build_config(Toy, {"preset": "big", "rate": None}, ["rate=0.5", "shape=7,8,9"])
    assert (c.preset, c.width, c.rate, c.shape) == ("big", 64, 0.5, (7, 8, 9))
    # The same field from a flag and from --set: equal values are fine, different ones an error.
    assert build_config(Toy, {"rate": 0.5}, ["rate=0.5"]).rate == 0.5
    with pytest.raises(VesselfieldError, match="rate is given twice"):
        build_config(Toy, {"rate": 0.25}, ["rate=0.5"])
    # A saved dict (YAML: lists for tuples, ints for floats) builds the same config.
    assert build_config(Toy, {"preset": "big", "width": 64, "rate": 1, "shape": [7, 8, 9]}) == \
        build_config(Toy, {"preset": "big", "rate": 1.0, "shape": (7, 8, 9)})


def test_config_arguments_rebuild_the_config_and_skip_preset_values():
    c = build_config(Toy, {"preset": "big", "rate": 0.1, "limit_s": 2.5, "flag": True, "shape": (4, 5, 6)})
    words = config_arguments(c)
    # Key fields first; the preset's own width (64) is not repeated.
    assert words[:2] == ["--set", "preset=big"] and "width=64" not in " ".join(words)
    assert build_config(Toy, None, words[1::2]) == c
    # Floats are written so that they read back exactly.
    third = build_config(Toy, {"rate": 1 / 3})
    assert build_config(Toy, None, config_arguments(third)[1::2]).rate == 1 / 3
    assert format_value(None) == "none" and format_value(True) == "true" and format_value(math.pi) == repr(math.pi)


def test_describe_config_lists_every_field_with_its_value_and_doc():
    text = describe_config(Toy, preset="big")
    assert "width = 64    (int | None)" in text and "Hidden width." in text
    assert all(f"{f.name} = " in text for f in dataclasses.fields(Toy))


def test_the_method_configs_document_every_field():
    """Every field of every method's config has its documentation (it is its --help)."""
    from vesselfield.methods.implicit_vessel import BlendConfig, ImplicitVesselConfig
    from vesselfield.methods.sdf_car import SdfCarConfig
    from vesselfield.training import TrainerConfig

    for cls in (SdfCarConfig, ImplicitVesselConfig, BlendConfig, TrainerConfig):
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not missing, (cls.__name__, missing)
        # Every field can be set from the command line: --set parses each one's current value back.
        config = cls()
        for f in dataclasses.fields(cls):
            assert parse_value(cls, f.name, format_value(getattr(config, f.name))) == getattr(config, f.name)


@dataclasses.dataclass
class Outer:
    """A method config holding a nested group (as a supervised method holds its TrainerConfig)."""

    rate: float = 0.5
    """A rate."""
    toy: Toy = dataclasses.field(default_factory=Toy)
    """The toy's settings."""


def test_nested_groups_are_set_with_dotted_names_and_round_trip():
    c = build_config(Outer, None, ["toy.preset=big", "toy.rate=0.25", "rate=2"])
    assert (c.rate, c.toy.preset, c.toy.width, c.toy.rate) == (2.0, "big", 64, 0.25)
    # The command that rebuilds it names the nested fields with their group, and a saved dict
    # (config.yaml) rebuilds the same config.
    words = config_arguments(c)
    assert "toy.preset=big" in words and "toy.rate=0.25" in words
    assert build_config(Outer, None, words[1::2]) == c
    from vesselfield.config import config_to_dict

    saved = config_to_dict(c)
    assert saved["toy"]["shape"] == [1, 2, 3] and build_config(Outer, saved) == c
    assert "toy.width = 64" in describe_config(c)
    with pytest.raises(VesselfieldError, match=re.escape("Toy has no field 'widht' (did you mean width?)")):
        build_config(Outer, None, ["toy.widht=3"])
    with pytest.raises(VesselfieldError, match="set its fields with --set toy.FIELD=VALUE"):
        build_config(Outer, None, ["toy=big"])
    with pytest.raises(VesselfieldError, match="rate is not a group"):
        build_config(Outer, None, ["rate.x=1"])


def test_check_numbers_wants_integers_in_integer_fields():
    from vesselfield.config import check_numbers
    from vesselfield.training import TrainerConfig

    with pytest.raises(VesselfieldError, match="epochs must be a non-negative integer, got 2.5"):
        TrainerConfig(epochs=2.5)
    with pytest.raises(VesselfieldError, match="seed must be a non-negative integer, got -1"):
        TrainerConfig(seed=-1)
    check_numbers(Toy(rate=2), positive=("rate", "width"))  # an int in a float field is fine
    with pytest.raises(VesselfieldError, match=r"rate \(--rate\) must be a positive number"):
        check_numbers(Toy(rate=0.0), positive=("rate",), flags={"rate": "--rate"})
