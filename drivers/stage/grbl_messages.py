"""Classify the lines a GRBL 1.1 controller sends, without any I/O.

Pure functions so the protocol rules are tested apart from serial timing. Positions
stay in the controller's unit (mm, or inches when ``$13=1``); the driver converts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BANNER_RE = re.compile(r"^Grbl(?P<hal>HAL)?\s+(?P<version>\d+\.\d+[a-z]?)\b(?P<rest>.*)$")
"""``Grbl 1.1h ['$' for help]`` (also grblHAL's ``GrblHAL 1.1f ['$' or '$HELP' for help]``)."""

_STATE_NAMES = frozenset({"Idle", "Run", "Hold", "Jog", "Alarm", "Door", "Check", "Home", "Sleep"})

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Ok:
    """``ok``: the last line was accepted."""


@dataclass(frozen=True)
class ErrorReply:
    """``error:N``: the last line was refused."""

    code: int


@dataclass(frozen=True)
class AlarmPush:
    """``ALARM:N``: the controller entered an alarm (pushed at any time)."""

    code: int


@dataclass(frozen=True)
class Banner:
    """The start-up line printed at power-up and after every soft reset."""

    version: str
    """Version as printed, e.g. ``1.1h``."""
    text: str

    @property
    def is_v1_1(self) -> bool:
        return self.version.startswith("1.1")


@dataclass(frozen=True)
class Feedback:
    """A bracketed push or data line: ``[MSG:...]``, ``[GC:...]``, ``[VER:...]``, ``[HLP:...]``."""

    kind: str
    text: str


@dataclass(frozen=True)
class SettingLine:
    """One ``$N=value`` line of a ``$$`` listing."""

    number: int
    value: float


@dataclass(frozen=True)
class StatusReport:
    """A ``<State|MPos:...|FS:...>`` real-time status report."""

    state: str
    """Idle, Run, Hold, Jog, Alarm, Door, Check, Home or Sleep."""
    substate: int | None
    """The number after ``Hold:``/``Door:``, else None."""
    mpos: Vec3 | None
    wpos: Vec3 | None
    wco: Vec3 | None
    feed: float | None
    """Current feed rate (per minute, controller units)."""
    spindle: float | None


@dataclass(frozen=True)
class Unknown:
    """Anything else: noise, an unsupported firmware's chatter. Logged and skipped."""

    text: str


Message = Ok | ErrorReply | AlarmPush | Banner | Feedback | SettingLine | StatusReport | Unknown


def clean(raw: bytes) -> str:
    """The printable-ASCII content of a received line.

    GRBL only sends printable ASCII, so anything else is line noise; dropping it lets an
    ``ok`` glued to a burst of garbage still be recognised.
    """
    return bytes(b for b in raw if 0x20 <= b < 0x7F).decode("ascii").strip()


def parse_line(text: str) -> Message:
    """Classify one received line (already passed through ``clean``)."""
    if text == "ok":
        return Ok()
    if text.startswith("error:"):
        code = _int(text[6:])
        return ErrorReply(code) if code is not None else Unknown(text)
    if text.startswith("ALARM:"):
        code = _int(text[6:])
        return AlarmPush(code) if code is not None else Unknown(text)
    if text.startswith("<") and text.endswith(">"):
        report = parse_status(text)
        return report if report is not None else Unknown(text)
    if text.startswith("[") and text.endswith("]") and ":" in text:
        kind, _, body = text[1:-1].partition(":")
        return Feedback(kind, body)
    if text.startswith("$"):
        number, eq, value = text[1:].partition("=")
        n = _int(number)
        v = _float(value) if eq else None
        if n is not None and v is not None:
            return SettingLine(n, v)
        return Unknown(text)
    banner = BANNER_RE.match(text)
    if banner is not None and "help" in banner.group("rest"):
        return Banner(banner.group("version"), text)
    return Unknown(text)


def parse_status(text: str) -> StatusReport | None:
    """Parse ``<...>``; None when it is malformed (a lying serial line is not trusted)."""
    fields = text[1:-1].split("|")
    state, _, sub = fields[0].partition(":")
    if state not in _STATE_NAMES:
        return None
    substate = _int(sub) if sub else None
    if sub and substate is None:
        return None
    values: dict[str, str] = {}
    for field in fields[1:]:
        key, sep, value = field.partition(":")
        if not sep:
            return None
        values[key] = value
    mpos = _vec(values["MPos"]) if "MPos" in values else None
    wpos = _vec(values["WPos"]) if "WPos" in values else None
    wco = _vec(values["WCO"]) if "WCO" in values else None
    if ("MPos" in values and mpos is None) or ("WPos" in values and wpos is None):
        return None
    if "WCO" in values and wco is None:
        return None
    if mpos is None and wpos is None:
        return None
    feed = spindle = None
    if "FS" in values:
        fs = [_float(v) for v in values["FS"].split(",")]
        if len(fs) != 2 or None in fs:
            return None
        feed, spindle = fs
    elif "F" in values:
        feed = _float(values["F"])
    return StatusReport(state, substate, mpos, wpos, wco, feed, spindle)


def _vec(text: str) -> Vec3 | None:
    """The first three axes of ``x,y,z[,a...]`` (builds with more axes report more)."""
    parts = [_float(p) for p in text.split(",")]
    if len(parts) < 3:
        return None
    x, y, z = parts[:3]
    if x is None or y is None or z is None:
        return None
    return (x, y, z)


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    # float() accepts 'nan', 'inf' and '1e3'; GRBL never prints them.
    if not re.fullmatch(r"[+-]?\d+(\.\d*)?|[+-]?\.\d+", text.strip()):
        return None
    return value
