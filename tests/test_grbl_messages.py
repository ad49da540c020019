"""Classifying GRBL 1.1 lines, and the error and alarm tables."""

from __future__ import annotations

import pytest

from drivers.errors import DeviceError
from drivers.stage.grbl_codes import ALARM_MEANINGS, ERROR_MEANINGS, GrblAlarm, GrblError
from drivers.stage.grbl_messages import (
    AlarmPush,
    Banner,
    ErrorReply,
    Feedback,
    Ok,
    SettingLine,
    StatusReport,
    Unknown,
    clean,
    parse_line,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ok", Ok()),
        ("error:22", ErrorReply(22)),
        ("ALARM:9", AlarmPush(9)),
        ("[MSG:'$H'|'$X' to unlock]", Feedback("MSG", "'$H'|'$X' to unlock")),
        (
            "[GC:G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0]",
            Feedback("GC", "G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0"),
        ),
        ("$110=600.000", SettingLine(110, 600.0)),
        ("$32=1", SettingLine(32, 1.0)),
        ("error:x", Unknown("error:x")),
        ("ALARM:", Unknown("ALARM:")),
        ("$abc=1", Unknown("$abc=1")),
        ("okay", Unknown("okay")),
        ("Grbl is great", Unknown("Grbl is great")),
    ],
)
def test_line_kinds(text: str, expected: object) -> None:
    assert parse_line(text) == expected


@pytest.mark.parametrize(
    ("text", "version", "is_v1_1"),
    [
        ("Grbl 1.1h ['$' for help]", "1.1h", True),
        ("Grbl 1.1f ['$' for help]", "1.1f", True),
        ("GrblHAL 1.1f ['$' or '$HELP' for help]", "1.1f", True),
        ("Grbl 0.9j ['$' for help]", "0.9j", False),
    ],
)
def test_banners(text: str, version: str, is_v1_1: bool) -> None:
    banner = parse_line(text)
    assert isinstance(banner, Banner)
    assert banner.version == version
    assert banner.is_v1_1 is is_v1_1


def test_status_report_with_machine_position() -> None:
    report = parse_line("<Idle|MPos:1.000,-2.500,0.125|FS:0,700|WCO:0.000,0.000,0.000>")
    assert report == StatusReport(
        "Idle", None, (1.0, -2.5, 0.125), None, (0.0, 0.0, 0.0), 0.0, 700.0
    )


def test_status_report_with_work_position_and_substate() -> None:
    report = parse_line("<Hold:0|WPos:5.000,6.000,7.000|Bf:15,128|FS:0,0|Ov:100,100,100>")
    assert isinstance(report, StatusReport)
    assert (report.state, report.substate) == ("Hold", 0)
    assert report.wpos == (5.0, 6.0, 7.0) and report.mpos is None


def test_status_report_of_a_build_with_more_axes_and_no_spindle() -> None:
    report = parse_line("<Run|MPos:1.000,2.000,3.000,4.000|F:500>")
    assert isinstance(report, StatusReport)
    assert report.mpos == (1.0, 2.0, 3.0) and report.feed == 500.0


@pytest.mark.parametrize(
    "text",
    [
        "<Dancing|MPos:0,0,0>",
        "<Idle|MPos:1,2>",
        "<Idle|MPos:a,b,c>",
        "<Idle|MPos:nan,0,0>",
        "<Idle|FS:0,0>",
        "<Idle|MPos:0,0,0|FS:1>",
        "<Idle|MPos0,0,0>",
        "<Hold:x|MPos:0,0,0>",
    ],
)
def test_malformed_status_reports_are_not_trusted(text: str) -> None:
    assert isinstance(parse_line(text), Unknown)


def test_clean_keeps_printable_ascii_only() -> None:
    assert clean(b"\x00\xff\xfeok") == "ok"
    assert clean(b"  <Idle|MPos:0.000,0.000,0.000|FS:0,0>\x07") == (
        "<Idle|MPos:0.000,0.000,0.000|FS:0,0>"
    )
    assert clean(b"\x80\x81\x82") == ""


def test_tables_cover_grbl_1_1() -> None:
    assert set(ERROR_MEANINGS) == set(range(1, 18)) | set(range(20, 39))
    assert set(ALARM_MEANINGS) == set(range(1, 11))


def test_errors_speak_plain_words() -> None:
    alarm = GrblAlarm(9)
    assert str(alarm).startswith("ALARM:9 homing failed: limit switch not found")
    assert isinstance(alarm, DeviceError) and not alarm.critical
    assert GrblAlarm(2).critical
    error = GrblError(22, "G1 X1", "/dev/ttyACM0")
    assert "error:22 feed rate not set" in str(error)
    assert "'G1 X1'" in str(error) and "/dev/ttyACM0" in str(error)
    assert "unknown" in str(GrblError(99, "G1"))
