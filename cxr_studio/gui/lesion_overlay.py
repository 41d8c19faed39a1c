"""The lesion outline of the image on screen and the live scores of the heatmap against it.

When an image has a lesion mask beside it (our ``lesion_mask/<stem>_lesion.png`` layout, the
Shenzhen release's ``Annotations_AllinOne_json.json``, or the demo phantom's own lesions), it is
looked up in the worker, drawn as a dashed magenta outline (View > Lesion outline, L) and every
heatmap on screen is scored against it (`core.inspect.lesion_scores`): pointing hit, energy inside
and IoU at the current threshold. A threshold change rescores on the small scoring grid only (no
worker trip). The scores live in the session (``lesion_scores``), so exports record them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject

from cxr_studio.core.inspect.lesion_scores import LesionTarget, map_on_grid, score


def find_lesion(path: str, shape: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """Worker job: the lesion mask beside ``path`` on the image's grid, and where it came from."""
    from cxr_studio.core.imaging.lesions import find_lesion_mask

    return find_lesion_mask(path, shape)


class LesionOverlay(QObject):
    def __init__(self, session: Any, controller: Any, bridge: Any, view: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session, self.controller, self.bridge, self.view = session, controller, bridge, view
        self._radiograph: Any = None
        self._given: tuple[np.ndarray, str] | None = None
        self._grid: np.ndarray | None = None  # the heatmap on screen, on the scoring grid
        controller.pipeline_ready.connect(lambda _res: self._image_shown())
        controller.heatmap_ready.connect(self._heatmap_shown)
        session.events.threshold.connect(lambda _v: self._rescore())
        session.events.show_lesion_outline.connect(view.show_lesion_outline)
        session.events.current_model_id.connect(lambda mid: self._clear_map() if mid is None else None)

    def expect(self, mask: np.ndarray | None, source: str = "phantom") -> None:
        """The next opened image comes with this lesion mask (the demo phantom's); None: look beside the file."""
        self._given = None if mask is None else (np.asarray(mask, bool), source)

    # -- the image ---------------------------------------------------------------------------------
    def _image_shown(self) -> None:
        rad = self.session.radiograph
        if rad is None or rad is self._radiograph:
            return  # the same image preprocessed again: the outline stays
        self._radiograph = rad
        self._set(None, "")
        given, self._given = self._given, None
        if given is not None:
            self._set(*given)
            return
        path = (getattr(rad, "meta", None) or {}).get("path")
        if not path or not Path(path).exists():
            return
        self.bridge.submit("lesion outline", find_lesion, str(path), tuple(rad.shape[:2]), key="lesion",
                           on_result=lambda res, r=rad: self._found(r, res),
                           on_error=lambda msg: self.controller.message.emit(f"Lesion outline not shown: {msg}"))

    def _found(self, rad: Any, res: tuple[np.ndarray | None, str]) -> None:
        if rad is self.session.radiograph:
            self._set(*res)

    def _set(self, mask: np.ndarray | None, source: str) -> None:
        has = mask is not None and bool(np.any(mask))
        self.session.lesion = LesionTarget.from_mask(mask, source) if has else None
        self.view.set_lesion_mask(mask if has else None)
        self.view.show_lesion_outline(self.session.show_lesion_outline)
        if has:
            self.controller.message.emit(f"Lesion outline from {source}: the Heatmap dock scores the map against it.")
        hv = self.session.heatmap
        self._heatmap_shown(hv) if has and hv is not None else self._clear_map()

    # -- the heatmap ---------------------------------------------------------------------------------
    def _clear_map(self) -> None:
        self._grid = None
        self.session.lesion_scores = None

    def _heatmap_shown(self, hv: Any) -> None:
        target, prep = self.session.lesion, self.session.preprocessed
        if target is None or prep is None or hv is None:
            self._clear_map()
            return
        g = prep.geometry
        self._grid = map_on_grid(hv.map_input, hv.crop_box or g.crop_box, g.original_size, target)
        valid = getattr(hv, "valid", None)
        if valid is not None:  # where the map has no value it points nowhere (drawn transparent)
            self._grid *= map_on_grid(valid.astype(np.float32), hv.crop_box or g.crop_box, g.original_size,
                                      target) > 0.5
        self._rescore()

    def _rescore(self) -> None:
        target = self.session.lesion
        if target is None or self._grid is None:
            return
        self.session.lesion_scores = score(self._grid, target, self.session.threshold)
