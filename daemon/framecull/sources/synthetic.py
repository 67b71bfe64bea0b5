"""Synthetic fixed-camera scenes with exact ground truth, for `framecull demo` and the tests.

A Scene is a static background, a few actors (cars, a walker) that move on a frame schedule,
a global light gain per frame and fresh sensor noise. The event bounds are measured on the
actors' own noise-free renders, so the ground truth matches the pixels exactly.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator

import cv2
import numpy as np

from framecull.config import SourceConfig
from framecull.frame import Frame
from framecull.sources import Source, SourceError
from framecull.sources.live import LiveSource

START_TIME = datetime(2026, 6, 1, 6, 0, tzinfo=timezone.utc).timestamp()


@dataclass
class Event:
    kind: str  # "car_arrives", "car_leaves", "person_crosses", "light_step"
    start: int  # first frame (inclusive) where the new thing is visible / happening
    end: int  # last frame (inclusive) of the event
    description: str = ""


class Scene:
    """A clip of `n_frames` frames; `render(i)` draws frame i (BGR uint8), deterministically.

    actors   objects with `draw(img, i)`, drawn in order onto a copy of the background
    gains    one global light gain per frame
    noise    Gaussian sensor noise sigma, grey levels per channel (0: none)
    """

    def __init__(
        self,
        name: str,
        background: np.ndarray,
        fps: float,
        n_frames: int,
        actors: list,
        gains: np.ndarray,
        events: list[Event],
        noise: float = 2.0,
        jpeg_quality: int | None = None,
        seed: int = 0,
        start_time: float = START_TIME,
    ) -> None:
        self.name = name
        self.background = background
        self.height, self.width = background.shape[:2]
        self.fps = float(fps)
        self.n_frames = n_frames
        self.actors = actors
        self.gains = np.asarray(gains, dtype=np.float64)
        self.events = sorted(events, key=lambda e: e.start)
        self.quiet = quiet_ranges(self.events, n_frames)
        self.noise = noise
        self.jpeg_quality = jpeg_quality
        self.seed = seed
        self.start_time = start_time
        # Drawing 700k Gaussian samples costs ~8 ms a frame here; a window at a random offset
        # into one pool of twice the frame size costs nothing and is still independent per
        # pixel from frame to frame (different offsets read different samples).
        self._noise_pool = None
        if noise > 0:
            rng = np.random.default_rng([seed, 1])
            self._noise_pool = rng.standard_normal(2 * background.size, dtype=np.float32) * np.float32(noise)

    def timestamp(self, i: int) -> float:
        return self.start_time + i / self.fps

    def render(self, i: int, loop: int = 0) -> np.ndarray:
        """Frame i; `loop` > 0 draws fresh noise for the same frame (a live camera replaying the scene)."""
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {i} is outside the scene (0..{self.n_frames - 1})")
        img = self.background.copy()
        for actor in self.actors:
            actor.draw(img, i)
        gain = float(self.gains[i])
        if self._noise_pool is None:
            img = cv2.convertScaleAbs(img, alpha=gain)  # values are >= 0: a rounding, saturating scale
        else:
            seed = [self.seed, i] + ([loop] if loop else [])
            offset = int(np.random.default_rng(seed).integers(img.size + 1))
            noise = self._noise_pool[offset : offset + img.size].reshape(img.shape)
            img = cv2.addWeighted(img, gain, noise, 1.0, 0.0, dtype=cv2.CV_8U)
        if self.jpeg_quality is not None:
            _, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(self.jpeg_quality)])
            img = cv2.imdecode(data, cv2.IMREAD_COLOR)
        return img

    def __repr__(self) -> str:
        return f"Scene({self.name!r}, {self.width}x{self.height}, {self.n_frames} frames at {self.fps:g} fps)"


def quiet_ranges(events: list[Event], n_frames: int) -> list[tuple[int, int]]:
    """The maximal inclusive frame ranges covered by no event (events sorted, not overlapping)."""
    quiet, free = [], 0
    for event in events:
        if event.start < free or event.end < event.start or event.end >= n_frames:
            raise ValueError(f"event {event} overlaps another or falls outside 0..{n_frames - 1}")
        if event.start > free:
            quiet.append((free, event.start - 1))
        free = event.end + 1
    if free < n_frames:
        quiet.append((free, n_frames - 1))
    return quiet


# --- actors ---------------------------------------------------------------------------------
# Geometry is in design units of a 640x360 frame; `scale` maps it to the real size.


def _rounded_rect(x0: float, y0: float, x1: float, y1: float, r: float) -> np.ndarray:
    points = []
    for cx, cy, a0 in ((x1 - r, y1 - r, 0), (x0 + r, y1 - r, 90), (x0 + r, y0 + r, 180), (x1 - r, y0 + r, 270)):
        for a in np.radians(np.linspace(a0, a0 + 90, 4)):
            points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return np.array(points)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=float)


# A car seen from above, nose along +x, 100 x 50 units.
CAR_LENGTH = 100
CAR_WHEELS = [_rect(x, y, x + 16, y + 6) for x in (-40, 24) for y in (-27, 21)]
CAR_BODY = _rounded_rect(-50, -25, 50, 25, 10)
CAR_ROOF = _rect(-28, -20, 8, 20)
CAR_GLASS = [
    np.array([(8, -20), (24, -17), (24, 17), (8, 20)], dtype=float),  # windscreen
    np.array([(-38, -17), (-28, -20), (-28, 20), (-38, 17)], dtype=float),  # rear window
]
WHEEL_COLOUR = (25, 25, 25)
GLASS_COLOUR = (70, 55, 45)

# BGR colours whose grey level stays well away from the asphalt's (~96).
CAR_COLOURS = {
    "white": (238, 238, 235),
    "silver": (192, 192, 188),
    "black": (35, 35, 40),
    "navy": (120, 40, 20),
    "dark red": (30, 30, 140),
    "yellow": (40, 200, 230),
    "orange": (30, 140, 240),
}
SHIRT_COLOURS = [(40, 40, 200), (200, 120, 30), (40, 180, 220), (235, 235, 235), (150, 60, 150)]


def draw_car(img: np.ndarray, x: float, y: float, heading: float, colour, scale: np.ndarray) -> None:
    """Draw a car centred at (x, y) design units, nose pointing along `heading` (radians)."""
    c, s = math.cos(heading), math.sin(heading)
    turn = np.array([[c, s], [-s, c]])  # row vectors @ turn == rotation by heading

    def place(shapes):
        return [np.round((shape @ turn + (x, y)) * scale).astype(np.int32) for shape in shapes]

    roof = tuple(int(v * 0.85) for v in colour)
    cv2.fillPoly(img, place(CAR_WHEELS), WHEEL_COLOUR)
    cv2.fillPoly(img, place([CAR_BODY]), colour)
    cv2.fillPoly(img, place([CAR_ROOF]), roof)
    cv2.fillPoly(img, place(CAR_GLASS), GLASS_COLOUR)


class Path:
    """A polyline the centre of a car follows; `reverse` means the car backs along it."""

    def __init__(self, points, reverse: bool = False) -> None:
        self.points = np.asarray(points, dtype=float)
        steps = np.diff(self.points, axis=0)
        self.lengths = np.hypot(steps[:, 0], steps[:, 1])
        self.cumulative = np.concatenate([[0.0], np.cumsum(self.lengths)])
        self.headings = np.arctan2(steps[:, 1], steps[:, 0]) + (math.pi if reverse else 0.0)

    @property
    def length(self) -> float:
        return float(self.cumulative[-1])

    def pose(self, distance: float) -> tuple[float, float, float]:
        k = int(np.searchsorted(self.cumulative, distance, side="right")) - 1
        k = min(max(k, 0), len(self.lengths) - 1)
        t = (distance - self.cumulative[k]) / self.lengths[k]
        x, y = self.points[k] + t * (self.points[k + 1] - self.points[k])
        return float(x), float(y), float(self.headings[k])


@dataclass
class Leg:
    """Drive along `path` from frame `first` (at its start) to frame `last` (at its end)."""

    path: Path
    first: int
    last: int

    def pose(self, i: int) -> tuple[float, float, float]:
        u = (i - self.first) / (self.last - self.first)
        # Smoothstep blended with a constant speed: the car starts and stops visibly, instead
        # of creeping by sub-pixel steps no gate could see at either end of the leg.
        eased = 0.3 * u + 0.7 * u * u * (3 - 2 * u)
        return self.path.pose(self.path.length * eased)


class Car:
    """A car that drives its legs in order. It is absent before the first leg when it
    `arrives` and after the last leg when it `leaves`; otherwise it rests where it stopped."""

    def __init__(self, colour, legs: list[Leg], arrives: bool, leaves: bool, scale: np.ndarray) -> None:
        self.colour, self.legs, self.arrives, self.leaves, self.scale = colour, legs, arrives, leaves, scale

    def pose(self, i: int) -> tuple[float, float, float] | None:
        pose = None if self.arrives else self.legs[0].pose(self.legs[0].first)
        for leg in self.legs:
            if i < leg.first:
                return pose
            if i <= leg.last:
                return leg.pose(i)
            pose = leg.pose(leg.last)
        return None if self.leaves else pose

    def draw(self, img: np.ndarray, i: int) -> None:
        pose = self.pose(i)
        if pose is not None:
            draw_car(img, *pose, self.colour, self.scale)


class Walker:
    """A person walking in a straight line at constant speed, visible from `first` to `last`."""

    def __init__(self, first: int, last: int, x0: float, x1: float, ground: float, shirt, scale: np.ndarray) -> None:
        self.first, self.last, self.x0, self.x1, self.ground = first, last, x0, x1, ground
        self.shirt, self.scale = shirt, scale

    def draw(self, img: np.ndarray, i: int) -> None:
        if not self.first <= i <= self.last:
            return
        x = self.x0 + (self.x1 - self.x0) * (i - self.first) / (self.last - self.first)
        swing = 7 * math.sin(abs(x - self.x0) / 40 * 2 * math.pi)  # one stride every 40 units
        g, sx, sy = self.ground, self.scale[0], self.scale[1]

        def p(px: float, py: float) -> tuple[int, int]:
            return round(px * sx), round(py * sy)

        leg = max(1, round(7 * sx))
        for side in (-1, 1):
            cv2.line(img, p(x + 5 * side, g - 46), p(x + 5 * side + swing * side, g - 3), (60, 40, 30), leg)
        cv2.rectangle(img, p(x - 15, g - 88), p(x + 15, g - 42), self.shirt, -1)
        cv2.ellipse(img, p(x, g - 99), (max(1, round(10 * sx)), max(1, round(12 * sy))), 0, 0, 360, (140, 170, 215), -1)


def measure(actor, first: int, last: int, shape) -> tuple[list[int], list[int]]:
    """Frames of first-1..last+1 where the actor shows, and where it looks different from the frame before."""
    shown, changed, before = [], [], None
    for i in range(first - 1, last + 2):
        canvas = np.zeros(shape, np.uint8)
        actor.draw(canvas, i)
        if canvas.any():
            shown.append(i)
        if before is not None and not np.array_equal(canvas, before):
            changed.append(i)
        before = canvas
    return shown, changed


# --- the parking lot ------------------------------------------------------------------------

ASPHALT = (98, 96, 94)
LANE_Y, REST_Y, TURN_RADIUS = 290, 150, 70  # lane centre, parked car centre, turn into a bay
BAY_LINES = [40 + 80 * k for k in range(8)]  # 7 bays, 80 units wide
BAY_CENTRES = [x + 40 for x in BAY_LINES[:-1]]


def _background(rng: np.random.Generator, width: int, height: int, parked: list) -> np.ndarray:
    sx, sy = width / 640, height / 360

    def box(x0, y0, x1, y1):
        return (round(x0 * sx), round(y0 * sy)), (round(x1 * sx) - 1, round(y1 * sy) - 1)

    img = np.empty((height, width, 3), np.float32)
    img[:] = ASPHALT
    cv2.rectangle(img, *box(0, 0, 640, 52), (70, 90, 130), -1)  # brick wall
    for x in range(20, 640, 60):
        cv2.rectangle(img, *box(x, 12, x + 30, 38), (95, 72, 55), -1)  # windows
    cv2.rectangle(img, *box(293, 22, 317, 52), (50, 60, 75), -1)  # door
    cv2.rectangle(img, *box(0, 52, 640, 78), (60, 125, 70), -1)  # grass
    cv2.rectangle(img, *box(0, 78, 640, 88), (175, 178, 180), -1)  # kerb
    cv2.rectangle(img, *box(0, 86, 640, 88), (120, 122, 124), -1)  # kerb edge
    thickness = max(1, round(3 * sx))
    for x in BAY_LINES:
        cv2.line(img, (round(x * sx), round(90 * sy)), (round(x * sx), round(212 * sy)), (225, 225, 225), thickness)
    # Fine grain plus soft blotches (stains, patches), the same on every channel.
    grain = rng.normal(0.0, 6.0, (height, width)).astype(np.float32)
    blotches = rng.normal(0.0, 5.0, (height // 24 + 2, width // 24 + 2)).astype(np.float32)
    img += (grain + cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC))[..., None]
    img = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    for x, y, heading, colour in parked:
        draw_car(img, x, y, heading, colour, np.array([sx, sy]))
    return img


def _arc_into_bay(bay_x: float, side: int) -> list[tuple[float, float]]:
    """Quarter circle from the lane (coming from the left, side -1, or right, +1) up to the bay."""
    cx, cy = bay_x + side * TURN_RADIUS, LANE_Y - TURN_RADIUS
    angles = np.radians(np.linspace(90, 90 + side * 90, 13))
    return [(cx + TURN_RADIUS * math.cos(a), cy + TURN_RADIUS * math.sin(a)) for a in angles]


def _edge_x(side: int) -> float:
    """Car centre on the lane with 2 units of it still inside the frame, on that side."""
    return 2 - CAR_LENGTH / 2 if side < 0 else 638 + CAR_LENGTH / 2


def parking_lot(
    seed: int = 0,
    *,
    width: int = 640,
    height: int = 360,
    fps: float = 5.0,
    noise: float = 2.0,
    jpeg_quality: int | None = None,
    drift: float = 0.08,
    light_step: bool = True,
    step_gain: float = 0.75,
    quiet_seconds: float = 16.0,
) -> Scene:
    """A parking lot seen from a fixed camera, 7 bays under a building.

    Car 1 drives in from the left and parks; a person crosses from right to left; car 2 drives
    in from the right and parks; the light steps down (a cloud); car 1 backs out and drives
    off to the right. `quiet_seconds` of nothing separate the events and bracket the clip.
    The light also drifts by +-`drift` (a fraction) over the whole clip, which is no event.
    """
    if width < 32 or height < 18 or fps <= 0 or noise < 0 or quiet_seconds <= 0:
        raise ValueError("parking_lot needs width >= 32, height >= 18, fps > 0, noise >= 0, quiet_seconds > 0")
    if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
        raise ValueError("jpeg_quality must be None or 1..100")
    rng = np.random.default_rng(seed)
    scale = np.array([width / 640, height / 360])
    names = list(CAR_COLOURS)
    picks = [names[k] for k in rng.permutation(len(names))]
    quiet = max(2, round(quiet_seconds * fps))

    def frames(distance: float, speed: float) -> int:
        return max(2, round(distance / speed * fps))

    parked = []  # bays 1, 4 and 7 are taken all along, each car a little off-centre
    for x, colour in zip(BAY_CENTRES[0::3], picks[2:5]):
        jitter = rng.uniform(-3, 3, size=3)
        parked.append((x + jitter[0], REST_Y + jitter[1], -math.pi / 2 + 0.01 * jitter[2], CAR_COLOURS[colour]))
    background = _background(rng, width, height, parked)

    def arrival(bay: int, side: int, first: int) -> Leg:
        x = BAY_CENTRES[bay]
        path = Path([(_edge_x(side), LANE_Y)] + _arc_into_bay(x, side) + [(x, REST_Y)])
        return Leg(path, first, first + frames(path.length, 70))

    # Car 1: arrives from the left into bay 3.
    car1_in = arrival(2, -1, quiet)
    # The person: from just inside the right edge to just inside the left one (torso 30 wide).
    walk_first = car1_in.last + quiet + 1
    walk_last = walk_first + frames(640 + 28, 80)
    shirt = SHIRT_COLOURS[rng.integers(len(SHIRT_COLOURS))]
    walker = Walker(walk_first, walk_last, 638 + 15, 2 - 15, 352, shirt, scale)
    # Car 2: arrives from the right into bay 6.
    car2_in = arrival(5, +1, walk_last + quiet + 1)
    step_frame = car2_in.last + quiet + 1
    # Car 1 backs out towards the left, pauses, then drives off to the right.
    bay_x = BAY_CENTRES[2]
    back = Path([(bay_x, REST_Y)] + _arc_into_bay(bay_x, -1)[::-1], reverse=True)
    back_first = step_frame + quiet + 1
    car1_back = Leg(back, back_first, back_first + frames(back.length, 40))
    away = Path([(bay_x - TURN_RADIUS, LANE_Y), (_edge_x(+1), LANE_Y)])
    away_first = car1_back.last + max(1, round(fps))
    car1_away = Leg(away, away_first, away_first + frames(away.length, 70))

    car1 = Car(CAR_COLOURS[picks[0]], [car1_in, car1_back, car1_away], arrives=True, leaves=True, scale=scale)
    car2 = Car(CAR_COLOURS[picks[1]], [car2_in], arrives=True, leaves=False, scale=scale)
    # Arrivals: first frame showing the car .. last frame it moves; departures: first frame it
    # moves .. last frame showing it; crossings: first .. last frame showing the person.
    shape = background.shape
    events = []
    shown, changed = measure(car1, car1_in.first, car1_in.last, shape)
    text = f"{picks[0]} car drives in from the left, parks in bay 3"
    events.append(Event("car_arrives", shown[0], changed[-1], text))
    shown, changed = measure(walker, walker.first, walker.last, shape)
    events.append(Event("person_crosses", shown[0], shown[-1], "a person walks across the lot, right to left"))
    shown, changed = measure(car2, car2_in.first, car2_in.last, shape)
    text = f"{picks[1]} car drives in from the right, parks in bay 6"
    events.append(Event("car_arrives", shown[0], changed[-1], text))
    if light_step:
        events.append(Event("light_step", step_frame, step_frame, f"the light changes at once, gain x{step_gain:g}"))
    shown, changed = measure(car1, car1_back.first, car1_away.last, shape)
    text = f"{picks[0]} car backs out of bay 3, drives off to the right"
    events.append(Event("car_leaves", changed[0], shown[-1], text))

    n_frames = car1_away.last + quiet + 1
    gains = 1.0 + drift * np.sin(2 * np.pi * np.arange(n_frames) / n_frames)
    if light_step:
        gains[step_frame:] *= step_gain
    actors = [car1, car2, walker]
    return Scene("parking_lot", background, fps, n_frames, actors, gains, events, noise, jpeg_quality, seed)


SCENES: dict[str, Callable[..., Scene]] = {"parking_lot": parking_lot}


def make_scene(name: str) -> Scene:
    if name not in SCENES:
        raise SourceError(f"unknown synthetic scene {name!r}; known scenes: {', '.join(sorted(SCENES))}")
    return SCENES[name]()


class SyntheticSource(Source):
    """Frames of a synthetic Scene (by name from SCENES, or a Scene built by the caller), once
    and as fast as they are read: recorded footage with the scene's own timestamps (replay, demo)."""

    kind = "synthetic"

    def __init__(self, scene: str | Scene, width: int) -> None:
        scene = make_scene(scene) if isinstance(scene, str) else scene
        self.scene = scene
        self.width = width
        self.frame_count = scene.n_frames

    def frames(self) -> Iterator[Frame]:
        for i in range(self.scene.n_frames):
            yield Frame.from_bgr(i, self.scene.timestamp(i), self.scene.render(i), self.width)


class SyntheticCamera(LiveSource):
    """A synthetic scene as a live camera (`framecull run` with kind = "synthetic"): frames at the
    scene's rate in real time, stamped with the wall clock, the scene looping forever with fresh
    noise, so the service can be tried, reloaded and killed without hardware."""

    kind = "synthetic"

    def __init__(self, cfg: SourceConfig) -> None:
        self.scene = make_scene(cfg.uri or "parking_lot")
        super().__init__(cfg)

    def connect(self) -> None:
        pass

    def capture(self) -> Iterator[Frame]:
        period = 1.0 / self.scene.fps
        due = time.monotonic()
        for loop in itertools.count():
            for i in range(self.scene.n_frames):
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                due = max(due + period, time.monotonic() - 1.0)  # a stalled reader does not catch up in a burst
                yield Frame.from_bgr(self.next_index(), time.time(), self.scene.render(i, loop), self.width)
