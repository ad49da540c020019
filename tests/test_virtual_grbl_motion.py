"""The virtual stage's motion model, checked against the kinematics worked out by hand."""

from __future__ import annotations

import math

import pytest

from drivers.sim.controller_config import VirtualControllerConfig
from drivers.sim.motion import (
    AxisKinematics,
    MotionQueue,
    Move,
    Trapezoid,
    line_profile,
    move_duration,
)


def _default_kinematics() -> AxisKinematics:
    t = VirtualControllerConfig()
    return AxisKinematics(
        max_speed=(t.xy_max_speed_mm_s, t.xy_max_speed_mm_s, t.z_max_speed_mm_s),
        accel=(t.xy_accel_mm_s2, t.xy_accel_mm_s2, t.z_accel_mm_s2),
    )


def test_default_10_mm_x_move_takes_1_2_s() -> None:
    # 10 mm/s reached after 0.2 s and 1 mm; 8 mm cruise (0.8 s); 0.2 s to stop.
    assert move_duration((0, 0, 0), (10, 0, 0), _default_kinematics()) == pytest.approx(1.2)


def test_default_z_move_is_slow() -> None:
    # 1 mm/s reached after 0.1 s and 0.05 mm; 0.9 mm cruise; 0.1 s to stop.
    assert move_duration((0, 0, 0), (0, 0, 1), _default_kinematics()) == pytest.approx(1.1)


def test_trapezoid_phases() -> None:
    p = Trapezoid(length=10.0, max_speed=10.0, accel=50.0)
    assert (p.t_accel, p.t_cruise, p.t_decel) == pytest.approx((0.2, 0.8, 0.2))
    assert p.distance_at(0.2) == pytest.approx(1.0)
    assert p.distance_at(0.6) == pytest.approx(5.0)
    assert p.distance_at(1.1) == pytest.approx(10.0 - 0.25)
    assert p.distance_at(5.0) == 10.0
    assert p.speed_at(0.1) == pytest.approx(5.0)
    assert p.speed_at(0.5) == pytest.approx(10.0)
    assert p.speed_at(2.0) == 0.0


def test_short_move_never_reaches_full_speed() -> None:
    p = Trapezoid(length=1.0, max_speed=10.0, accel=50.0)
    assert p.peak == pytest.approx(math.sqrt(50.0))
    assert p.duration == pytest.approx(2 * math.sqrt(1.0 / 50.0))
    assert p.t_cruise == 0.0


def test_diagonal_move_is_capped_per_axis() -> None:
    # Like GRBL: each axis may go 10 mm/s, so a 45-degree path may go 10*sqrt(2) mm/s.
    kin = AxisKinematics(max_speed=(10.0, 10.0, 1.0), accel=(50.0, 50.0, 10.0))
    profile = line_profile((0, 0, 0), (10, 10, 0), kin)
    assert profile is not None
    assert profile.max_speed == pytest.approx(10.0 * math.sqrt(2))
    assert profile.accel == pytest.approx(50.0 * math.sqrt(2))


def test_z_component_slows_the_whole_path() -> None:
    kin = _default_kinematics()
    profile = line_profile((0, 0, 0), (3, 0, 4), kin)
    assert profile is not None
    assert profile.max_speed == pytest.approx(1.0 / 0.8)  # Z share 4/5 at 1 mm/s


def test_feed_caps_the_path_speed() -> None:
    profile = line_profile((0, 0, 0), (10, 0, 0), _default_kinematics(), feed_mm_s=2.0)
    assert profile is not None
    assert profile.max_speed == 2.0


def test_zero_length_move_is_not_planned() -> None:
    assert line_profile((1, 2, 3), (1, 2, 3), _default_kinematics()) is None


def _move(start: tuple[float, float, float], end: tuple[float, float, float]) -> Move:
    profile = line_profile(start, end, _default_kinematics())
    assert profile is not None
    return Move(start, end, profile, "line", settle_s=0.05)


def test_queue_interpolates_and_chains_moves_with_settling() -> None:
    q = MotionQueue((0.0, 0.0, 0.0))
    q.enqueue(_move((0, 0, 0), (10, 0, 0)), now=100.0)
    q.enqueue(_move((10, 0, 0), (10, 10, 0)), now=100.0)
    assert q.pending(100.0) == 2
    assert q.position(100.6) == pytest.approx((5.0, 0.0, 0.0))
    assert q.position(101.2) == pytest.approx((10.0, 0.0, 0.0))
    assert q.busy(101.22)  # settling
    assert q.moving(101.22) is False
    # The second move starts when the first has settled (1.25 s) and lasts 1.2 s.
    assert q.position(101.25 + 0.6) == pytest.approx((10.0, 5.0, 0.0))
    assert q.position(102.5) == pytest.approx((10.0, 10.0, 0.0))
    assert q.pending(102.5) == 0
    assert not q.busy(102.5)


def test_feed_hold_decelerates_and_resume_finishes_the_move() -> None:
    q = MotionQueue((0.0, 0.0, 0.0))
    q.enqueue(_move((0, 0, 0), (10, 0, 0)), now=0.0)
    q.feed_hold(0.6)  # at 5 mm, cruising at 10 mm/s: stops 1 mm later, 0.2 s later
    assert q.held and not q.hold_complete(0.7)
    assert q.hold_complete(0.8)
    assert q.position(5.0) == pytest.approx((6.0, 0.0, 0.0))
    assert q.pending(5.0) == 1  # the rest of the move waits
    assert q.resume(5.0)
    assert q.position(5.0 + 2.0) == pytest.approx((10.0, 0.0, 0.0))


def test_cancel_stops_like_a_hold_and_forgets_the_rest() -> None:
    q = MotionQueue((0.0, 0.0, 0.0))
    q.enqueue(_move((0, 0, 0), (10, 0, 0)), now=0.0)
    q.enqueue(_move((10, 0, 0), (20, 0, 0)), now=0.0)
    rest = q.cancel(0.6)
    assert rest == pytest.approx((6.0, 0.0, 0.0))
    assert q.position(3.0) == pytest.approx((6.0, 0.0, 0.0))
    assert q.pending(3.0) == 0 and not q.held


def test_halt_stops_dead() -> None:
    q = MotionQueue((0.0, 0.0, 0.0))
    q.enqueue(_move((0, 0, 0), (10, 0, 0)), now=0.0)
    assert q.halt(0.6) == pytest.approx((5.0, 0.0, 0.0))
    assert q.position(9.0) == pytest.approx((5.0, 0.0, 0.0))


def test_hold_while_idle_is_complete_at_once() -> None:
    q = MotionQueue((1.0, 2.0, 3.0))
    q.feed_hold(0.0)
    assert q.hold_complete(0.0)
    assert q.resume(0.0) and not q.held


def test_bad_profile_is_refused() -> None:
    with pytest.raises(ValueError):
        Trapezoid(length=1.0, max_speed=0.0, accel=1.0)
