"""Options objects: flat keywords split into objects, unknown keywords named, values checked."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from featstore.errors import InvalidOptionError
from featstore.options import Options, build_options


@dataclass(frozen=True)
class _Decode(Options):
    resize: str = "squash"
    n_workers: int | None = None

    def check(self):
        if self.resize not in ("squash", "crop", "pad"):
            raise InvalidOptionError("resize", f"must be squash, crop or pad, not {self.resize!r}")
        return self


@dataclass(frozen=True)
class _Runtime(Options):
    batch_size: int | str = "auto"


def test_flat_keywords_become_objects_with_their_defaults():
    decode, runtime = build_options({"batch_size": 64, "resize": "crop"}, _Decode, _Runtime)
    assert decode == _Decode(resize="crop") and runtime == _Runtime(batch_size=64)
    assert _Decode.from_dict({**decode.to_dict(), "other": 1}) == decode


def test_unknown_keywords_and_bad_values_name_the_parameter():
    with pytest.raises(
        InvalidOptionError, match="batch: unknown option; valid ones: batch_size, n_workers, resize"
    ):
        build_options({"batch": 1}, _Decode, _Runtime)
    with pytest.raises(InvalidOptionError) as err:
        build_options({"resize": "zoom"}, _Decode)
    assert err.value.param == "resize" and str(err.value) == "resize: must be squash, crop or pad, not 'zoom'"


def test_one_rule_for_objects_and_keywords():
    from featstore.options import merge_options

    decode, runtime = merge_options({_Decode: _Decode(resize="pad"), _Runtime: None}, {"batch_size": 8})
    assert decode == _Decode(resize="pad") and runtime == _Runtime(batch_size=8)
    with pytest.raises(
        InvalidOptionError, match="^resize: given both as a keyword and in the _Decode object$"
    ):
        merge_options({_Decode: _Decode(), _Runtime: None}, {"resize": "crop"})
