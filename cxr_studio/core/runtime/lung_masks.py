"""The current image's lung masks, each with the method that made it.

Keyed by what a preprocessing spec asks for ("auto", "unet", "heuristic", "atlas:DIR"); a spec
that does not segment still gets the "auto" lungs, for the outline and the "lungs" ranking (its model
input never sees them). A mask known in advance (the demo phantom's) is "given"; one a segmentation
made keeps that method's name when it is reused for another spec.
"""
from __future__ import annotations

from typing import Any

import numpy as np


class LungMasks:
    def __init__(self, given: np.ndarray | None = None) -> None:
        self.masks: dict[str, tuple[np.ndarray, str]] = {}
        self.reset(given)

    @staticmethod
    def key(spec: Any) -> str:
        seg = "auto" if spec.segmentation == "none" else spec.segmentation
        return f"atlas:{spec.atlas_dir}" if seg == "atlas" else seg

    def reset(self, given: np.ndarray | None = None) -> None:
        """A new image: forget every mask; ``given`` (bool, the image's shape) serves "auto"."""
        self.masks = {} if given is None else {"auto": (np.asarray(given, dtype=bool), "given")}

    def for_spec(self, spec: Any) -> tuple[np.ndarray | None, str | None]:
        """(mask, method that made it) preprocessing can use instead of segmenting, or (None, None)."""
        return self.masks.get(self.key(spec), (None, None))

    def keep(self, result: Any) -> None:
        """Remember the mask a pipeline run (a `gui.jobs.PipelineResult`: ``preprocessed`` and
        ``lung_method``) made or used."""
        p = result.preprocessed
        if p.lung_mask is not None and result.lung_method != "none":
            self.masks.setdefault(self.key(p.spec), (p.lung_mask, result.lung_method))
