"""Split one g-code block into GRBL's command groups and value words, with GRBL's errors.

The rules and error numbers follow step 1 of GRBL 1.1's ``gc_execute_line``; checks
that depend on the modal state (feed defined, axis words used) are the controller's.
Input is a line as GRBL's line reader leaves it: upper case, no spaces, no comments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_VALUE_LETTERS = frozenset("FIJKLNPRSTXYZ")
_NON_NEGATIVE = frozenset("FNPST")
_MAX_LINE_NUMBER = 10_000_000
_MAX_TOOL_NUMBER = 255

# Supported G codes by modal group; codes GRBL knows but the simulator does not run
# (arcs, probing, offsets, inverse time) are refused with error:20.
_G_GROUPS: dict[int, str] = {
    0: "motion",
    1: "motion",
    80: "motion",
    4: "non_modal",
    53: "non_modal",
    17: "plane",
    18: "plane",
    19: "plane",
    20: "units",
    21: "units",
    90: "distance",
    91: "distance",
    94: "feed_mode",
    40: "cutter_comp",
    49: "tool_length",
    54: "coord",
    55: "coord",
    56: "coord",
    57: "coord",
    58: "coord",
    59: "coord",
    61: "control",
}
_M_GROUPS: dict[int, str] = {
    0: "stopping",
    1: "stopping",
    2: "stopping",
    30: "stopping",
    3: "spindle",
    4: "spindle",
    5: "spindle",
    7: "coolant",
    8: "coolant",
    9: "coolant",
}


class GcodeError(Exception):
    """A block GRBL would answer with ``error:code``."""

    def __init__(self, code: int) -> None:
        super().__init__(f"error:{code}")
        self.code = code


@dataclass
class Block:
    """One parsed block: the command chosen in each modal group, and the value words."""

    g: dict[str, int] = field(default_factory=dict)
    """Modal group name -> G number (``non_modal`` holds 4 or 53)."""
    m: dict[str, int] = field(default_factory=dict)
    words: dict[str, float] = field(default_factory=dict)

    @property
    def axes(self) -> dict[str, float]:
        return {k: v for k, v in self.words.items() if k in "XYZ"}


def parse_block(line: str) -> Block:
    """Parse a block; raises ``GcodeError`` with GRBL's number for a malformed one."""
    block = Block()
    i = 0
    while i < len(line):
        letter = line[i]
        if not "A" <= letter <= "Z":
            raise GcodeError(1)
        number = _NUMBER.match(line, i + 1)
        if number is None:
            raise GcodeError(2)
        i = number.end()
        value = float(number.group())
        integer = int(value)
        fraction = round(100 * (value - integer))
        if letter == "G":
            _command(block.g, _G_GROUPS, integer, fraction)
        elif letter == "M":
            _command(block.m, _M_GROUPS, integer, fraction)
        elif letter in _VALUE_LETTERS:
            if letter in block.words:
                raise GcodeError(25)
            if letter in _NON_NEGATIVE and value < 0:
                raise GcodeError(4)
            if letter == "N" and value > _MAX_LINE_NUMBER:
                raise GcodeError(27)
            if letter == "T" and value > _MAX_TOOL_NUMBER:
                raise GcodeError(38)
            block.words[letter] = value
        else:
            raise GcodeError(20)
    return block


def _command(chosen: dict[str, int], groups: dict[int, str], integer: int, fraction: int) -> None:
    group = groups.get(integer)
    if group is None or integer < 0:
        raise GcodeError(20)
    if fraction != 0:
        raise GcodeError(23)
    if group in chosen:
        raise GcodeError(21)
    chosen[group] = integer
