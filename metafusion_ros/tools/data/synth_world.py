"""The world of one synthetic drive: street layout, static objects and movers, light.

Coordinates are road coordinates in metres: ``s`` along the road (the camera starts at 0 and
drives towards +s), ``u`` across it (0 = road centre, + = right). Everything a frame shows is a
deterministic function of the :class:`World` and the time, so drives are temporally coherent and
the same seed gives the same drive. Labels are the official Cityscapes labelIds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

__all__ = ['World', 'Side', 'Walker', 'Cyclist', 'Car', 'Pole', 'make_world', 'LABEL_IDS',
           'VIEW_DISTANCE', 'HUMAN_DISTANCE']

# Official Cityscapes labelIds used by the generator.
LABEL_IDS = {
    'ego vehicle': 1, 'road': 7, 'sidewalk': 8, 'building': 11, 'wall': 12, 'fence': 13,
    'pole': 17, 'traffic light': 19, 'traffic sign': 20, 'vegetation': 21, 'terrain': 22,
    'sky': 23, 'person': 24, 'rider': 25, 'car': 26, 'bicycle': 33,
}

# How far ahead of the camera the world is populated (m); people are drawn up to HUMAN_DISTANCE.
VIEW_DISTANCE = 220.0
HUMAN_DISTANCE = 90.0

_FACADE_COLOURS = np.array([(185, 165, 135), (150, 92, 72), (125, 122, 128), (205, 195, 175),
                            (105, 90, 85), (172, 152, 150), (140, 150, 160), (190, 150, 110)],
                           dtype=np.float32)
_CAR_COLOURS = np.array([(225, 225, 228), (28, 28, 32), (165, 168, 172), (165, 30, 30),
                         (40, 60, 140), (72, 74, 78), (40, 90, 62), (120, 100, 70)],
                        dtype=np.float32)
_SKIN = np.array([(228, 192, 160), (196, 146, 112), (132, 90, 64), (90, 62, 46)],
                 dtype=np.float32)
_CLOTHES = np.array([(28, 28, 32), (40, 44, 70), (150, 30, 40), (225, 225, 220),
                     (170, 150, 110), (60, 90, 60), (90, 90, 95), (200, 120, 40),
                     (22, 22, 26), (70, 50, 40)], dtype=np.float32)
_TROUSERS = np.array([(30, 30, 36), (40, 50, 90), (170, 150, 120), (60, 60, 64), (20, 20, 24)],
                     dtype=np.float32)
_BIKE = np.array([(25, 25, 25), (160, 30, 30), (40, 60, 150), (170, 170, 175)],
                 dtype=np.float32)


@dataclass(frozen=True)
class Side:
    """One side of the street: sidewalk, grass strip and a row of building/tree blocks."""

    sign: int                # +1 right, -1 left
    curb: float              # |u| where the sidewalk starts
    sidewalk: float          # sidewalk width (m)
    facade: float            # |u| of the facade plane
    starts: np.ndarray       # (n + 1,) block boundaries along s
    trees: np.ndarray        # (n,) bool: tree line instead of a building
    heights: np.ndarray      # (n,) block height (m)
    colours: np.ndarray      # (n, 3) facade colour
    window_dx: np.ndarray    # (n,) window spacing along the facade (m)
    floor_h: np.ndarray      # (n,) storey height (m)
    barrier: np.ndarray      # (n,) 0 none, 1 fence, 2 wall (in front of tree blocks)

    def block(self, s: np.ndarray) -> np.ndarray:
        """Return the block index at positions ``s``."""
        return np.clip(np.searchsorted(self.starts, s, side='right') - 1, 0, len(self.trees) - 1)


@dataclass(frozen=True)
class Walker:
    """A pedestrian: position at t = 0, velocity, size and clothes."""

    u: float
    s: float
    vu: float
    vs: float
    height: float
    skin: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    phase: float


@dataclass(frozen=True)
class Cyclist:
    """A rider on a bicycle."""

    u: float
    s: float
    vu: float
    vs: float
    height: float
    skin: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    bike: np.ndarray
    side_view: float         # |cos| of the angle between the bike and the image plane


@dataclass(frozen=True)
class Car:
    """A car (parked when ``vs`` = 0); ``s`` is its rear end."""

    u: float
    s: float
    vs: float
    length: float
    width: float
    height: float
    colour: np.ndarray


@dataclass(frozen=True)
class Pole:
    """A pole, optionally carrying a traffic sign or a traffic light."""

    u: float
    s: float
    height: float
    width: float
    colour: np.ndarray
    attachment: str          # '', 'sign' or 'light'
    sign_colour: np.ndarray
    sign_shape: int          # 0 disc, 1 rectangle, 2 triangle


@dataclass(frozen=True)
class World:
    """Everything that is fixed for one drive."""

    road_half: float
    speed: float
    lane_u: float
    curvature: float
    curve_period: float
    horizon: float           # horizon row as a fraction of the height
    sides: tuple[Side, Side]
    walkers: list[Walker]
    cyclists: list[Cyclist]
    cars: list[Car]
    poles: list[Pole]
    gain: float
    tint: np.ndarray
    overcast: float
    sun_side: int
    noise: float
    asphalt: float
    seed: int
    hood: float
    crosswalks: np.ndarray

    def camera(self, t: float) -> tuple[float, float, float]:
        """Return the camera pose ``(s, u, k)`` at time ``t`` (position, lane offset, curve)."""
        phase = 2 * np.pi * t / self.curve_period
        return (self.speed * t, self.lane_u + 0.15 * np.sin(0.7 * phase),
                self.curvature * np.sin(phase))


def _along(rng: np.random.Generator, start: float, end: float,
           mean_gap: float) -> Iterator[float]:
    """Yield the positions of a Poisson process with ``mean_gap`` metres between events."""
    s = start + rng.exponential(mean_gap)
    while s < end:
        yield float(s)
        s += rng.exponential(mean_gap)


def _side(rng: np.random.Generator, sign: int, road_half: float, length: float) -> Side:
    """Draw one side of the street: widths, then blocks one after the other up to ``length``."""
    sidewalk = rng.uniform(2.0, 4.5)
    grass = rng.uniform(0.0, 3.0) * (rng.random() < 0.5)
    starts, blocks = [-60.0], []
    while starts[-1] < length:
        starts.append(starts[-1] + rng.uniform(8.0, 40.0))
        trees = bool(rng.random() < 0.3)
        height = rng.uniform(4.0, 11.0) if trees else rng.uniform(7.0, 26.0)
        barrier = int(rng.choice(3, p=[0.4, 0.35, 0.25])) if trees else 0
        colour = _FACADE_COLOURS[rng.integers(0, len(_FACADE_COLOURS))] * rng.uniform(0.85, 1.15)
        blocks.append((trees, height, colour, rng.uniform(2.2, 3.6), rng.uniform(2.9, 3.6),
                       barrier))
    trees, heights, colours, window_dx, floor_h, barrier = (np.array(v) for v in zip(*blocks))
    return Side(sign, road_half, sidewalk, road_half + sidewalk + grass, np.array(starts),
                trees, heights, colours.astype(np.float32), window_dx, floor_h, barrier)


def _walkers(rng: np.random.Generator, side: Side, length: float,
             density: float) -> list[Walker]:
    """Pedestrians on one sidewalk, walking either way or standing, some in groups."""
    out = []
    for s in _along(rng, -20.0, length, 100.0 / density):
        group = 1 + int(rng.random() < 0.25) * int(rng.integers(1, 3))
        vs = 0.0 if rng.random() < 0.25 else rng.choice([-1, 1]) * rng.uniform(0.9, 1.6)
        for g in range(group):
            u = side.sign * (side.curb + rng.uniform(0.4, side.sidewalk - 0.3))
            out.append(_walker(rng, u, s + 0.7 * g, 0.0, vs))
    return out


def _crossing(rng: np.random.Generator, road_half: float, length: float) -> list[Walker]:
    """Pedestrians crossing the road (they stop on the far sidewalk)."""
    out = []
    for s in _along(rng, 0.0, length, 120.0):
        direction = rng.choice([-1, 1])
        out.append(_walker(rng, -direction * (road_half + 1.0), s, direction * 1.3, 0.0))
    return out


def _walker(rng: np.random.Generator, u: float, s: float, vu: float, vs: float) -> Walker:
    """Draw one pedestrian's size and clothes (children and dark clothes included)."""
    height = rng.uniform(1.1, 1.45) if rng.random() < 0.12 else rng.normal(1.74, 0.08)
    return Walker(u, s, vu, vs, height, _SKIN[rng.integers(0, len(_SKIN))],
                  _CLOTHES[rng.integers(0, len(_CLOTHES))],
                  _TROUSERS[rng.integers(0, len(_TROUSERS))], rng.uniform(0, 2 * np.pi))


def _cyclists(rng: np.random.Generator, road_half: float, length: float,
              density: float) -> list[Cyclist]:
    """Riders on the bike paths along the curbs (either direction), a few crossing."""
    out = []
    for s in _along(rng, 0.0, length, 100.0 / density):
        crossing = rng.random() < 0.15
        sign = rng.choice([-1, 1])
        if crossing:
            u, vu, vs, view = -sign * (road_half + 1.0), sign * rng.uniform(3.0, 5.0), 0.0, 1.0
        else:
            u, vu = sign * (road_half + rng.uniform(0.5, 0.9)), 0.0
            vs, view = sign * rng.uniform(3.0, 6.5), rng.uniform(0.25, 0.6)
        out.append(Cyclist(u, s, vu, vs, rng.normal(1.74, 0.07),
                           _SKIN[rng.integers(0, len(_SKIN))],
                           _CLOTHES[rng.integers(0, len(_CLOTHES))],
                           _TROUSERS[rng.integers(0, len(_TROUSERS))],
                           _BIKE[rng.integers(0, len(_BIKE))], view))
    return out


def _parked(rng: np.random.Generator, side: Side, road_half: float, length: float) -> list[Car]:
    """Draw a row of parked cars along one curb (some streets have none)."""
    out = []
    occupancy = rng.uniform(0.1, 0.7) * (rng.random() < 0.65)
    s = -30.0
    while s < length:
        car_len = rng.uniform(3.8, 5.0)
        if rng.random() < occupancy:
            u = side.sign * (road_half - rng.uniform(0.95, 1.2))
            out.append(_car(rng, u, s, 0.0, car_len))
        s += car_len + rng.uniform(0.6, 3.0)
    return out


def _traffic(rng: np.random.Generator, road_half: float, length: float,
             speed: float) -> list[Car]:
    """Cars driving in both lanes."""
    out = []
    for s in _along(rng, 10.0, length, 60.0):
        oncoming = rng.random() < 0.5
        u = (-1 if oncoming else 1) * road_half * 0.5 + rng.normal(0, 0.2)
        # Traffic ahead never is slower than the camera, so the camera never runs into it.
        vs = -rng.uniform(6.0, 12.0) if oncoming else speed * rng.uniform(1.0, 1.15)
        out.append(_car(rng, u, s, vs, rng.uniform(3.8, 5.0)))
    return out


def _car(rng: np.random.Generator, u: float, s: float, vs: float, length: float) -> Car:
    """Draw one car's size and colour."""
    colour = _CAR_COLOURS[rng.integers(0, len(_CAR_COLOURS))] * rng.uniform(0.9, 1.1)
    return Car(u, s, vs, length, rng.uniform(1.7, 1.95), rng.uniform(1.4, 1.65),
               colour.astype(np.float32))


def _poles(rng: np.random.Generator, side: Side, length: float) -> list[Pole]:
    """Poles along one curb; some carry traffic signs or traffic lights."""
    out = []
    s = rng.uniform(-20.0, 0.0)
    while s < length:
        attachment = rng.choice(['', 'sign', 'light'], p=[0.5, 0.35, 0.15])
        grey = rng.uniform(60, 150)
        sign_colour = np.array([(30, 80, 170), (200, 40, 40), (225, 195, 40),
                                (230, 230, 230)][rng.integers(0, 4)], dtype=np.float32)
        out.append(Pole(side.sign * (side.curb + 0.35), s, rng.uniform(4.5, 9.0),
                        rng.uniform(0.12, 0.25), np.full(3, grey, dtype=np.float32),
                        str(attachment), sign_colour, int(rng.integers(0, 3))))
        s += rng.uniform(12.0, 45.0)
    return out


def make_world(key: Sequence[int], duration: float) -> World:
    """Draw a drive of ``duration`` seconds from the integer seed ``key`` (deterministic).

    Every part of the world has its own random stream and is generated front to back, so a
    longer drive starts exactly like a shorter one with the same key.
    """
    streams = [np.random.default_rng(np.random.SeedSequence(list(key), spawn_key=(part,)))
               for part in range(12)]
    rng = streams[0]
    road_half, speed = rng.uniform(3.5, 7.0), rng.uniform(4.0, 12.0)
    length = speed * duration + VIEW_DISTANCE
    sides = (_side(streams[1], -1, road_half, length), _side(streams[2], 1, road_half, length))
    density = rng.uniform(1.5, 9.0)
    return World(
        road_half=road_half, speed=speed,
        lane_u=min(road_half * rng.uniform(0.3, 0.6), road_half - 3.1),
        curvature=rng.uniform(0.0, 6e-4), curve_period=rng.uniform(20.0, 60.0),
        horizon=rng.uniform(0.40, 0.47), sides=sides,
        walkers=(_walkers(streams[3], sides[0], length, density)
                 + _walkers(streams[4], sides[1], length, density)
                 + _crossing(streams[5], road_half, length)),
        cyclists=_cyclists(streams[6], road_half, length, density * 0.3),
        cars=(_parked(streams[7], sides[0], road_half, length)
              + _parked(streams[8], sides[1], road_half, length)
              + _traffic(streams[9], road_half, length, speed)),
        poles=_poles(streams[10], sides[0], length) + _poles(streams[11], sides[1], length),
        gain=rng.uniform(0.55, 1.2), tint=rng.uniform(0.88, 1.12, 3).astype(np.float32),
        overcast=rng.random(), sun_side=int(rng.choice([-1, 1])), noise=rng.uniform(2.0, 7.0),
        asphalt=rng.uniform(80, 115), seed=int(rng.integers(0, 2**31 - 1)),
        hood=rng.uniform(0.86, 0.92),
        crosswalks=np.array(list(_along(rng, 0.0, length, 150.0))))
