"""The shared argparse types: every bad value is an ArgumentTypeError (one line, exit 2), never a traceback."""

from __future__ import annotations

import argparse

import pytest

from rerank_export.commands._common import max_length_int, port_int, seed_int, size_bytes, text_arg


@pytest.mark.parametrize("parse, text, expected", [
    (port_int, "8000", 8000), (port_int, "0", 0), (port_int, "65535", 65535),
    (max_length_int, "8192", 8192), (seed_int, "4294967295", 2**32 - 1),
    (size_bytes, "8MiB", 8 * 2**20), (size_bytes, "1.5g", 1_500_000_000), (text_arg, "café 北京", "café 北京"),
])
def test_good_values(parse, text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize("parse, text, fragment", [
    (port_int, "80000", "from 0 to 65535"), (port_int, "-1", "from 0 to 65535"), (port_int, "http", "an integer"),
    (port_int, "9" * 5000, "an integer port, got '9999"),  # past Python's int digit limit
    (max_length_int, "0", "from 1 to 1048576"), (max_length_int, "9" * 400, "(400 characters)"),
    (seed_int, "-1", "from 0 to 4294967295"),
    (size_bytes, "9" * 400, "is too large"), (size_bytes, "1e400", "is not a size"),
    (size_bytes, "0", "is not a size"), (size_bytes, "0.1", "is not a size"), (size_bytes, "-5MiB", "is not a size"),
    (text_arg, "a\ud800b", "not valid UTF-8 (at character 1)"),
])
def test_bad_values_are_one_line_argument_errors(parse, text, fragment):
    with pytest.raises(argparse.ArgumentTypeError) as exc:
        parse(text)
    assert fragment in str(exc.value) and "\n" not in str(exc.value) and len(str(exc.value)) < 200
