from dataclasses import dataclass
from typing import Literal

import pytest

from modelpress.config import check, parse, to_dict
from modelpress.errors import ConfigError


@dataclass(frozen=True)
class Demo:
    ratio: float = 0.5
    bits: int = 8
    mode: Literal["static", "dynamic"] = "static"
    layers: tuple[str, ...] = ()
    enabled: bool = True
    limit: float | None = None

    def __post_init__(self):
        check(0 <= self.ratio < 1, f"ratio must be in [0, 1), got {self.ratio}")


def test_parse_defaults_and_values():
    d = parse(Demo, {"ratio": 0, "layers": ["a", "b"], "limit": 3}, "demo")
    assert d == Demo(ratio=0.0, layers=("a", "b"), limit=3.0)
    assert isinstance(d.ratio, float)
    assert parse(Demo, None, "demo") == Demo()


def test_unknown_key_names_closest_and_valid_keys():
    with pytest.raises(ConfigError) as e:
        parse(Demo, {"ratoi": 0.3}, "demo")
    msg = str(e.value)
    assert "ratoi" in msg and "Did you mean 'ratio'" in msg and "bits" in msg


@pytest.mark.parametrize("data, needle", [
    ({"bits": "8"}, "whole number"), ({"bits": 8.5}, "whole number"), ({"bits": True}, "whole number"),
    ({"enabled": 1}, "true or false"), ({"mode": "statc"}, "Did you mean 'static'"),
    ({"layers": "conv1"}, "must be a list"), ({"ratio": 1.5}, "ratio must be in [0, 1)"),
    ({"ratio": "half"}, "must be a number"),
])
def test_bad_values_are_clear(data, needle):
    with pytest.raises(ConfigError, match=None) as e:
        parse(Demo, data, "demo")
    assert needle in str(e.value)


def test_not_a_mapping():
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse(Demo, [1, 2], "demo")


def test_round_trip():
    d = Demo(ratio=0.25, layers=("x",), mode="dynamic")
    assert parse(Demo, to_dict(d), "demo") == d
