"""Embedded benchmark: procedurally rendered fine-grained "dives" in the Diving48 V2 layout.

Why it exists
-------------
FinePseudo's premise (paper Sec. 1, Fig. 1(c)) is that fine-grained actions share one scene, so a
single frame or a temporally pooled appearance says little about the class; the order, number and
kind of action phases decide it, and an alignment distance (DTW) over per-frame features separates
classes that pooled features cannot. This module makes a small dataset with exactly that property,
written so that the Diving48 adapter reads it unchanged: `Diving48_V2_train.json`,
`Diving48_V2_test.json` (lists of {"vid_name", "label", "start_frame", "end_frame"}, end
exclusive), `Diving48_vocab.json` (per label: [takeoff, somersault, twist, flight position]) and
`rgb/<vid_name>.mp4` (H.264, yuv420p, 25 fps), plus `synth_meta.json` (settings, seed, and each
video's nuisance parameters and phase boundaries, which are ground truth for alignment studies).

Scene (identical for every class)
---------------------------------
World units are body-segment lengths (x right, y down). A sky gradient, a far wall with faint
panels, a tower and a board whose end is at x = 0, and water 6.5 units below the board. The
diver is two capsules of equal length hinged at the hip (torso with a dark head cap at its end,
legs) and turns about the hip. The camera follows the diver as broadcast footage does (tracking
gain 0.9 to 1, a lag of up to half a frame) and stops at the surface, so the diver stays near the
frame centre while the board leaves at the top and the water comes in at the bottom.

Phases of a dive (each video)
-----------------------------
1. lead-in: standing upright at the board's end, bouncing (the start offset);
2. take-off: a crouch (hip drops, hip bends) and a push;
3. flight: the hip follows a parabola from the board to the water. Inside a somersault window
   (60-90% of the flight, placed at random) the body folds into its flight position, turns a
   whole number of times at an even pace, twists, and opens again; outside it the body is
   straight and upright;
4. entry: feet first, straight, through the surface (the part under water is faint), a splash;
5. tail: the water settling.

Classes: 2 x 2 x 3 x 3 = 36 attribute combinations
--------------------------------------------------
* takeoff "Forward" / "Back": the direction of the somersaults (head toward the diver's front,
  clockwise in the image, or away from it);
* somersault "10som" / "20som": one or two full turns in the window;
* twist "NoTwis" / "05Twis" / "10Twis": zero, one or two half twists, seen as dips of the body's
  apparent width to 20% (the body edge-on) in the window;
* flight position "STR" / "PIKE" / "TUCK": hip angle 180, 80 or 35 degrees in the window.

Why pooled appearance says little: every somersault is a whole turn about the hip and the legs
fold to the same side of the torso in every class, so classes that differ in takeoff visit the
same poses in reverse order and classes that differ in somersault count visit the same poses a
different number of times; the time average of a figure turning about the centre of the frame
is a blur that only depends on how far its parts are from the hip, and both segments have the
same length whatever the fold. What is left (twists and tight folds put a little less ink on
screen) is smaller than the per-video differences in build and zoom. A single frame shows one
pose at an unknown moment: the dive sits anywhere in the video and the somersault window anywhere
in the flight, so even the middle frame shows a near-random somersault angle. The order, number
and kind of phases decide the class; `benchmarks/synth_separability.py` measures it.

`CLASS_ORDER` lists the combinations so that every prefix spreads each attribute's levels (and
pairs of levels) nearly evenly, and every class of the default 12 has another that differs from
it in one attribute only. Label c is the same combination whatever `classes` is.

Nuisance (each video, drawn from its own seeded generator)
----------------------------------------------------------
Total length (frames x U[0.85, 1.15]); phase durations (lead-in 3-33% of the video, the tail
taking most of the rest of a 36% share; take-off, entry); a smooth monotone time warp inside the
flight; the somersault window's length and place; twist timing (+-0.07 of the window); bounce
amplitude, period and phase; jump height and travel; the diver's build (limb thickness x 0.75 to
1.33); camera tracking gain, lag, shift (+-0.025 of the frame) and zoom (0.85 to 1.15);
brightness (x 0.8 to 1.2) and colour tint (+-5% per channel); Gaussian luminance noise (sigma 1
to 6 grey levels); and up to 2 lead-in frames trimmed through `start_frame` (`end_frame` is the
video's frame count). Video (class c, index k) depends only on (seed, c, k, frames, size), so a
set made with more classes or more videos per class holds the smaller one's videos (under other
names); names are shuffled so that neither name nor order reveals the class. The first
round(K x test_fraction) videos of each class (at least one, at most K - 1) are the test set.

Determinism: the same seed and settings give the same MP4 bytes (x264 runs single-threaded, and
without its AVX-512 code, see `x264_cpu_options`) and so the same decoded frames; another seed gives
other videos.

The separability claim is checked by `benchmarks/synth_separability.py DATA_DIR` (measured
numbers in its docstring). At the default length a 2-somersault dive turns once in 9 to 12
frames (at worst about 5); a 16-frame clip spread over the whole video still sees 3 to 4 frames per
turn, which a small 3D CNN learned from, but 32-frame clips or stride 2 see the turns better.
"""

from __future__ import annotations

import json
import math
import operator
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from fgar_cli import __version__
from fgar_cli.artifacts import atomic_write_json
from fgar_cli.errors import FgarError
from fgar_cli.files import atomic_path

TRAIN_JSON = "Diving48_V2_train.json"
TEST_JSON = "Diving48_V2_test.json"
VOCAB_JSON = "Diving48_vocab.json"
META_JSON = "synth_meta.json"
VIDEO_DIR = "rgb"
META_SCHEMA = "fgar.synth"
META_VERSION = 1
FPS = 25

ATTRIBUTES: tuple[tuple[str, ...], ...] = (
    ("Forward", "Back"),
    ("10som", "20som"),
    ("NoTwis", "05Twis", "10Twis"),
    ("STR", "PIKE", "TUCK"),
)
ATTRIBUTE_NAMES = ("takeoff", "somersault", "twist", "flight_position")

# Label -> attribute level indices. Chosen by a seeded random-restart greedy search over orderings
# of the 36 combinations that scored every prefix on the balance of each attribute's levels, the
# balance and correlation of each pair of attributes (twist with flight position weighted most:
# both change how much of the body is on screen, which a pooled feature can see), and on how many
# classes have a sibling one attribute away (fine-grained pairs). The first 12 use every level
# equally often and each has such a sibling. Kept literal so that labels never change.
CLASS_ORDER: tuple[tuple[int, int, int, int], ...] = (
    (0, 0, 0, 0),
    (1, 1, 2, 2),
    (1, 1, 2, 0),
    (0, 0, 0, 2),
    (0, 1, 1, 1),
    (1, 0, 1, 1),
    (1, 0, 0, 1),
    (0, 1, 2, 1),
    (1, 1, 1, 0),
    (0, 0, 1, 2),
    (0, 0, 2, 0),
    (1, 1, 0, 2),
    (1, 0, 2, 1),
    (0, 1, 0, 0),
    (0, 1, 1, 2),
    (1, 0, 1, 0),
    (0, 0, 2, 2),
    (1, 1, 0, 1),
    (0, 1, 1, 0),
    (1, 0, 0, 2),
    (0, 0, 2, 1),
    (1, 1, 1, 2),
    (1, 0, 2, 0),
    (0, 1, 0, 1),
    (1, 0, 0, 0),
    (0, 1, 2, 2),
    (0, 0, 1, 1),
    (1, 1, 2, 1),
    (1, 0, 1, 2),
    (1, 1, 0, 0),
    (0, 1, 2, 0),
    (0, 0, 0, 1),
    (0, 0, 1, 0),
    (1, 1, 1, 1),
    (1, 0, 2, 2),
    (0, 1, 0, 2),
)
MAX_CLASSES = len(CLASS_ORDER)

DEFAULT_CLASSES = 12
DEFAULT_VIDEOS_PER_CLASS = 36
DEFAULT_FRAMES = 48
DEFAULT_SIZE = 64
DEFAULT_TEST_FRACTION = 0.25

# Scene and figure geometry, in world units (one body segment = 1; y points down).
SEGMENT_LEN = 1.0
TORSO_RADIUS = 0.23
LEGS_RADIUS = 0.19
HEAD_RADIUS = 0.28
HEAD_OFFSET = 1.22
BOARD_END_X = 0.0
BOARD_THICKNESS = 0.22
WATER_Y = 6.5
STAND_HIP = (-0.4, -1.02)
CAMERA_ANCHOR = (0.6, 2.5)  # where an untracking camera would point
VIEW_SCALE = 0.18  # frame widths per world unit at zoom 1: the frame spans about 5.5 segments
HIP_ANGLES = (math.pi, math.radians(80), math.radians(35))  # STR, PIKE, TUCK
FOLD_SIDE = -1.0  # legs fold toward the diver's front (+x at take-off) in every class
TWIST_DEPTH = 0.8  # apparent width falls to 20% when the body is edge-on
UNDERWATER_VISIBILITY = 0.15

SKY_TOP = np.array([0.52, 0.68, 0.86], np.float32)
SKY_HORIZON = np.array([0.80, 0.87, 0.93], np.float32)
WALL_COLOR = np.array([0.70, 0.72, 0.74], np.float32)
WATER_TOP = np.array([0.26, 0.52, 0.68], np.float32)
WATER_BOTTOM = np.array([0.16, 0.38, 0.55], np.float32)
BOARD_COLOR = np.array([0.36, 0.31, 0.26], np.float32)
TOWER_COLOR = np.array([0.64, 0.62, 0.60], np.float32)
TORSO_COLOR = np.array([0.66, 0.14, 0.14], np.float32)
LEGS_COLOR = np.array([0.58, 0.38, 0.28], np.float32)
HEAD_COLOR = np.array([0.08, 0.08, 0.10], np.float32)
SPLASH_COLOR = np.array([0.95, 0.97, 1.0], np.float32)


# --------------------------------------------------------------------------- class vocabulary


def class_attributes(label: int) -> tuple[str, str, str, str]:
    """The four attribute names of class `label`: [takeoff, somersault, twist, flight position]."""
    levels = CLASS_ORDER[label]
    return tuple(ATTRIBUTES[a][levels[a]] for a in range(4))  # type: ignore[return-value]


def vocabulary(classes: int) -> list[list[str]]:
    return [list(class_attributes(c)) for c in range(classes)]


# --------------------------------------------------------------------------- per-video parameters


@dataclass
class DiveSpec:
    """Everything that decides one video: its class attributes and its nuisance draws."""

    label: int
    direction: float  # +1 clockwise in the image (Forward), -1 (Back)
    somersaults: int
    twists: int
    hip_angle: float  # radians during the somersaults
    num_frames: int
    t_takeoff: float  # phase boundaries in frames (continuous time; frame k is at time k)
    t_flight: float
    t_entry: float
    t_submerged: float
    flight_warp: float  # amplitude of the monotone time warp inside the flight
    window_start: float  # the somersaults happen for flight time s in [start, start + length]
    window_length: float
    bounce_amp: float
    bounce_period: float
    bounce_phase: float
    rise: float  # how far the hip rises above its standing height
    entry_x: float
    twist_centres: list[float] = field(default_factory=list)  # as fractions of the window
    build: float = 1.0  # the diver's thickness (scales the limb radii)
    track: float = 1.0  # 1: the camera follows the diver exactly; 0: it stays on CAMERA_ANCHOR
    lag: float = 0.0  # frames the camera lags behind the diver
    shift: tuple[float, float] = (0.0, 0.0)  # in frame widths
    zoom: float = 1.0
    gain: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise: float = 0.0  # pixel noise sigma, in [0, 1] intensity units
    start_frame: int = 0
    splash_seeds: list[tuple[float, float, float]] = field(default_factory=list)


def sample_spec(seed: int, label: int, index: int, frames: int) -> DiveSpec:
    """Draw video `index` of class `label`; depends only on (seed, label, index, frames)."""
    rng = np.random.default_rng([seed, label, index, 0x5D1FE])
    take, som, twist, pos = CLASS_ORDER[label]
    n = max(16, int(round(frames * rng.uniform(0.85, 1.15))))
    # Phase lengths as fractions of the video. The dive sits anywhere in the video (the lead-in
    # and the tail share about 36% of it), and the somersaults fill a random window of the
    # flight, so the frame at a fixed relative time shows a different pose in every video.
    lead = rng.uniform(0.03, 0.33) * n
    tail = max(0.03, 0.36 - lead / n + rng.uniform(-0.03, 0.03)) * n
    takeoff = rng.uniform(0.05, 0.07) * n
    entry = rng.uniform(0.07, 0.09) * n
    flight = n - lead - takeoff - entry - tail
    window = rng.uniform(0.6, 0.9)
    # Twist dips sit evenly in the somersault window, each moved a little per video.
    centres = {0: [], 1: [0.5], 2: [0.33, 0.67]}[twist]
    centres = [float(c + rng.uniform(-0.07, 0.07)) for c in centres]
    splash = [(float(rng.uniform(-1, 1)), float(rng.uniform(0, 1)), float(rng.uniform(0.6, 1.0))) for _ in range(7)]
    return DiveSpec(
        label=label,
        direction=1.0 if take == 0 else -1.0,
        somersaults=som + 1,
        twists=twist,
        hip_angle=HIP_ANGLES[pos],
        num_frames=n,
        t_takeoff=lead,
        t_flight=lead + takeoff,
        t_entry=lead + takeoff + flight,
        t_submerged=lead + takeoff + flight + entry,
        flight_warp=float(rng.uniform(-0.4, 0.4)),
        window_start=float(rng.uniform(0, 1 - window)),
        window_length=float(window),
        bounce_amp=float(rng.uniform(0.05, 0.2)),
        bounce_period=float(rng.uniform(4.0, 7.0)),
        bounce_phase=float(rng.uniform(0, 1)),
        rise=float(rng.uniform(0.5, 1.2)),
        entry_x=float(rng.uniform(1.0, 2.0)),
        twist_centres=centres,
        build=float(rng.uniform(0.75, 1.33)),
        track=float(rng.uniform(0.9, 1.0)),
        lag=float(rng.uniform(0.0, 0.5)),
        shift=(float(rng.uniform(-0.025, 0.025)), float(rng.uniform(-0.025, 0.025))),
        zoom=float(rng.uniform(0.85, 1.15)),
        gain=float(rng.uniform(0.8, 1.2)),
        tint=tuple(float(v) for v in rng.uniform(0.95, 1.05, 3)),  # type: ignore[arg-type]
        noise=float(rng.uniform(1.0, 6.0) / 255.0),
        start_frame=int(rng.integers(0, max(1, min(3, int(lead))))),
        splash_seeds=splash,
    )


# --------------------------------------------------------------------------- motion over time


@dataclass
class Pose:
    hip: tuple[float, float]
    torso_angle: float  # 0 = head up, increasing clockwise in the image
    hip_angle: float  # pi = straight
    width: float  # apparent width factor (twists)


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


def _flight_hip(spec: DiveSpec, s: float) -> tuple[float, float]:
    """Hip on a parabola from the board (s = 0) to feet touching the water (s = 1), peaking `rise` up."""
    x0, y0 = STAND_HIP
    drop = WATER_Y - SEGMENT_LEN - y0
    a = -2 * spec.rise - 2 * math.sqrt(spec.rise**2 + spec.rise * drop)  # y = y0 + a s + b s^2
    b = drop - a
    return x0 + (spec.entry_x - x0) * s, y0 + a * s + b * s * s


def _entry_hip(spec: DiveSpec, t: float) -> tuple[float, float]:
    """Straight down from feet-on-water until the head is under (at t_submerged), then slower."""
    u = (t - spec.t_entry) / (spec.t_submerged - spec.t_entry)
    depth = 2.8 * u if u <= 1 else 2.8 + 0.4 * (u - 1)
    return spec.entry_x, WATER_Y - SEGMENT_LEN + depth


def pose_at(spec: DiveSpec, t: float) -> Pose | None:
    """The diver's pose at time t (frames), or None once fully under water."""
    x0, y0 = STAND_HIP
    if t < spec.t_takeoff:  # lead-in: bouncing on the board
        bounce = abs(math.sin(math.pi * (t / spec.bounce_period + spec.bounce_phase)))
        return Pose((x0, y0 - spec.bounce_amp * bounce), 0.0, math.pi, 1.0)
    if t < spec.t_flight:  # take-off: crouch and push
        crouch = math.sin(math.pi * (t - spec.t_takeoff) / (spec.t_flight - spec.t_takeoff))
        return Pose((x0, y0 + 0.3 * crouch), 0.0, math.pi - 0.6 * crouch, 1.0)
    if t < spec.t_entry:  # flight
        u = (t - spec.t_flight) / (spec.t_entry - spec.t_flight)
        s = u - spec.flight_warp * math.sin(2 * math.pi * u) / (2 * math.pi)  # monotone time warp
        # Straight and upright outside the somersault window; inside it the body folds, turns
        # `somersaults` full times at an even pace, twists, and opens again.
        r = min(max((s - spec.window_start) / spec.window_length, 0.0), 1.0)
        angle = spec.direction * 2 * math.pi * spec.somersaults * r
        fold = _smoothstep(r / 0.15) * _smoothstep((1 - r) / 0.15)
        width = 1.0
        for c in spec.twist_centres:
            z = (r - c) / 0.15
            if abs(z) < 1:
                width -= TWIST_DEPTH * math.cos(math.pi * z / 2) ** 2
        return Pose(_flight_hip(spec, s), angle, math.pi - (math.pi - spec.hip_angle) * fold, width)
    if t < spec.t_submerged + 1:  # entry: feet first, straight, through the surface
        return Pose(_entry_hip(spec, t), 0.0, math.pi, 1.0)
    return None


def hip_at(spec: DiveSpec, t: float) -> tuple[float, float]:
    """Where the hip is at any time (also before the video starts and after it is submerged)."""
    pose = pose_at(spec, max(t, 0.0))
    return pose.hip if pose is not None else _entry_hip(spec, t)


def phase_frames(spec: DiveSpec) -> dict[str, int]:
    """First frame of each phase (frame k shows time k)."""
    return {
        "takeoff": math.ceil(spec.t_takeoff),
        "flight": math.ceil(spec.t_flight),
        "entry": math.ceil(spec.t_entry),
        "submerged": math.ceil(spec.t_submerged),
    }


# --------------------------------------------------------------------------- rendering


@dataclass
class Camera:
    size: int
    centre: tuple[float, float]  # world point shown at the frame centre (before `shift`)
    scale: float  # frame widths per world unit
    shift: tuple[float, float]

    def to_pixels(self, x: float, y: float) -> tuple[float, float]:
        sx = ((x - self.centre[0]) * self.scale + 0.5 + self.shift[0]) * self.size
        sy = ((y - self.centre[1]) * self.scale + 0.5 + self.shift[1]) * self.size
        return sx, sy


def camera_at(spec: DiveSpec, t: float, size: int) -> Camera:
    """A camera that follows the diver (broadcast style), lagging, and stops at the surface."""
    hx, hy = hip_at(spec, t - spec.lag)
    cx = CAMERA_ANCHOR[0] + spec.track * (hx - CAMERA_ANCHOR[0])
    cy = CAMERA_ANCHOR[1] + spec.track * (hy - CAMERA_ANCHOR[1])
    return Camera(size, (cx, min(cy, WATER_Y - 0.8)), VIEW_SCALE * spec.zoom, spec.shift)


def _ramp(v: np.ndarray, edge: float, pixel: float) -> np.ndarray:
    """Anti-aliased step: 0 below `edge`, 1 above, over one pixel."""
    return np.clip((v - edge) / pixel + 0.5, 0.0, 1.0)[..., None]


def render_background(wx: np.ndarray, wy: np.ndarray, pixel: float) -> np.ndarray:
    """The shared scene at world points (wx, wy): (H, W, 4) float32, RGB in [0, 1] and the
    under-water fraction. `pixel` is the pixel pitch in world units (for anti-aliasing)."""
    sky_t = np.clip((wy + 6.0) / 7.5, 0, 1)[..., None]
    img = SKY_TOP * (1 - sky_t) + SKY_HORIZON * sky_t
    # A far wall with faint panels gives the tracking camera's motion something to show.
    panels = (0.015 * np.sin(2 * np.pi * wy / 1.3) + 0.01 * np.cos(2 * np.pi * wx / 2.5))[..., None]
    wall = _ramp(wy, 1.5, pixel)
    img = img * (1 - wall) + (WALL_COLOR + panels) * wall
    tower = _ramp(wx, -2.7, pixel) * _ramp(-wx, 2.1, pixel) * _ramp(wy, BOARD_THICKNESS, pixel)
    img = img * (1 - tower) + TOWER_COLOR * tower
    board = _ramp(-wx, -BOARD_END_X, pixel) * _ramp(wy, 0.0, pixel) * _ramp(-wy, -BOARD_THICKNESS, pixel)
    img = img * (1 - board) + BOARD_COLOR * board
    water = _ramp(wy, WATER_Y, pixel)
    depth = np.clip((wy - WATER_Y) / 3.0, 0, 1)[..., None]
    ripple = 0.025 * np.sin(wy * 12.0 + 0.7 * np.sin(wx * 1.1))[..., None]
    img = img * (1 - water) + (WATER_TOP * (1 - depth) + WATER_BOTTOM * depth + ripple) * water
    return np.concatenate([img, water], axis=-1).astype(np.float32)


def background_frames(cameras: list[Camera]) -> np.ndarray:
    """The background of every frame, (T, H, W, 4): the scene is rendered once on a canvas that
    covers the whole camera path (the camera only translates within a video), then each frame is
    a bilinear, sub-pixel crop of it."""
    size, scale, shift = cameras[0].size, cameras[0].scale, cameras[0].shift
    pitch = 1.0 / (size * scale)
    # Canvas pixel (0, 0) sits at the world point that frame pixel (0, 0) shows for the
    # smallest camera centre; a frame's offset into the canvas is its centre's distance from it.
    centres = np.array([c.centre for c in cameras], np.float64)
    low = centres.min(0)
    offsets = (centres - low) / pitch  # (T, 2) canvas pixels, x then y
    extent = np.ceil(offsets.max(0)).astype(int) + size + 2
    origin = (0.5 / size - 0.5 - np.asarray(shift)) / scale + low  # world point of canvas pixel (0, 0)
    wx, wy = np.meshgrid(origin[0] + pitch * np.arange(extent[0]), origin[1] + pitch * np.arange(extent[1]))
    canvas = render_background(wx.astype(np.float32), wy.astype(np.float32), pitch)
    frames = np.empty((len(cameras), size, size, 4), np.float32)
    for k, (ox, oy) in enumerate(offsets):
        ix, iy = int(ox), int(oy)
        fx, fy = np.float32(ox - ix), np.float32(oy - iy)
        top = canvas[iy : iy + size, ix : ix + size] * (1 - fx) + canvas[iy : iy + size, ix + 1 : ix + size + 1] * fx
        bottom = (
            canvas[iy + 1 : iy + size + 1, ix : ix + size] * (1 - fx)
            + canvas[iy + 1 : iy + size + 1, ix + 1 : ix + size + 1] * fx
        )
        frames[k] = top * (1 - fy) + bottom * fy
    return frames


def _direction(angle: float) -> tuple[float, float]:
    return math.sin(angle), -math.cos(angle)


def _figure_parts(pose: Pose, build: float) -> list[tuple[tuple[float, float], tuple[float, float], float, np.ndarray]]:
    """Capsules (start, end, radius, colour) in world units, drawn back to front."""
    hx, hy = pose.hip
    tdx, tdy = _direction(pose.torso_angle)
    ldx, ldy = _direction(pose.torso_angle + math.pi + FOLD_SIDE * (math.pi - pose.hip_angle))
    shoulder = (hx + SEGMENT_LEN * tdx, hy + SEGMENT_LEN * tdy)
    feet = (hx + SEGMENT_LEN * ldx, hy + SEGMENT_LEN * ldy)
    head = (hx + HEAD_OFFSET * tdx, hy + HEAD_OFFSET * tdy)
    return [
        (pose.hip, feet, LEGS_RADIUS * build * pose.width, LEGS_COLOR),
        (pose.hip, shoulder, TORSO_RADIUS * build * pose.width, TORSO_COLOR),
        (head, head, HEAD_RADIUS, HEAD_COLOR),
    ]


def _draw_capsule(
    img: np.ndarray,
    water: np.ndarray | None,
    a: tuple[float, float],
    b: tuple[float, float],
    radius: float,
    color: np.ndarray,
) -> None:
    """Paint an anti-aliased capsule (pixel units) onto img in place, inside its bounding box;
    where `water` (the under-water fraction per pixel) is given, the part under water is faint."""
    size = img.shape[0]
    x_lo = max(0, int(math.floor(min(a[0], b[0]) - radius - 1)))
    x_hi = min(size, int(math.ceil(max(a[0], b[0]) + radius + 1)))
    y_lo = max(0, int(math.floor(min(a[1], b[1]) - radius - 1)))
    y_hi = min(size, int(math.ceil(max(a[1], b[1]) + radius + 1)))
    if x_lo >= x_hi or y_lo >= y_hi:
        return
    px = np.arange(x_lo, x_hi, dtype=np.float32)[None, :] + 0.5
    py = np.arange(y_lo, y_hi, dtype=np.float32)[:, None] + 0.5
    abx, aby = b[0] - a[0], b[1] - a[1]
    denom = abx * abx + aby * aby
    t = 0.0 if denom < 1e-9 else np.clip(((px - a[0]) * abx + (py - a[1]) * aby) / denom, 0.0, 1.0)
    dist = np.hypot(px - (a[0] + t * abx), py - (a[1] + t * aby))
    cover = np.clip(radius + 0.5 - dist, 0.0, 1.0)
    if water is not None:
        cover = cover * (1.0 - (1.0 - UNDERWATER_VISIBILITY) * water[y_lo:y_hi, x_lo:x_hi])
    patch = img[y_lo:y_hi, x_lo:x_hi]
    patch += (color - patch) * cover[..., None]


def _draw_splash(img: np.ndarray, spec: DiveSpec, camera: Camera, t: float) -> None:
    """White droplets at the entry point, rising after the feet touch the water and fading."""
    age = (t - spec.t_entry) / max(1.0, spec.t_submerged - spec.t_entry)
    if age < 0 or age > 2.2:
        return
    strength = math.sin(math.pi * age / 2.2)
    for dx, rise, r in spec.splash_seeds:
        centre = camera.to_pixels(spec.entry_x + 0.6 * dx * (0.5 + age), WATER_Y - 0.7 * rise * strength)
        radius = 0.2 * r * strength * camera.scale * camera.size
        if radius > 0.2:
            _draw_capsule(img, None, centre, centre, radius, SPLASH_COLOR)


def render_video(spec: DiveSpec, size: int, seed: int, index: int) -> np.ndarray:
    """All frames of one video, (T, size, size, 3) uint8."""
    cameras = [camera_at(spec, float(k), size) for k in range(spec.num_frames)]
    canvas = background_frames(cameras)  # the figure and splash are painted into it in place
    for k, camera in enumerate(cameras):
        img, water = canvas[k, ..., :3], canvas[k, ..., 3]
        pose = pose_at(spec, float(k))
        if pose is not None:
            for a, b, radius, color in _figure_parts(pose, spec.build):
                pa, pb = camera.to_pixels(*a), camera.to_pixels(*b)
                _draw_capsule(img, water, pa, pb, radius * camera.scale * size, color)
        _draw_splash(img, spec, camera, float(k))
    noise_rng = np.random.default_rng([seed, spec.label, index, 0x0015E])
    # Luminance noise (one draw per pixel, all channels): a third of the cost of RGB noise.
    noise = noise_rng.standard_normal((spec.num_frames, size, size, 1), dtype=np.float32)
    video = canvas[..., :3] * (np.asarray(spec.tint, np.float32) * np.float32(spec.gain * 255.0))
    video += noise * np.float32(spec.noise * 255.0)
    video += np.float32(0.5)
    return np.clip(video, 0, 255, out=video).astype(np.uint8)


# --------------------------------------------------------------------------- writing


def write_mp4(path: Path, frames: np.ndarray) -> None:
    """H.264 (libx264, yuv420p) MP4, written to a temporary name and renamed into place."""
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=FPS)
            stream.width = frames.shape[2]
            stream.height = frames.shape[1]
            stream.pix_fmt = "yuv420p"
            # One thread: x264's output is then byte-identical run to run.
            stream.options = {"crf": "18", "preset": "veryfast", "threads": "1", **x264_cpu_options()}
            stream.codec_context.time_base = Fraction(1, FPS)
            for k, array in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(array, format="rgb24")
                frame.pts = k
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))


def x264_cpu_options() -> dict[str, str]:
    """x264 limited to AVX2 on CPUs with AVX-512, so that the same frames give the same bytes.

    With its AVX-512 code, the libx264 that PyAV ships encoded the same frames differently from one
    call to the next (an Intel Xeon with AVX-512, 2026-12-02: about one 32 x 32 video in six, in one process), which
    reads like a kernel that looks at memory it did not write. Its AVX2 code gave the same bytes on
    every call, equal to the usual AVX-512 result. Every AVX-512 CPU also has AVX2, so nothing else
    changes; other CPUs keep x264's own choice."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__  # numpy's runtime CPU detection
    except ImportError:  # a numpy without it: keep x264's choice
        return {}
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    return {"x264-params": "asm=AVX2"} if x86 and __cpu_features__.get("AVX512F") else {}


@dataclass
class SynthSummary:
    out_dir: str
    seed: int
    classes: int
    videos: int
    train: int
    test: int
    frames_min: int
    frames_max: int
    size: int
    seconds: float


def validate_options(classes: int, videos_per_class: int, frames: int, size: int, test_fraction: float) -> None:
    """One-line FgarError for any setting the generator cannot honour."""
    if not 2 <= classes <= MAX_CLASSES:
        raise FgarError(f"--classes must be between 2 and {MAX_CLASSES} (the attribute combinations), got {classes}")
    if not 1 <= videos_per_class <= 10_000:
        raise FgarError(f"--videos-per-class must be between 1 and 10000, got {videos_per_class}")
    if not 16 <= frames <= 1024:
        raise FgarError(f"--frames must be between 16 and 1024, got {frames}")
    if not 32 <= size <= 512 or size % 2:
        raise FgarError(f"--size must be an even number of pixels between 32 and 512 (H.264 4:2:0), got {size}")
    if not 0.0 <= test_fraction < 1.0:
        raise FgarError(f"--test-fraction must be in [0, 1), got {test_fraction}")


def _test_count(videos_per_class: int, test_fraction: float) -> int:
    """Test videos per class: round(fraction * K), at least one when asked, at least one left to train."""
    if test_fraction <= 0 or videos_per_class < 2:
        return 0
    return min(videos_per_class - 1, max(1, round(videos_per_class * test_fraction)))


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FgarError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FgarError(f"{out}: folder is not empty (pass --overwrite to replace a synthetic dataset there)")
        if not (out / META_JSON).is_file():
            raise FgarError(f"{out}: has no {META_JSON}, so it is not a synthetic dataset; refusing to overwrite")
        # Stale videos of an earlier, larger set (or temporaries of a killed run) would otherwise
        # sit beside the new ones.
        for old in [*(out / VIDEO_DIR).glob("*.mp4"), *(out / VIDEO_DIR).glob(".*.tmp")]:
            old.unlink()
        for name in (TRAIN_JSON, TEST_JSON, VOCAB_JSON):
            (out / name).unlink(missing_ok=True)
    try:
        (out / VIDEO_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FgarError(f"{out}: cannot create the output folder ({exc.strerror})") from None


def generate(
    out_dir: str | Path,
    seed: int = 0,
    classes: int = DEFAULT_CLASSES,
    videos_per_class: int = DEFAULT_VIDEOS_PER_CLASS,
    frames: int = DEFAULT_FRAMES,
    size: int = DEFAULT_SIZE,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Render a synthetic Diving48-layout dataset into `out_dir`; see the module docstring.

    `progress(done, total)` is called after each video. JSON files are written after all videos,
    atomically, so a folder with `Diving48_V2_train.json` holds a complete dataset.
    """
    validate_options(classes, videos_per_class, frames, size, test_fraction)
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    started = time.perf_counter()
    settings = {
        "seed": seed,
        "classes": classes,
        "videos_per_class": videos_per_class,
        "frames": frames,
        "size": size,
        "test_fraction": test_fraction,
        "fps": FPS,
    }
    # Written first as well, so a folder left by a killed run is recognised by --overwrite.
    _write_meta(out, settings, records=None)
    n_test = _test_count(videos_per_class, test_fraction)
    total = classes * videos_per_class
    # Names come from a seeded shuffle so that neither name nor order gives the class away.
    numbers = np.random.default_rng([seed, 0x4A3E]).permutation(total)
    train: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    for v in range(total):
        label, index = divmod(v, videos_per_class)
        spec = sample_spec(seed, label, index, frames)
        name = f"synth{seed}_{int(numbers[v]):05d}"
        write_mp4(out / VIDEO_DIR / f"{name}.mp4", render_video(spec, size, seed, index))
        entry = {"vid_name": name, "label": label, "start_frame": spec.start_frame, "end_frame": spec.num_frames}
        (test if index < n_test else train).append(entry)
        records.append(
            {
                "vid_name": name,
                "subset": "test" if index < n_test else "train",
                "phases": phase_frames(spec),
                **_spec_record(spec),
            }
        )
        if progress is not None:
            progress(v + 1, total)
    by_name = operator.itemgetter("vid_name")
    atomic_write_json(out / TRAIN_JSON, sorted(train, key=by_name))
    atomic_write_json(out / TEST_JSON, sorted(test, key=by_name))
    atomic_write_json(out / VOCAB_JSON, vocabulary(classes))
    _write_meta(out, settings, sorted(records, key=by_name))
    lengths = [r["num_frames"] for r in records]
    return SynthSummary(
        out_dir=str(out),
        seed=seed,
        classes=classes,
        videos=total,
        train=len(train),
        test=len(test),
        frames_min=min(lengths),
        frames_max=max(lengths),
        size=size,
        seconds=time.perf_counter() - started,
    )


def _write_meta(out: Path, settings: dict[str, Any], records: list[dict[str, Any]] | None) -> None:
    """synth_meta.json: settings, attribute lists and, once complete, each video's parameters."""
    atomic_write_json(
        out / META_JSON,
        {
            "schema": META_SCHEMA,
            "schema_version": META_VERSION,
            "created_by": f"fgar {__version__}",
            "complete": records is not None,
            "settings": settings,
            "attributes": dict(zip(ATTRIBUTE_NAMES, ATTRIBUTES, strict=True)),
            "videos": records or [],
        },
    )


def _spec_record(spec: DiveSpec) -> dict[str, Any]:
    """The spec as JSON-friendly values (rounded: it documents, it is not re-read to render)."""
    record = asdict(spec)
    record.pop("splash_seeds")
    return json.loads(json.dumps(record), parse_float=lambda s: round(float(s), 5))
