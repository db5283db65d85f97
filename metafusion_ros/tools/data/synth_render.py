"""Render one frame of a synthetic drive: a pinhole camera over the world of ``synth_world``.

Vectorised numpy: the ground plane and the facades are ray-cast per row and per column, every
object is a billboard (or, for car sides, a vertical quad) drawn into its bounding box through a
depth buffer, so occlusions follow from the geometry. Textures are sampled in world coordinates,
so they move with the scene from frame to frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from metafusion_ros.tools.data.synth_world import (HUMAN_DISTANCE, LABEL_IDS, VIEW_DISTANCE, Car,
                                                   Cyclist, Pole, Walker, World)

__all__ = ['Renderer']

CAMERA_HEIGHT = 1.4      # m above the road
NEAR = 1.2               # m: closer objects are not drawn
_TILE = 256
_NOISE_PAD = 64
_L = LABEL_IDS


@dataclass(frozen=True)
class View:
    """The camera of one frame: intrinsics, horizon row and pose in road coordinates."""

    width: int
    height: int
    hor: float
    s: float
    u: float
    k: float

    @property
    def f(self) -> float:
        """Return the focal length in pixels (Cityscapes' 2262 px at 2048 wide, scaled)."""
        return 1.1 * self.width

    @property
    def cx(self) -> float:
        """Return the principal point column."""
        return self.width / 2.0

    def camera_x(self, u: float | np.ndarray, z: float | np.ndarray) -> float | np.ndarray:
        """Return the lateral camera coordinate of road position ``u`` at depth ``z``."""
        return u - self.u + 0.5 * self.k * z * z

    def row(self, elevation: float | np.ndarray, z: float | np.ndarray) -> float | np.ndarray:
        """Return the image row of a point ``elevation`` m above the road at depth ``z``."""
        return self.hor + self.f * (CAMERA_HEIGHT - elevation) / z


@dataclass(frozen=True)
class Box:
    """A clipped pixel rectangle with the local coordinates of its pixel centres."""

    y0: int
    y1: int
    x0: int
    x1: int
    p: np.ndarray            # (1, w) horizontal position in the object, 0..1
    q: np.ndarray            # (h, 1) vertical position from the top, 0..1
    z: float | np.ndarray


class Canvas:
    """Colour, label and depth buffers of one frame."""

    def __init__(self, height: int, width: int) -> None:
        self.rgb = np.empty((height, width, 3), dtype=np.float32)
        self.label = np.full((height, width), _L['sky'], dtype=np.uint8)
        self.depth = np.full((height, width), np.inf, dtype=np.float32)

    def draw(self, box: Box, mask: np.ndarray, label: int, colour: np.ndarray) -> None:
        """Write ``colour`` and ``label`` where ``mask`` is set and nearer than the buffer."""
        sl = np.s_[box.y0:box.y1, box.x0:box.x1]
        z = np.broadcast_to(np.asarray(box.z, dtype=np.float32), mask.shape)
        hit = mask & (z < self.depth[sl])
        if not hit.any():
            return
        self.depth[sl][hit] = z[hit]
        self.label[sl][hit] = label
        colour = np.asarray(colour, dtype=np.float32)
        self.rgb[sl][hit] = colour[hit] if colour.ndim == 3 else colour


def _tiles(seed: int) -> dict[str, np.ndarray]:
    """Return tileable noise textures in about [-1, 1] (fine grain, blotches, leaves)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, sigma in (('fine', 0.8), ('blotch', 8.0), ('leaf', 2.5)):
        tile = ndimage.gaussian_filter(rng.standard_normal((_TILE, _TILE)), sigma, mode='wrap')
        out[name] = (tile / (3 * tile.std())).astype(np.float32)
    return out


def _sample(tile: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sample ``tile`` at (row ``a``, column ``b``) in texel units (truncated), wrapping around."""
    return tile[a.astype(np.int32) & (_TILE - 1), b.astype(np.int32) & (_TILE - 1)]


def _segment(x: np.ndarray, y: np.ndarray, a: tuple[float, float], b: tuple[float, float],
             width: float) -> np.ndarray:
    """Return the pixels within ``width`` of the segment ``a``-``b`` (in metres)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    t = np.clip(((x - a[0]) * dx + (y - a[1]) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return (x - a[0] - t * dx) ** 2 + (y - a[1] - t * dy) ** 2 < width * width


def _person_parts(p: np.ndarray, q: np.ndarray, swing: float) -> tuple[np.ndarray, ...]:
    """Return (hair, face, top, legs) masks of a person silhouette in its box."""
    dx = p - 0.5
    head = (dx / 0.16) ** 2 + ((q - 0.075) / 0.075) ** 2 < 1.0
    hair = head & (q < 0.045)
    shoulder = np.clip((q - 0.14) / 0.05, 0.0, 1.0)
    top = (np.abs(dx) < 0.2 + 0.13 * shoulder) & (q >= 0.14) & (q < 0.56) & ~head
    spread = 0.09 + swing * np.clip(q - 0.55, 0.0, None)
    legs = (q >= 0.55) & ((np.abs(dx - spread) < 0.085) | (np.abs(dx + spread) < 0.085))
    return hair, head & ~hair, top, legs


class Renderer:
    """Render frames of one :class:`World` at a given image size."""

    def __init__(self, world: World, width: int, height: int) -> None:
        self.world, self.width, self.height = world, width, height
        self.tiles = _tiles(world.seed)
        self.cols = np.arange(width, dtype=np.float32) + 0.5
        self.rows = np.arange(height, dtype=np.float32)[:, None] + 0.5
        r2 = (((self.cols - width / 2) / (width / 2)) ** 2
              + ((self.rows - height / 2) / (height / 2)) ** 2)
        self.light = ((1.0 - 0.18 * r2)[:, :, None] * world.tint).astype(np.float32)
        # Sensor noise: one field per drive, shown at a random offset in every frame.
        self.noise = np.random.default_rng([world.seed, 1]).standard_normal(
            (height + _NOISE_PAD, width + _NOISE_PAD, 3), dtype=np.float32)
        self.noise *= np.float32(world.noise)
        edge = height * (world.hood + 0.05 * ((self.cols - width / 2) / (width / 2)) ** 2)
        self.hood = self.rows >= edge
        shine = np.clip((self.rows - edge) / (0.1 * height), 0, 1)
        self.hood_rgb = (22 + 40 * (1 - shine))[self.hood][:, None].astype(np.float32)
        overcast = world.overcast
        self.sky_top = np.array([90, 140, 210]) * (1 - overcast) + np.array([165, 170, 180]) \
            * overcast
        self.sky_low = np.array([200, 215, 235]) * (1 - overcast) + np.array([215, 215, 220]) \
            * overcast

    def view(self, t: float) -> View:
        """Return the camera of time ``t`` (pose plus a small pitch bounce)."""
        s, u, k = self.world.camera(t)
        hor = self.height * (self.world.horizon + 0.004 * np.sin(2 * np.pi * t / 1.3))
        return View(self.width, self.height, float(hor), float(s), float(u), float(k))

    def render(self, t: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Return the RGB uint8 image and the labelIds uint8 map of time ``t``."""
        view = self.view(t)
        canvas = Canvas(self.height, self.width)
        self._sky(canvas, view, t)
        self._ground(canvas, view)
        self._facades(canvas, view)
        for car in self.world.cars:
            self._car(canvas, view, car, t)
        for pole in self.world.poles:
            self._pole(canvas, view, pole)
        for walker in self.world.walkers:
            self._walker(canvas, view, walker, t)
        for cyclist in self.world.cyclists:
            self._cyclist(canvas, view, cyclist, t)
        self._hood(canvas)
        return self._expose(canvas, t, rng), canvas.label

    # -- background -------------------------------------------------------------------------
    def _sky(self, canvas: Canvas, view: View, t: float) -> None:
        """Fill the frame with a sky gradient and drifting clouds."""
        w = np.clip(self.rows / max(view.hor, 1.0), 0.0, 1.0)[:, :, None]
        canvas.rgb[:] = self.sky_top * (1 - w) + self.sky_low * w
        clouds = _sample(self.tiles['blotch'], self.rows * (300.0 / self.height),
                         self.cols * (600.0 / self.width) + 4.0 * t)
        canvas.rgb += (np.clip(clouds - 0.1, 0.0, None) * 140.0)[:, :, None]

    def _shade(self, u: np.ndarray | float, s: np.ndarray | float) -> np.ndarray | float:
        """Return the light factor at road position ``(u, s)``: buildings on the sun side."""
        side = self.world.sides[(self.world.sun_side + 1) // 2]
        block = side.block(np.asarray(s))
        reach = np.where(side.trees[block], 0.5, 0.45) * side.heights[block]
        shadow = self.world.sun_side * np.asarray(u) > side.facade - reach
        return np.where(shadow, 0.5, 1.0).astype(np.float32)

    def _ground(self, canvas: Canvas, view: View) -> None:
        """Ray-cast the road plane: road, markings, sidewalks, grass, with shadows."""
        first = int(np.ceil(view.hor))
        rows = self.rows[first:, 0]
        if rows.size == 0:
            return
        z = (view.f * CAMERA_HEIGHT / np.maximum(rows - view.hor, 1e-3)).astype(np.float32)
        x = (self.cols - view.cx)[None, :] * (z / view.f)[:, None]
        u = x - (0.5 * view.k * z * z)[:, None] + view.u
        s = (view.s + z)[:, None]
        world = self.world
        left, right = world.sides
        au = np.abs(u)
        outer = np.where(u > 0, right.curb + right.sidewalk, left.curb + left.sidewalk)
        cls = np.where(au < world.road_half, 0, np.where(au < outer, 1, 2)).astype(np.uint8)
        fine = _sample(self.tiles['fine'], s / 0.03, u / 0.03)
        blotch = _sample(self.tiles['blotch'], s / 0.25, u / 0.25)
        base = np.array([[world.asphalt] * 3, [168, 150, 150], [120, 148, 72]], np.float32)
        amp = np.array([14.0, 10.0, 26.0], np.float32)
        rgb = np.take(base, cls, axis=0)
        rgb += ((fine + blotch) * np.take(amp, cls))[:, :, None]
        marking = (cls == 0) & (((np.abs(u) < 0.08) & (np.mod(s, 9.0) < 3.5))
                                | (np.abs(au - world.road_half + 0.3) < 0.08))
        crossing = np.zeros(s.shape, dtype=bool)
        for start in world.crosswalks:
            crossing |= np.abs(s - start - 2.0) < 2.0
        if crossing.any():
            marking |= (cls == 0) & crossing & (np.mod(u, 1.0) < 0.5)
        rgb[marking] = 215.0
        tiles = (cls == 1) & ((np.mod(s, 0.6) < 0.04) | (np.mod(u, 0.6) < 0.04))
        rgb[tiles] *= 0.8
        rgb *= self._shade(u, s)[:, :, None]
        canvas.rgb[first:] = rgb
        canvas.label[first:] = np.array([_L['road'], _L['sidewalk'], _L['terrain']],
                                        np.uint8)[cls]
        canvas.depth[first:] = z[:, None]

    def _facade_depth(self, view: View) -> tuple[np.ndarray, np.ndarray]:
        """Return, per column, the depth of the nearest facade plane and which side it is."""
        a = ((self.cols - view.cx) / view.f).astype(np.float64)
        k = view.k if abs(view.k) > 1e-9 else 1e-9
        best = np.full(a.shape, VIEW_DISTANCE)
        which = np.where(a > 0, 1, 0)
        for idx, side in enumerate(self.world.sides):
            b = side.sign * side.facade - view.u
            disc = a * a - 2 * k * b
            root = np.sqrt(np.maximum(disc, 0.0))
            for z in ((a - root) / k, (a + root) / k):
                ok = (disc >= 0) & (z > 0.5) & (z < best)
                best = np.where(ok, z, best)
                which = np.where(ok, idx, which)
        return best.astype(np.float32), which

    def _facades(self, canvas: Canvas, view: View) -> None:
        """Draw the building and tree blocks (with fences and walls) on both sides."""
        z, which = self._facade_depth(view)
        s = view.s + z
        left, right = self.world.sides
        right_side = which == 1
        blocks = (left.block(s), right.block(s))

        def pick(name: str) -> np.ndarray:
            values = (getattr(left, name)[blocks[0]], getattr(right, name)[blocks[1]])
            cond = right_side[:, None] if values[0].ndim == 2 else right_side
            return np.where(cond, values[1], values[0])

        trees = pick('trees')
        crown = 1.5 * _sample(self.tiles['blotch'], s / 0.12, np.zeros_like(s))
        height = np.where(trees, pick('heights') + crown, pick('heights'))
        mask = (self.rows >= view.row(height, z)) & (self.rows < view.row(0.0, z))
        ys, xs = np.nonzero(mask)
        zc, sc, tc = z[xs], s[xs], trees[xs]
        elev = CAMERA_HEIGHT + (view.hor - (ys + np.float32(0.5))) * zc / view.f
        texture = _sample(self.tiles['blotch'], elev / 0.3, sc / 0.3)
        # Per column: facade colour darkened on the side facing away from the sun, window
        # columns and the barrier in front of tree blocks.
        sunny = which == (self.world.sun_side + 1) // 2
        colour = (pick('colours') * np.where(sunny, 0.7, 1.0)[:, None]).astype(np.float32)
        dx = pick('window_dx')
        window_col = ~trees & (np.abs(np.mod(s, dx) / dx - 0.525) < 0.225)
        rgb = np.take(colour, xs, axis=0) * (1 + 0.12 * texture)[:, None]
        fh = np.take(pick('floor_h'), xs)
        up = np.mod(elev, fh) / fh
        windows = (window_col[xs] & (up > 0.35) & (up < 0.8) & (elev > 3.0)
                   & (elev < height[xs] - 0.8))
        shine = (np.mod(elev[windows], 1.7) / 1.7)[:, None]
        rgb[windows] = np.array([38, 46, 62], np.float32) + shine * self.sky_low * 0.25
        leaves = _sample(self.tiles['leaf'], elev[tc] / 0.12, sc[tc] / 0.12)
        green = np.array([58, 96, 40], np.float32) * (0.8 + 0.4 * colour[xs[tc], 1:2] / 255.0)
        rgb[tc] = green * (1 + 0.6 * leaves)[:, None]
        label = np.where(tc, _L['vegetation'], _L['building']).astype(np.uint8)
        barrier = np.take(pick('barrier'), xs)
        fence = (barrier == 1) & (elev < 1.3)
        wall = (barrier == 2) & (elev < 1.0)
        rgb[fence & (np.mod(sc, 0.2) < 0.07)] = 150.0
        rgb[wall] = (170 + 14 * texture[wall])[:, None]
        label[fence], label[wall] = _L['fence'], _L['wall']
        canvas.rgb[mask] = rgb
        canvas.label[mask] = label
        canvas.depth[mask] = zc

    # -- objects ----------------------------------------------------------------------------
    def _box(self, view: View, u: float, s: float, width: float, height: float,
             base: float = 0.0, far: float = VIEW_DISTANCE) -> Box | None:
        """Project an upright billboard at ``(u, s)``; ``None`` when not within ``far`` m."""
        z = s - view.s
        if z < NEAR or z > far:
            return None
        x = view.camera_x(u, z)
        xl, xr = view.cx + view.f * (x - width / 2) / z, view.cx + view.f * (x + width / 2) / z
        yt, yb = view.row(base + height, z), view.row(base, z)
        x0, x1 = max(int(np.floor(xl)), 0), min(int(np.ceil(xr)), self.width)
        y0, y1 = max(int(np.floor(yt)), 0), min(int(np.ceil(yb)), self.height)
        if x1 <= x0 or y1 <= y0:
            return None
        p = ((np.arange(x0, x1, dtype=np.float32) + 0.5 - xl) / (xr - xl))[None, :]
        q = ((np.arange(y0, y1, dtype=np.float32) + 0.5 - yt) / (yb - yt))[:, None]
        return Box(y0, y1, x0, x1, p, q, np.float32(z))

    def _grain(self, box: Box, colour: np.ndarray, scale: float = 40.0) -> np.ndarray:
        """Return ``colour`` with a little texture over the box (objects are not flat)."""
        g = _sample(self.tiles['fine'], box.q * scale, box.p * scale)
        return colour * (1 + 0.12 * g)[:, :, None]

    def _walker(self, canvas: Canvas, view: View, w: Walker, t: float) -> None:
        """Draw a pedestrian at its position of time ``t``."""
        limit = self.world.road_half + 1.6
        u = float(np.clip(w.u + w.vu * t, -limit, limit)) if w.vu else w.u
        s = w.s + w.vs * t
        box = self._box(view, u, s, 0.34 * w.height, w.height, far=HUMAN_DISTANCE)
        if box is None:
            return
        walking = abs(w.vu) + abs(w.vs) > 0 and abs(u) < limit
        swing = (0.35 if w.vu else 0.12) * np.sin(w.phase + 4.5 * t) if walking else 0.02
        self._figure(canvas, box, w, float(swing), _L['person'], self._shade(u, s))

    def _figure(self, canvas: Canvas, box: Box, who: Walker | Cyclist, swing: float,
                label: int, light: float) -> None:
        """Draw a human silhouette (hair, face, top, legs) into ``box``."""
        hair, face, top, legs = _person_parts(box.p, box.q, swing)
        for mask, colour in ((hair, np.array([30, 24, 20], np.float32)), (face, who.skin),
                             (top, who.top), (legs, who.bottom)):
            canvas.draw(box, mask, label, self._grain(box, colour * light))

    def _cyclist(self, canvas: Canvas, view: View, c: Cyclist, t: float) -> None:
        """Draw a rider and the bicycle below."""
        u, s = c.u + c.vu * t, c.s + c.vs * t
        light = self._shade(u, s)
        bike_w = 1.75 * c.side_view + 0.1
        box = self._box(view, u, s + 0.05, bike_w, 1.05, far=HUMAN_DISTANCE)
        if box is not None:
            x = (box.p - 0.5) * bike_w / c.side_view
            y = box.q * 1.05
            parts = np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=bool)
            for hub in (-0.55, 0.55):
                parts |= np.abs(np.hypot(x - hub, y - 0.72) - 0.3) < 0.045
            for a, b in (((-0.55, 0.72), (0.0, 0.75)), ((0.0, 0.75), (-0.12, 0.22)),
                         ((-0.12, 0.22), (0.42, 0.2)), ((0.42, 0.2), (0.0, 0.75)),
                         ((0.42, 0.2), (0.55, 0.72)), ((-0.55, 0.72), (-0.12, 0.22)),
                         ((0.42, 0.2), (0.4, 0.04))):
                parts |= _segment(x, y, a, b, 0.035)
            canvas.draw(box, parts, _L['bicycle'], c.bike * light)
        rider = self._box(view, u, s, 0.3 * c.height, 0.82 * c.height, base=0.45,
                          far=HUMAN_DISTANCE)
        if rider is not None:
            swing = 0.15 * np.sin(6.0 * t + c.s)
            self._figure(canvas, rider, c, float(swing), _L['rider'], light)

    def _car(self, canvas: Canvas, view: View, car: Car, t: float) -> None:
        """Draw a car: its near face (rear or front) and the side facing the camera."""
        s = car.s + car.vs * t
        light = self._shade(car.u, s + car.length / 2)
        colour = car.colour * light
        lamps = np.array([200, 30, 30] if car.vs >= 0 else [235, 230, 200], np.float32)
        side_u = car.u - np.sign(car.u - view.u) * car.width / 2
        self._car_side(canvas, view, car, side_u, s, colour * 0.85)
        box = self._box(view, car.u, s, car.width, car.height)
        if box is None:
            return
        dx, q = np.abs(box.p - 0.5), box.q
        body = ((q > 0.42) & (q < 0.9)) | ((q >= 0.02) & (q <= 0.42) & (dx < 0.4))
        glass = (q > 0.08) & (q < 0.4) & (dx < 0.34)
        lamp = (q > 0.48) & (q < 0.58) & (dx > 0.34) & (dx < 0.47)
        wheels = (q >= 0.86) & (dx > 0.28) & (dx < 0.45)
        canvas.draw(box, glass, _L['car'], np.array([35, 40, 50], np.float32) * light)
        canvas.draw(box, lamp, _L['car'], lamps)
        canvas.draw(box, wheels, _L['car'], np.array([18, 18, 18], np.float32))
        canvas.draw(box, body, _L['car'], self._grain(box, colour, 20.0))

    def _car_side(self, canvas: Canvas, view: View, car: Car, side_u: float, s: float,
                  colour: np.ndarray) -> None:
        """Draw the side of a car as a vertical quad at ``side_u`` (perspective-correct)."""
        s0 = max(s, view.s + NEAR)
        s1 = s + car.length
        if s1 <= s0 or s0 - view.s > VIEW_DISTANCE:
            return
        z0, z1 = s0 - view.s, s1 - view.s
        xa = view.cx + view.f * view.camera_x(side_u, z0) / z0
        xb = view.cx + view.f * view.camera_x(side_u, z1) / z1
        if abs(xb - xa) < 0.5:
            return
        x0 = max(int(np.floor(min(xa, xb))), 0)
        x1 = min(int(np.ceil(max(xa, xb))), self.width)
        if x1 <= x0:
            return
        tt = np.clip((np.arange(x0, x1, dtype=np.float32) + 0.5 - xa) / (xb - xa), 0, 1)
        inv = (1 - tt) / z0 + tt / z1
        z = 1.0 / inv
        lam = ((s0 - s) / car.length) + ((s1 - s0) / car.length) * (tt / z1) / inv
        top, bottom = view.row(car.height, z), view.row(0.0, z)
        y0 = max(int(np.floor(top.min())), 0)
        y1 = min(int(np.ceil(bottom.max())), self.height)
        if y1 <= y0:
            return
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
        q = (ys - top) / (bottom - top)
        box = Box(y0, y1, x0, x1, lam[None, :], q, z[None, :])
        cabin = (q > 0.04) & (q <= 0.42) & (lam > 0.22) & (lam < 0.78)
        glass = cabin & (q > 0.1) & (lam > 0.27) & (lam < 0.73)
        body = (q > 0.42) & (q < 0.86)
        wheel = np.zeros_like(body)
        for hub in (0.17, 0.83):
            wheel |= (((lam - hub) * car.length / 0.33) ** 2
                      + ((q - 0.8) * car.height / 0.33) ** 2 < 1.0)
        canvas.draw(box, wheel & (q < 1.0), _L['car'], np.array([18, 18, 18], np.float32))
        canvas.draw(box, glass, _L['car'], np.array([35, 40, 50], np.float32))
        canvas.draw(box, (body | cabin) & (q > 0), _L['car'], colour)

    def _pole(self, canvas: Canvas, view: View, pole: Pole) -> None:
        """Draw a pole with its sign or traffic light."""
        light = self._shade(pole.u, pole.s)
        box = self._box(view, pole.u, pole.s, pole.width, pole.height)
        if box is not None:
            shine = (0.75 + 0.35 * (1 - (2 * box.p - 1) ** 2))[:, :, None]
            colour = np.broadcast_to(pole.colour * light * shine,
                                     (box.y1 - box.y0, box.x1 - box.x0, 3))
            canvas.draw(box, np.ones(colour.shape[:2], dtype=bool), _L['pole'], colour)
        if pole.attachment == 'sign':
            box = self._box(view, pole.u, pole.s - 0.05, 0.65, 0.65, base=pole.height * 0.45)
            if box is None:
                return
            dx, dy = box.p - 0.5, box.q - 0.5
            shape = ((dx * dx + dy * dy < 0.25, np.ones_like(dx * dy, dtype=bool),
                      box.q > 2 * np.abs(dx))[pole.sign_shape])
            border = ((dx * dx + dy * dy > 0.14), (np.maximum(np.abs(dx), np.abs(dy)) > 0.4),
                      (box.q > 0.82) | (box.q < 2 * np.abs(dx) + 0.15))[pole.sign_shape]
            canvas.draw(box, shape & border, _L['traffic sign'],
                        np.array([235, 235, 235], np.float32) * light)
            canvas.draw(box, shape, _L['traffic sign'], pole.sign_colour * light)
        elif pole.attachment == 'light':
            box = self._box(view, pole.u, pole.s - 0.05, 0.35, 0.95, base=pole.height - 1.2)
            if box is None:
                return
            lit = int(pole.sign_shape) % 3
            lamp = (box.p - 0.5) ** 2 + ((box.q - (0.2 + 0.3 * lit)) / 2.7) ** 2 < 0.02
            canvas.draw(box, lamp, _L['traffic light'],
                        np.array([(230, 40, 30), (240, 170, 30), (40, 220, 90)][lit],
                                 np.float32))
            canvas.draw(box, np.ones_like(lamp), _L['traffic light'],
                        np.array([32, 32, 34], np.float32))

    # -- camera -----------------------------------------------------------------------------
    def _hood(self, canvas: Canvas) -> None:
        """Draw the ego vehicle's bonnet at the bottom (labelId 1, ignored by the tables)."""
        canvas.rgb[self.hood] = self.hood_rgb
        canvas.label[self.hood] = _L['ego vehicle']

    def _expose(self, canvas: Canvas, t: float, rng: np.random.Generator) -> np.ndarray:
        """Apply light level, tint, vignetting, a 2x2 lens blur and sensor noise; return uint8."""
        gain = self.world.gain * (1 + 0.06 * np.sin(2 * np.pi * t / 7.0 + self.world.seed))
        rgb = canvas.rgb
        rgb *= self.light
        for axis in (0, 1):
            head, tail = [slice(None)] * 2, [slice(None)] * 2
            head[axis], tail[axis] = slice(1, None), slice(None, -1)
            rgb[tuple(head)] += rgb[tuple(tail)]
            rgb[(slice(None),) * axis + (0,)] *= 2
        rgb *= np.float32(0.25 * gain)
        dy, dx = rng.integers(0, _NOISE_PAD, 2)
        rgb += self.noise[dy:dy + self.height, dx:dx + self.width]
        rgb += np.float32(0.5)
        return np.clip(rgb, 0, 255, out=rgb).astype(np.uint8)
