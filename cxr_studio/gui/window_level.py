"""Window/level of the shown radiograph: display only (the model input never changes).

The radiograph's pixels are 0..1 (a DICOM file's own VOI window already applied when it has one,
see `core.imaging.dicom`), so a window is a (centre, width) pair in those units and the default, "full",
shows the file as it was meant to be read. Presets come from the image's own histogram (inside the
lungs when a mask is known), so they mean the same on 8- and 16-bit files; the status bar shows them
in the file's stored units (0..255 for 8 bits, 0..4095 for 12 bits...).

PACS-style mouse: a right-drag changes the width horizontally (right = wider) and the level
vertically (down = higher level, a darker image); a double right-click goes back to the default.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

PRESETS: tuple[str, ...] = ("full", "lung", "mediastinum", "bone")
DRAG_PIXELS_PER_RANGE = 400.0  # dragging this many screen pixels moves the width/level by the full range
MIN_WIDTH = 1.0 / 4096


@dataclass(frozen=True)
class Window:
    """A display window in 0..1 pixel units."""

    center: float = 0.5
    width: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", float(min(2.0, max(MIN_WIDTH, self.width))))
        object.__setattr__(self, "center", float(min(1.5, max(-0.5, self.center))))

    @property
    def levels(self) -> tuple[float, float]:
        return self.center - self.width / 2, self.center + self.width / 2

    def dragged(self, dx: float, dy: float) -> "Window":
        """The window after a right-drag of (dx, dy) screen pixels."""
        return Window(self.center + dy / DRAG_PIXELS_PER_RANGE,
                      self.width * float(np.exp(dx / (DRAG_PIXELS_PER_RANGE / 2))))


def _sample(pixels: np.ndarray, mask: np.ndarray | None, limit: int = 1 << 18) -> np.ndarray:
    """Up to ``limit`` pixel values (inside ``mask`` when it covers anything), for percentiles."""
    px = np.asarray(pixels)
    step = max(1, int(np.sqrt(px.size / limit)))
    v = px[::step, ::step]
    if mask is not None:
        m = np.asarray(mask, dtype=bool)[::step, ::step]
        if m.shape == v.shape and m.sum() > 64:
            return v[m]
    return v.ravel()


def _between(lo: float, hi: float) -> Window:
    return Window((lo + hi) / 2, max(hi - lo, MIN_WIDTH))


def preset(name: str, pixels: np.ndarray, lung_mask: np.ndarray | None = None) -> Window:
    """A named window for this image: "full" (the whole 0..1 range: the file's own window), "lung"
    (the lung fields' 1st..99th percentiles), "mediastinum" (the brighter half of the image) or
    "bone" (its brightest tenth, narrow)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown window preset {name!r}; choose one of {', '.join(PRESETS)}.")
    if name == "full":
        return Window(0.5, 1.0)
    if name == "lung":
        v = _sample(pixels, lung_mask)
        lo, hi = np.percentile(v, [1, 99]) if lung_mask is not None else np.percentile(v, [2, 60])
        return _between(float(lo), float(hi))
    v = _sample(pixels, None)
    if name == "mediastinum":
        lo, hi = np.percentile(v, [45, 99.5])
    else:
        lo, hi = np.percentile(v, [85, 99.9])
    return _between(float(lo), float(hi))


def stored_max(meta: dict[str, Any] | None) -> int:
    """The largest stored value of the file (255 for 8 bits, 65535 for 16...), 255 when unknown."""
    bits = int((meta or {}).get("bit_depth") or 8)
    return (1 << max(1, min(bits, 16))) - 1 if bits > 1 else 255


def describe(window: Window, meta: dict[str, Any] | None, name: str = "") -> str:
    """The status-bar text, in the file's stored units: "W/L 2048/1024 (lung)"."""
    top = stored_max(meta)
    text = f"W/L {window.width * top:.0f}/{window.center * top:.0f}"
    if name:
        text += f" ({name})"
    voi = (meta or {}).get("window")
    if name == "full" and isinstance(voi, dict):
        text += f"; DICOM VOI {voi.get('center')}/{voi.get('width')}"
    elif name == "full" and voi:
        text += f"; DICOM {voi}"
    return text


def display_data(pixels: np.ndarray, meta: dict[str, Any] | None) -> tuple[np.ndarray, float]:
    """The shown image as integers and the value that stands for 1.0: uint8 for files of 8 bits or
    fewer, uint16 otherwise (so narrow windows on 12-16 bit files keep their detail)."""
    bits = int((meta or {}).get("bit_depth") or 8)
    if bits <= 8:
        from cxr_studio.core.render import to_uint8

        return to_uint8(pixels), 255.0
    out = np.empty(pixels.shape, dtype=np.uint16)
    np.multiply(pixels, 65535.0, out=out, casting="unsafe")  # 0..1 -> 0..65535 (truncated: < 1 count)
    return out, 65535.0
