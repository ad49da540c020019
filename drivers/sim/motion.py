"""The virtual stage's motion model: trapezoidal moves, a planner queue, feed hold.

Time is passed in (seconds, any monotonic origin) so the model is pure and testable
without waiting: a position at time t is computed, never stepped. Distances are mm.
Each move starts and ends at rest (no junction blending: slightly slower than GRBL
for long chains of short moves, exact for the agent's one-move-at-a-time use).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

Vec3 = tuple[float, float, float]
_EPS = 1e-12


@dataclass(frozen=True)
class AxisKinematics:
    """Per-axis maximum speed (mm/s) and acceleration (mm/s^2), X, Y, Z order."""

    max_speed: Vec3
    accel: Vec3


@dataclass(frozen=True)
class Trapezoid:
    """Distance over time along a straight path: speed up, cruise, slow down to rest.

    Args:
        length: path length (mm).
        max_speed: cruise speed cap (mm/s).
        accel: acceleration and deceleration (mm/s^2).
        start_speed: speed at t=0 (mm/s); non-zero only for a feed-hold deceleration.
    """

    length: float
    max_speed: float
    accel: float
    start_speed: float = 0.0
    peak: float = field(init=False)
    t_accel: float = field(init=False)
    t_cruise: float = field(init=False)
    t_decel: float = field(init=False)

    def __post_init__(self) -> None:
        if self.length < 0 or self.max_speed <= 0 or self.accel <= 0:
            raise ValueError("a move needs length >= 0, max_speed > 0 and accel > 0")
        a, v0 = self.accel, self.start_speed
        # Peak speed of a triangle reaching the end at rest: L = (vp^2 - v0^2)/2a + vp^2/2a.
        peak = min(self.max_speed, math.sqrt(a * self.length + v0 * v0 / 2.0))
        peak = max(peak, v0)
        d_accel = (peak * peak - v0 * v0) / (2.0 * a)
        d_decel = peak * peak / (2.0 * a)
        d_cruise = max(0.0, self.length - d_accel - d_decel)
        object.__setattr__(self, "peak", peak)
        object.__setattr__(self, "t_accel", (peak - v0) / a)
        object.__setattr__(self, "t_cruise", d_cruise / peak if peak > _EPS else 0.0)
        object.__setattr__(self, "t_decel", peak / a)

    @property
    def duration(self) -> float:
        """Time from start to rest (s)."""
        return self.t_accel + self.t_cruise + self.t_decel

    def distance_at(self, t: float) -> float:
        """Distance covered after t seconds (mm), clamped to [0, length]."""
        a, v0, vp = self.accel, self.start_speed, self.peak
        if t <= 0:
            return 0.0
        if t < self.t_accel:
            return v0 * t + a * t * t / 2.0
        d = (vp * vp - v0 * v0) / (2.0 * a)
        t -= self.t_accel
        if t < self.t_cruise:
            return d + vp * t
        d += vp * self.t_cruise
        t -= self.t_cruise
        if t < self.t_decel:
            return min(self.length, d + vp * t - a * t * t / 2.0)
        return self.length

    def speed_at(self, t: float) -> float:
        """Speed after t seconds (mm/s)."""
        if t <= 0:
            return self.start_speed
        if t < self.t_accel:
            return self.start_speed + self.accel * t
        t -= self.t_accel
        if t < self.t_cruise:
            return self.peak
        t -= self.t_cruise
        if t < self.t_decel:
            return self.peak - self.accel * t
        return 0.0


def line_profile(
    start: Vec3, end: Vec3, kinematics: AxisKinematics, feed_mm_s: float | None = None
) -> Trapezoid | None:
    """The trapezoid GRBL's planner gives a straight move; None for a zero-length move.

    Like GRBL, the path speed is the feed (None for a G0 rapid) capped so that no axis
    exceeds its own maximum speed, and the path acceleration is capped the same way.
    """
    delta = [e - s for s, e in zip(start, end, strict=True)]
    length = math.sqrt(sum(d * d for d in delta))
    if length < 1e-9:
        return None
    speed = math.inf if feed_mm_s is None else feed_mm_s
    accel = math.inf
    for d, vmax, amax in zip(delta, kinematics.max_speed, kinematics.accel, strict=True):
        share = abs(d) / length
        if share > _EPS:
            speed = min(speed, vmax / share)
            accel = min(accel, amax / share)
    return Trapezoid(length=length, max_speed=speed, accel=accel)


def move_duration(
    start: Vec3, end: Vec3, kinematics: AxisKinematics, feed_mm_s: float | None = None
) -> float:
    """Seconds a move takes, settling excluded (0 for a zero-length move)."""
    profile = line_profile(start, end, kinematics, feed_mm_s)
    return 0.0 if profile is None else profile.duration


@dataclass
class Move:
    """One planned straight move. ``kind`` is a free label (rapid, line, jog, home)."""

    start: Vec3
    end: Vec3
    profile: Trapezoid
    kind: str
    settle_s: float = 0.0
    feed_mm_min: float = 0.0
    t0: float = 0.0

    @property
    def motion_end(self) -> float:
        return self.t0 + self.profile.duration

    @property
    def finish(self) -> float:
        return self.motion_end + self.settle_s

    def position_at(self, t: float) -> Vec3:
        s = self.profile.distance_at(t - self.t0)
        length = self.profile.length
        if length <= 0:
            return self.end
        f = s / length
        return (
            self.start[0] + (self.end[0] - self.start[0]) * f,
            self.start[1] + (self.end[1] - self.start[1]) * f,
            self.start[2] + (self.end[2] - self.start[2]) * f,
        )


class MotionQueue:
    """GRBL's planner buffer and steppers, reduced to what can be observed.

    Not thread-safe: the controller calls it under its own lock.
    """

    def __init__(self, position: Vec3) -> None:
        self._rest = position
        self._active: Move | None = None
        self._queue: deque[Move] = deque()
        self._held = False

    def pending(self, now: float) -> int:
        """Moves planned and not finished at ``now`` (the active one included)."""
        self.advance(now)
        return len(self._queue) + (1 if self._active else 0)

    def enqueue(self, move: Move, now: float) -> None:
        self.advance(now)
        if self._active is None and not self._held:
            move.t0 = now
            self._active = move
        else:
            self._queue.append(move)

    def advance(self, now: float) -> None:
        """Retire finished moves; the next starts exactly when the previous finished."""
        while self._active is not None and now >= self._active.finish:
            done = self._active
            self._rest = done.end
            self._active = None
            if self._queue and not self._held:
                nxt = self._queue.popleft()
                nxt.t0 = done.finish
                self._active = nxt

    def position(self, now: float) -> Vec3:
        self.advance(now)
        return self._active.position_at(now) if self._active else self._rest

    def active(self, now: float) -> Move | None:
        """The move executing now (settling included), if any."""
        self.advance(now)
        return self._active

    def moving(self, now: float) -> bool:
        """Axes in motion, not counting settling."""
        move = self.active(now)
        return move is not None and now < move.motion_end

    def busy(self, now: float) -> bool:
        """Motion or settling in progress, or moves waiting (and not held)."""
        self.advance(now)
        return self._active is not None or (bool(self._queue) and not self._held)

    @property
    def held(self) -> bool:
        return self._held

    def hold_complete(self, now: float) -> bool:
        return self._held and self.active(now) is None

    def next_event(self, now: float) -> float | None:
        """When the state next changes by itself (end of the active move), if ever."""
        move = self.active(now)
        if move is None:
            return None
        return move.motion_end if now < move.motion_end else move.finish

    def feed_hold(self, now: float) -> None:
        """Decelerate the active move to rest along its path; keep the rest for resume."""
        self.advance(now)
        if self._held:
            return
        self._held = True
        move = self._active
        if move is None:
            return
        tau = now - move.t0
        if tau >= move.profile.duration:  # only settling left: already at rest
            return
        here = move.position_at(now)
        speed = move.profile.speed_at(tau)
        remaining = move.profile.length - move.profile.distance_at(tau)
        stop_len = min(remaining, speed * speed / (2.0 * move.profile.accel))
        length = move.profile.length
        unit = tuple((e - s) / length for s, e in zip(move.start, move.end, strict=True))
        stop_at = (
            here[0] + unit[0] * stop_len,
            here[1] + unit[1] * stop_len,
            here[2] + unit[2] * stop_len,
        )
        decel = Move(
            start=here,
            end=stop_at,
            profile=Trapezoid(stop_len, max(speed, _EPS), move.profile.accel, start_speed=speed),
            kind=move.kind,
            feed_mm_min=move.feed_mm_min,
            t0=now,
        )
        if stop_len < remaining - 1e-9:
            rest = Trapezoid(remaining - stop_len, move.profile.max_speed, move.profile.accel)
            self._queue.appendleft(
                Move(stop_at, move.end, rest, move.kind, move.settle_s, move.feed_mm_min)
            )
        self._active = decel

    def resume(self, now: float) -> bool:
        """Cycle start after a completed hold; False when there is no completed hold."""
        if not self.hold_complete(now):
            return False
        self._held = False
        if self._queue:
            nxt = self._queue.popleft()
            nxt.t0 = now
            self._active = nxt
        return True

    def cancel(self, now: float) -> Vec3:
        """Decelerate to rest and forget every planned move (GRBL's jog cancel).

        Returns where the axes come to rest.
        """
        self.feed_hold(now)
        self._queue.clear()
        self._held = False
        return self._active.end if self._active is not None else self._rest

    def halt(self, now: float) -> Vec3:
        """Stop dead (reset, power loss, hard limit) and forget every planned move."""
        here = self.position(now)
        self._rest = here
        self._active = None
        self._queue.clear()
        self._held = False
        return here

    def set_position(self, position: Vec3) -> None:
        """Teleport at rest (homing sets the origin this way)."""
        self._active = None
        self._queue.clear()
        self._held = False
        self._rest = position
