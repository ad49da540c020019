"""The virtual controller's g-code block parser answers malformed blocks as GRBL does."""

from __future__ import annotations

import pytest

from drivers.sim.gcode_block import GcodeError, parse_block


def test_block_groups_and_words() -> None:
    block = parse_block("G90G1X1.5Y-2Z.25F600M3S700")
    assert block.g == {"distance": 90, "motion": 1}
    assert block.m == {"spindle": 3}
    assert block.axes == {"X": 1.5, "Y": -2.0, "Z": 0.25}
    assert block.words["F"] == 600.0 and block.words["S"] == 700.0


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("1G0", 1),  # no letter
        ("G", 2),  # no number
        ("GX", 2),
        ("G0G1", 21),  # same modal group twice
        ("X1X2", 25),  # repeated word
        ("F-1", 4),  # negative feed
        ("S-5", 4),
        ("G2X1", 20),  # arcs: not simulated
        ("G38.2Z-1", 20),  # probing: not simulated
        ("G1.5", 23),  # non-integer command
        ("M3.5", 23),
        ("E1", 20),  # unknown letter
        ("M6", 20),
        ("N99999999", 27),
        ("T300", 38),
    ],
)
def test_grbl_error_codes(line: str, code: int) -> None:
    with pytest.raises(GcodeError) as info:
        parse_block(line)
    assert info.value.code == code
