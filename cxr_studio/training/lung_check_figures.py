"""Paper Fig. 4-style figures for ``cxr-studio-train lung-check``: the radiograph with the strongest
deepest-conv channel as a MATLAB-jet overlay (placed at the cells' receptive-field centres, as the
app draws it), the lung-mask outline, and a ring around the channel's peak.

The heat map comes from `core.views.compute_heatmap` (the app's own placement) and is composited by
`core.render.overlay` (the app's jet table, threshold-to-alpha and opacity) inside the model's crop
box, exactly as the GUI shows it; the PNG is written by the one PNG writer (`core.imaging.png.write_png`: deterministic, atomic).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..core.inspect.views import compute_heatmap
from ..core.render import overlay
from ..core.imaging.png import write_png

FIG_THRESHOLD = 0.3  # map values below this are transparent (the paper's "black made transparent")
FIG_OPACITY = 0.6
MAX_SIDE = 1024  # larger radiographs are shrunk so a figure stays a few hundred kB
OUTLINE_RGB = (255, 255, 255)  # lung outline: white
MARKER_RGB = (255, 0, 255)  # ring around the peak: magenta (not a jet colour)


def figure_name(image_path: Path, channel: int) -> str:
    """``<image stem>_ch<N>.png``."""
    return f"{Path(image_path).stem}_ch{int(channel)}.png"


def strongest_channel_heatmap(model: Any, pre: Any, forward: Any, layer: str) -> Any:
    """The app's heat map of ``layer``'s strongest channel (ranked by max) for one preprocessed image."""
    return compute_heatmap(model, pre, forward, layer, channel="strongest", method="activation", ranking="max")


def render_figure(pre: Any, heat_original: np.ndarray, lungs: np.ndarray, peak_xy: np.ndarray,
                  max_side: int = MAX_SIDE) -> np.ndarray:
    """(H', W', 3) uint8 RGB: ``pre.original`` with the jet overlay inside the crop box, the lung
    outline and a ring around ``peak_xy`` (original-image (x, y)); shrunk to ``max_side`` at most."""
    rgb = overlay(pre.original, heat_original, "jet", FIG_THRESHOLD, FIG_OPACITY, box=pre.geometry.crop_box)
    h, w = rgb.shape[:2]
    scale = min(1.0, float(max_side) / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    rgb = np.ascontiguousarray(rgb)
    side = max(rgb.shape[:2])
    thick = max(1, side // 256)
    contours, _ = cv2.findContours(np.asarray(lungs, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    scaled = [np.round((c.astype(np.float64) + 0.5) * scale - 0.5).astype(np.int32) for c in contours]
    cv2.drawContours(rgb, scaled, -1, OUTLINE_RGB, thick, lineType=cv2.LINE_AA)
    px, py = (np.asarray(peak_xy, np.float64).reshape(-1)[:2] + 0.5) * scale - 0.5
    # a ring, so the colour at the peak itself stays visible
    cv2.circle(rgb, (int(round(px)), int(round(py))), max(6, side // 40), MARKER_RGB, thick + 1, cv2.LINE_AA)
    return rgb


def write_figure(path: Path, pre: Any, heat_original: np.ndarray, lungs: np.ndarray, peak_xy: np.ndarray) -> Path:
    """Render and write one figure atomically; returns its path."""
    return write_png(path, render_figure(pre, heat_original, lungs, peak_xy))
