"""A small SYNTHIA -> Cityscapes stand-in: generated street scenes in the real file layouts.

``write_seg_demo(root)`` writes::

    root/seg_demo.json                                   what was written (the demo's marker)
    root/synthia/RGB/0000000.png                         source images
    root/synthia/GT/LABELS/0000000.png                   16-bit, 3 channels, class id in red
    root/synthia/GT/LABELS16/0000000.png                 train ids (converted)
    root/cityscapes/leftImg8bit/{train,val}/democity/democity_000000_000019_leftImg8bit.png
    root/cityscapes/gtFine/{train,val}/democity/democity_000000_000019_gtFine_labelIds.png
    root/cityscapes/gtFine/{train,val}/democity/democity_000000_000019_gtFine_labelTrainIds16.png

(file numbers run on from train to val, so every target name is unique), and the datasets,
converter and configs run on it exactly as on the real data. The raw labels
hold real SYNTHIA class ids / Cityscapes label ids and are converted by the same functions as
the real files (:mod:`.convert`).

The scenes are drawn from a label map: sky, buildings, trees, road with sidewalks, poles with
traffic signs, cars and persons (9 of the 16 classes). Each domain renders them differently:

* source (SYNTHIA-like): flat saturated colours (the Cityscapes palette), little noise, a high
  horizon, tall buildings, many persons, white lane markings (SYNTHIA's ``lanemarking``, id 22,
  which the 16-class protocol ignores).
* target (Cityscapes-like): other colours for five classes (a grey road, a beige sidewalk,
  brown buildings, dark poles, purple persons; sky, trees, signs and cars keep roughly theirs),
  a colour cast and brightness change per image, blotchy brightness texture, pixel noise, blur,
  a lower horizon, more cars, and the ego vehicle's bonnet at the bottom (label id 1, ignored).

The recoloured classes are closer in colour to a *different* source class than to their own,
so a model trained on source labels alone does badly on them, while target labels fix it: the
gap active domain adaptation closes. Only numpy and OpenCV are used.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saal_tasks.core.errors import ConfigError

from .classes import CITYSCAPES_TO_TRAIN, IGNORE_INDEX, PALETTE16, SYNTHIA_TO_TRAIN
from .convert import (CITYSCAPES_IMG_DIR, CITYSCAPES_IMG_SUFFIX, CITYSCAPES_LABEL_DIR,
                      CITYSCAPES_LABEL_SUFFIX, CITYSCAPES_RAW_SUFFIX, SYNTHIA_IMG_DIR,
                      SYNTHIA_LABEL_DIR, SYNTHIA_RAW_LABEL_DIR, convert_cityscapes_file,
                      convert_synthia_file, write_png_atomic)

__all__ = ['DEMO_CITY', 'DEMO_CLASS_IDS', 'MARKER', 'SOURCE_STYLE', 'TARGET_STYLE', 'DomainStyle',
           'draw_scene', 'write_seg_demo']

#: The marker file: present only in folders this module wrote (what makes rewriting safe).
MARKER = 'seg_demo.json'
#: City name of the generated Cityscapes files.
DEMO_CITY = 'democity'

ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, SKY, PERSON, CAR = 0, 1, 2, 5, 7, 8, 9, 10, 12
#: Train ids that appear in the demo.
DEMO_CLASS_IDS = (ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, SKY, PERSON, CAR)
#: Raw ids of the ignored regions: SYNTHIA ``lanemarking`` and Cityscapes ``ego vehicle``.
SYNTHIA_LANEMARKING_ID = 22
CITYSCAPES_EGO_VEHICLE_ID = 1

_TRAIN_TO_SYNTHIA = {train: raw for raw, train in SYNTHIA_TO_TRAIN.items()}
_TRAIN_TO_CITYSCAPES = {train: raw for raw, train in CITYSCAPES_TO_TRAIN.items()}


@dataclass(frozen=True)
class DomainStyle:
    """How one domain lays out and renders a scene.

    Attributes:
        colours: RGB base colour per train id.
        colour_jitter: Per-object uniform colour change, +- this much per channel.
        noise: Standard deviation of per-pixel Gaussian noise.
        texture: Amplitude of smooth blotchy brightness noise (low-frequency).
        blur: Gaussian blur kernel size (0 = none).
        cast: Per-image, per-channel gain range ``(low, high)`` (colour cast).
        brightness: Per-image gain range.
        horizon: Range of the horizon height as a fraction of the image height.
        building_height: Range of building heights as a fraction of the image height.
        cars, persons, poles, trees: Inclusive ranges of object counts.
        lane_markings: Draw dashed lane markings (ignored pixels) on the road.
        bonnet: Range of the ego vehicle's height at the bottom (fraction; (0, 0) = none).
    """

    colours: dict[int, tuple[int, int, int]]
    colour_jitter: int
    noise: float
    texture: float
    blur: int
    cast: tuple[float, float]
    brightness: tuple[float, float]
    horizon: tuple[float, float]
    building_height: tuple[float, float]
    cars: tuple[int, int]
    persons: tuple[int, int]
    poles: tuple[int, int]
    trees: tuple[int, int]
    lane_markings: bool
    bonnet: tuple[float, float]


#: The source look: the Cityscapes palette, flat.
SOURCE_STYLE = DomainStyle(
    colours={c: PALETTE16[c] for c in DEMO_CLASS_IDS}, colour_jitter=10, noise=3.0, texture=0.0,
    blur=0, cast=(1.0, 1.0), brightness=(0.95, 1.05), horizon=(0.35, 0.48),
    building_height=(0.15, 0.35), cars=(0, 3), persons=(1, 4), poles=(1, 4), trees=(0, 2),
    lane_markings=True, bonnet=(0.0, 0.0))
#: The target look. Comments: the source class each colour is nearest to (the confusion a
#: source-only model makes).
TARGET_STYLE = DomainStyle(
    colours={ROAD: (95, 95, 100),          # building
             SIDEWALK: (170, 150, 120),    # pole
             BUILDING: (150, 110, 80),     # vegetation
             POLE: (60, 60, 55),           # building
             SIGN: (230, 200, 40),         # traffic sign (kept)
             VEGETATION: (80, 130, 60),    # vegetation (kept)
             SKY: (110, 150, 190),         # sky (kept)
             PERSON: (150, 60, 150),       # road
             CAR: (30, 30, 110)},          # car (kept)
    colour_jitter=12, noise=6.0, texture=10.0, blur=3, cast=(0.92, 1.08),
    brightness=(0.85, 1.1), horizon=(0.5, 0.6), building_height=(0.12, 0.3), cars=(1, 4),
    persons=(0, 2), poles=(0, 3), trees=(1, 3), lane_markings=False, bonnet=(0.06, 0.1))

_LANE_COLOUR = (235, 235, 235)
_BONNET_COLOUR = (25, 25, 30)


class _Scene:
    """A label map and an RGB canvas drawn together (each shape gets a class and a colour)."""

    def __init__(self, height: int, width: int, style: DomainStyle,
                 rng: np.random.Generator) -> None:
        self.h, self.w, self.style, self.rng = height, width, style, rng
        self.label = np.full((height, width), IGNORE_INDEX, dtype=np.uint8)
        self.canvas = np.zeros((height, width, 3), dtype=np.uint8)

    def colour(self, cls: int) -> tuple[int, int, int]:
        jitter = self.rng.integers(-self.style.colour_jitter, self.style.colour_jitter + 1, 3)
        return tuple(int(v) for v in np.clip(np.array(self.style.colours[cls]) + jitter, 0, 255))

    def polygon(self, points: list[tuple[float, float]], cls: int,
                colour: tuple[int, int, int] | None = None) -> None:
        import cv2

        pts = np.round(np.array(points)).astype(np.int32)[None]
        cv2.fillPoly(self.label, pts, int(cls))
        cv2.fillPoly(self.canvas, pts, colour or self.colour(cls))

    def rect(self, x1: float, y1: float, x2: float, y2: float, cls: int,
             colour: tuple[int, int, int] | None = None) -> None:
        self.polygon([(x1, y1), (x2, y1), (x2, y2), (x1, y2)], cls, colour)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, cls: int,
                colour: tuple[int, int, int] | None = None) -> None:
        import cv2

        centre, axes = (int(round(cx)), int(round(cy))), (max(1, int(rx)), max(1, int(ry)))
        cv2.ellipse(self.label, centre, axes, 0, 0, 360, int(cls), -1)
        cv2.ellipse(self.canvas, centre, axes, 0, 0, 360, colour or self.colour(cls), -1)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _count(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def _draw_layout(s: _Scene) -> None:
    """Draw the scene's shapes, far to near, on the label map and the canvas."""
    h, w, style, rng = s.h, s.w, s.style, s.rng
    horizon = int(h * _uniform(rng, style.horizon))
    s.rect(0, 0, w, horizon, SKY)
    # Buildings: a row of blocks standing on the horizon, sometimes with a gap of sky.
    x = -float(rng.uniform(0, w * 0.1))
    while x < w:
        width = w * rng.uniform(0.08, 0.25)
        if rng.random() > 0.15:
            top = horizon - h * _uniform(rng, style.building_height)
            s.rect(x, top, x + width, horizon + 1, BUILDING)
        x += width
    for _ in range(_count(rng, style.trees)):
        radius = h * rng.uniform(0.07, 0.14)
        s.ellipse(rng.uniform(0, w), horizon - radius * 0.6, radius * 1.3, radius, VEGETATION)
    # Ground: sidewalk everywhere, a road trapezoid from near the vanishing point to the bottom.
    s.rect(0, horizon, w, h, SIDEWALK)
    vanish = w * rng.uniform(0.4, 0.6)
    left, right = w * rng.uniform(0.0, 0.25), w * rng.uniform(0.75, 1.0)
    top_half = w * 0.04
    s.polygon([(vanish - top_half, horizon), (vanish + top_half, horizon), (right, h),
               (left, h)], ROAD)

    def road_at(y: float, side: int) -> float:
        """x of the road's left (side -1) or right (+1) edge at row ``y``."""
        start = vanish + side * top_half
        end = left if side < 0 else right
        return start + (end - start) * (y - horizon) / max(1, h - horizon)

    if style.lane_markings:
        # Dashes along the road's centre line, wider nearer the camera (ignored pixels).
        for start in np.arange(0.1, 1.0, 0.2):
            y1 = horizon + (h - horizon) * start
            y2 = horizon + (h - horizon) * min(1.0, start + 0.1)
            half1, half2 = 0.5 + w * 0.006 * start, 0.5 + w * 0.006 * (start + 0.1)
            s.polygon([(vanish - half1, y1), (vanish + half1, y1), (vanish + half2, y2),
                       (vanish - half2, y2)], IGNORE_INDEX, _LANE_COLOUR)
    pole_width = max(1.0, w / 80)
    for _ in range(_count(rng, style.poles)):
        bottom = horizon + (h - horizon) * rng.uniform(0.2, 0.7)
        side = -1 if rng.random() < 0.5 else 1
        edge = road_at(bottom, side)
        x = edge + side * w * rng.uniform(0.02, 0.08)
        x = float(np.clip(x, 1, w - 2))
        top = bottom - h * rng.uniform(0.3, 0.5) * (0.5 + 0.5 * (bottom - horizon) / (h - horizon))
        s.rect(x, top, x + pole_width, bottom, POLE)
        if rng.random() < 0.7:
            size = max(2.0, w * rng.uniform(0.025, 0.045))
            s.rect(x - size / 2, top, x + size / 2 + pole_width, top + size, SIGN)
    # Cars on the road and persons on the sidewalk, far (small) ones first so near ones occlude.
    objects = [(horizon + (h - horizon) * rng.uniform(0.15, 1.0), CAR)
               for _ in range(_count(rng, style.cars))]
    objects += [(horizon + (h - horizon) * rng.uniform(0.1, 0.9), PERSON)
                for _ in range(_count(rng, style.persons))]
    for bottom, cls in sorted(objects):
        depth = 0.3 + 0.7 * (bottom - horizon) / (h - horizon)   # 1 = nearest row
        if cls == CAR:
            width = w * rng.uniform(0.14, 0.22) * depth
            x = road_at(bottom, -1) + rng.uniform(0, 1) * (
                road_at(bottom, 1) - road_at(bottom, -1) - width)
            colour = s.colour(CAR)
            body = 0.45 * width
            s.rect(x, bottom - body, x + width, bottom, CAR, colour)
            s.rect(x + 0.2 * width, bottom - body * 1.7, x + 0.8 * width, bottom - body + 1, CAR,
                   colour)
            # Windows: darker, still "car" (texture inside a class).
            dark = tuple(int(c * 0.5) for c in colour)
            s.rect(x + 0.27 * width, bottom - body * 1.55, x + 0.73 * width,
                   bottom - body * 1.05, CAR, dark)
        else:
            height = h * rng.uniform(0.14, 0.22) * depth
            side = -1 if rng.random() < 0.5 else 1
            x = road_at(bottom, side) + side * w * rng.uniform(0.02, 0.12)
            x = float(np.clip(x, 2, w - 3))
            colour = s.colour(PERSON)
            s.ellipse(x, bottom - height * 0.4, height * 0.14, height * 0.4, PERSON, colour)
            s.ellipse(x, bottom - height * 0.88, height * 0.1, height * 0.1, PERSON, colour)
    if style.bonnet[1] > 0:
        top = h * (1 - _uniform(rng, style.bonnet))
        s.ellipse(w / 2, h + (h - top) * 0.6, w * 0.7, (h - top) * 1.6, IGNORE_INDEX,
                  _BONNET_COLOUR)


def _render(s: _Scene) -> np.ndarray:
    """The finished RGB image: the style's cast, brightness, texture, noise and blur."""
    import cv2

    style, rng = s.style, s.rng
    image = s.canvas.astype(np.float32)
    gain = rng.uniform(*style.cast, size=3) * _uniform(rng, style.brightness)
    image *= gain.astype(np.float32)
    if style.texture > 0:
        # Blotches of light and shade: a coarse random grid upsampled smoothly to the image.
        coarse = rng.normal(0, style.texture, (max(2, s.h // 8), max(2, s.w // 8)))
        image += cv2.resize(coarse.astype(np.float32), (s.w, s.h),
                            interpolation=cv2.INTER_CUBIC)[..., None]
    if style.noise > 0:
        image += rng.normal(0, style.noise, image.shape).astype(np.float32)
    if style.blur:
        image = cv2.GaussianBlur(image, (style.blur, style.blur), 0)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def draw_scene(style: DomainStyle, size: tuple[int, int],
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One generated street scene.

    Args:
        style: :data:`SOURCE_STYLE`, :data:`TARGET_STYLE` or another :class:`DomainStyle`.
        size: ``(height, width)`` in pixels.
        rng: Source of every random choice.

    Returns:
        ``(image, label)``: RGB uint8 ``[H, W, 3]`` and train ids uint8 ``[H, W]`` (values in
        :data:`DEMO_CLASS_IDS`, 255 on the domain's ignored regions).
    """
    scene = _Scene(size[0], size[1], style, rng)
    _draw_layout(scene)
    return _render(scene), scene.label


def _raw_ids(label: np.ndarray, train_to_raw: dict[int, int], void_id: int) -> np.ndarray:
    """Raw dataset ids of a train-id map (ignored pixels -> the domain's void id)."""
    lut = np.full(256, void_id, dtype=np.uint16)
    for train_id, raw_id in train_to_raw.items():
        lut[train_id] = raw_id
    return lut[label]


def _prepare_root(root: Path) -> None:
    """Empty the demo's folders if ``root`` holds an earlier demo; refuse other data."""
    if not root.exists():
        return
    if not root.is_dir():
        raise ConfigError(f'demo root {root} is a file: choose a folder')
    if not any(root.iterdir()):
        return
    if not (root / MARKER).is_file():
        raise ConfigError(f'{root} is not empty and holds no {MARKER} (it was not written by the '
                          'demo generator): choose an empty or new folder')
    for name in ('synthia', 'cityscapes'):
        if (root / name).exists():
            shutil.rmtree(root / name)


def write_seg_demo(root: str | Path, num_source: int = 160, num_target_train: int = 60,
                   num_target_val: int = 30, size: tuple[int, int] = (64, 128),
                   seed: int = 0) -> dict:
    """Write the generated SYNTHIA-layout source and Cityscapes-layout target data.

    Rewriting is safe and complete: a folder that holds an earlier demo (its ``seg_demo.json``)
    has its ``synthia/`` and ``cityscapes/`` folders replaced, so no file of a larger earlier
    demo stays behind. A non-empty folder without the marker is refused, so nothing else is
    ever deleted. The marker says ``"complete": false`` until the last file is written.

    Args:
        root: Folder to write (created if needed).
        num_source: SYNTHIA-layout images.
        num_target_train: Cityscapes ``train`` images (the target pool).
        num_target_val: Cityscapes ``val`` images (the evaluation set).
        size: ``(height, width)`` of every image; at least ``(16, 32)``.
        seed: Seed of everything; each image has its own stream, so the same seed writes the
            same images and the first images do not change with the counts.

    Returns:
        ``{'root', 'synthia', 'cityscapes'}`` paths (str) and ``{'source', 'target_train',
        'target_val'}`` image counts, plus ``'size'`` and ``'seed'``.

    Raises:
        ConfigError: A count below 1, a too small size, or ``root`` holds other data.
    """
    counts = dict(source=num_source, target_train=num_target_train, target_val=num_target_val)
    bad = {k: v for k, v in counts.items() if v < 1}
    if bad:
        raise ConfigError(f'demo image counts must be >= 1, got {bad}')
    height, width = (int(v) for v in size)
    if height < 16 or width < 32:
        raise ConfigError(f'demo size (height, width) must be at least (16, 32), got {size}')
    root = Path(root)
    _prepare_root(root)
    root.mkdir(parents=True, exist_ok=True)
    synthia, cityscapes = root / 'synthia', root / 'cityscapes'
    summary = dict(root=str(root), synthia=str(synthia), cityscapes=str(cityscapes), **counts,
                   size=[height, width], seed=seed)
    (root / MARKER).write_text(json.dumps(dict(summary, complete=False), indent=2) + '\n')

    for index in range(num_source):
        image, label = draw_scene(SOURCE_STYLE, (height, width),
                                  np.random.default_rng([seed, 0, index]))
        name = f'{index:07d}.png'
        write_png_atomic(synthia / SYNTHIA_IMG_DIR / name, image[..., ::-1])
        # Like the real files: 16-bit, 3 channels, class id in red = index 2 in cv2's BGR order.
        raw = np.zeros((height, width, 3), dtype=np.uint16)
        raw[..., 2] = _raw_ids(label, _TRAIN_TO_SYNTHIA, SYNTHIA_LANEMARKING_ID)
        write_png_atomic(synthia / SYNTHIA_RAW_LABEL_DIR / name, raw)
        convert_synthia_file(synthia / SYNTHIA_RAW_LABEL_DIR / name,
                             synthia / SYNTHIA_LABEL_DIR / name, force=True)

    # Numbers run on across splits, so every target name is unique.
    for split_index, (split, first, count) in enumerate(
            (('train', 0, num_target_train), ('val', num_target_train, num_target_val)), start=1):
        img_dir = cityscapes / CITYSCAPES_IMG_DIR / split / DEMO_CITY
        label_dir = cityscapes / CITYSCAPES_LABEL_DIR / split / DEMO_CITY
        for number in range(first, first + count):
            image, label = draw_scene(TARGET_STYLE, (height, width),
                                      np.random.default_rng([seed, split_index, number]))
            stem = f'{DEMO_CITY}_{number:06d}_000019'
            write_png_atomic(img_dir / f'{stem}{CITYSCAPES_IMG_SUFFIX}', image[..., ::-1])
            raw_path = label_dir / f'{stem}{CITYSCAPES_RAW_SUFFIX}'
            write_png_atomic(raw_path, _raw_ids(label, _TRAIN_TO_CITYSCAPES,
                                                CITYSCAPES_EGO_VEHICLE_ID).astype(np.uint8))
            convert_cityscapes_file(raw_path, label_dir / f'{stem}{CITYSCAPES_LABEL_SUFFIX}',
                                    force=True)

    (root / MARKER).write_text(json.dumps(dict(summary, complete=True), indent=2) + '\n')
    return summary
