"""Options objects: checked values named by their field, and the Store's keywords split into them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from featstore.api import split_keywords
from featstore.errors import InvalidOptionError
from featstore.options import Options, check_whole


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
    resize: str = "other"


def test_keywords_become_objects_with_their_defaults():
    decode, runtime, rest = split_keywords(
        {"batch_size": 64, "resize": "crop", "name": "x"}, _Decode, _Runtime, extra=["name"]
    )
    assert decode == _Decode(resize="crop") and runtime == _Runtime(batch_size=64) and rest == {"name": "x"}
    assert _Decode.from_dict({**decode.to_dict(), "other": 1}) == decode  # a name of two classes: the first's


def test_unknown_keywords_and_bad_values_name_the_parameter():
    with pytest.raises(
        InvalidOptionError, match="batch: unknown option; valid ones: batch_size, n_workers, resize"
    ):
        split_keywords({"batch": 1}, _Decode, _Runtime)
    with pytest.raises(InvalidOptionError) as err:
        split_keywords({"resize": "zoom"}, _Decode)
    assert err.value.param == "resize" and str(err.value) == "resize: must be squash, crop or pad, not 'zoom'"
    with pytest.raises(InvalidOptionError, match="^k: must be a whole number of at least 1, not True$"):
        check_whole("k", True, 1)
