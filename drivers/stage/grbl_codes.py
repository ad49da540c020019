"""GRBL v1.1 error and alarm codes in plain words, and the exceptions that carry them.

GRBL 1.1 answers ``error:N`` and pushes ``ALARM:N`` with numbers only; an operator
needs the meaning, so every exception message spells it out. The tables follow the
GRBL 1.1 documentation (``doc/csv/error_codes_en_US.csv`` and ``alarm_codes_en_US.csv``),
reworded.
"""

from __future__ import annotations

from drivers.errors import DeviceError

ERROR_MEANINGS: dict[int, str] = {
    1: "expected a command letter: a g-code word is a letter followed by a value",
    2: "bad number format: a value is missing or is not a valid number",
    3: "invalid statement: the '$' system command is not recognised or supported",
    4: "negative value received where a positive one is expected",
    5: "homing is not enabled in the controller settings ($22=0)",
    6: "step pulse time must be at least 3 microseconds ($0)",
    7: "settings memory (EEPROM) read failed; defaults were restored",
    8: "'$' command refused because the controller is not idle (moving or in hold)",
    9: "g-code is locked out during an alarm or a jog: home the stage or unlock it ($X)",
    10: "soft limits cannot be enabled without homing ($22)",
    11: "line too long: the controller accepts at most 80 characters, the line was not run",
    12: "setting would make the step rate exceed the supported maximum (30 kHz)",
    13: "safety door is open",
    14: "build info or startup line too long to store",
    15: "jog target exceeds the machine travel; the jog was ignored",
    16: "invalid jog command: '=' missing or a forbidden g-code in the jog",
    17: "laser mode needs a PWM spindle output",
    20: "unsupported or invalid g-code command in the block",
    21: "more than one g-code command from the same modal group in the block",
    22: "feed rate not set or undefined",
    23: "the g-code command in the block needs an integer value",
    24: "more than one g-code command in the block needs axis words",
    25: "a g-code word is repeated in the block",
    26: "no axis words in a block whose command or modal state needs them",
    27: "line number value is invalid",
    28: "the g-code command is missing a required value word (e.g. P for G4)",
    29: "G59.x work coordinate systems are not supported",
    30: "G53 is only allowed with G0 and G1 motion modes",
    31: "axis words found in a block where no command or modal state uses them",
    32: "G2/G3 arcs need at least one in-plane axis word",
    33: "motion command target is invalid",
    34: "arc radius value is invalid",
    35: "G2/G3 arcs need at least one in-plane offset word",
    36: "unused value words found in the block",
    37: "G43.1 dynamic tool length offset is not assigned to the tool length axis",
    38: "tool number greater than the maximum supported",
}
"""GRBL 1.1 ``error:N`` codes (18 and 19 are unused by GRBL)."""

ALARM_MEANINGS: dict[int, str] = {
    1: "hard limit: a limit switch was hit; machine position is likely lost, home again",
    2: "soft limit: the motion target exceeds the machine travel; position kept, unlock or reset",
    3: "reset while in motion: machine position is likely lost, home again",
    4: "probe fail: the probe was not in the expected state before the probing cycle",
    5: "probe fail: the probe did not touch within the programmed travel",
    6: "homing failed: the homing cycle was reset",
    7: "homing failed: the safety door was opened during homing",
    8: "homing failed: pull-off did not clear the limit switch (raise pull-off $27 or check wiring)",
    9: "homing failed: limit switch not found within the search distance (check the switch "
    "wiring, or raise max travel $130-$132 / lower pull-off $27)",
    10: "homing failed: the second switch of a dual-motor axis was not found",
}
"""GRBL 1.1 ``ALARM:N`` codes (10 exists from 1.1h on dual-axis builds)."""

CRITICAL_ALARMS = frozenset({1, 2})
"""Alarms after which GRBL ignores every line until it receives a soft reset."""

SETTING_NAMES: dict[int, str] = {
    0: "step pulse time (us)",
    1: "step idle delay (ms)",
    2: "step pulse invert mask",
    3: "direction invert mask",
    4: "step enable invert",
    5: "limit pins invert",
    6: "probe pin invert",
    10: "status report options",
    11: "junction deviation (mm)",
    12: "arc tolerance (mm)",
    13: "report in inches",
    20: "soft limits enable",
    21: "hard limits enable",
    22: "homing cycle enable",
    23: "homing direction invert mask",
    24: "homing locate feed rate (mm/min)",
    25: "homing search seek rate (mm/min)",
    26: "homing switch debounce delay (ms)",
    27: "homing switch pull-off distance (mm)",
    30: "maximum spindle speed (S value of full PWM)",
    31: "minimum spindle speed",
    32: "laser mode enable",
    100: "X steps/mm",
    101: "Y steps/mm",
    102: "Z steps/mm",
    110: "X maximum rate (mm/min)",
    111: "Y maximum rate (mm/min)",
    112: "Z maximum rate (mm/min)",
    120: "X acceleration (mm/s^2)",
    121: "Y acceleration (mm/s^2)",
    122: "Z acceleration (mm/s^2)",
    130: "X maximum travel (mm)",
    131: "Y maximum travel (mm)",
    132: "Z maximum travel (mm)",
}
"""Names of the GRBL 1.1 ``$N`` settings, for log lines and messages."""


def error_meaning(code: int) -> str:
    """Plain words for ``error:code``."""
    return ERROR_MEANINGS.get(code, "unknown error code (not in the GRBL 1.1 table)")


def alarm_meaning(code: int) -> str:
    """Plain words for ``ALARM:code``."""
    return ALARM_MEANINGS.get(code, "unknown alarm code (not in the GRBL 1.1 table)")


class GrblError(DeviceError):
    """The controller refused a line with ``error:N``.

    Attributes:
        code: GRBL's error number.
        command: the line that was refused (without its newline).
    """

    def __init__(self, code: int, command: str, port: str = "") -> None:
        self.code = code
        self.command = command
        where = f" on {port}" if port else ""
        super().__init__(
            f"stage controller{where} refused {command!r}: error:{code} {error_meaning(code)}"
        )


class GrblAlarm(DeviceError):
    """The controller entered an alarm (``ALARM:N``): motion is locked until homed or unlocked.

    Attributes:
        code: GRBL's alarm number.
    """

    def __init__(self, code: int, context: str = "") -> None:
        self.code = code
        suffix = f" ({context})" if context else ""
        super().__init__(f"ALARM:{code} {alarm_meaning(code)}{suffix}")

    @property
    def critical(self) -> bool:
        """Whether GRBL needs a soft reset before it accepts any line again."""
        return self.code in CRITICAL_ALARMS
