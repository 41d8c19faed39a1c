"""What the app computed for the current image and keeps for reuse, owned by the `Session`
(``session.cache``): preprocessing per spec, forward passes per model and spec, channel rankings and
thumbnails per view, the lung masks with the method that made each, and each model's layer list.

Keys carry everything a result depends on besides the image (a new image resets the per-image parts,
`Session.set_image`), so a result for another spec or model is never read by mistake. Plain Python:
the GUI's controller schedules the work and writes the results here; no Qt, no torch.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from cxr_studio.core.runtime.lung_masks import LungMasks


def spec_key(spec: Any) -> str:
    """A preprocessing spec as a dictionary key (its settings, sorted)."""
    return json.dumps(spec.to_dict(), sort_keys=True)


class ViewCache:
    def __init__(self) -> None:
        self.layers: dict[str, list[Any]] = {}  # model id -> its LayerInfo list (not per image)
        self.reset()

    def reset(self, lung_mask: np.ndarray | None = None) -> None:
        """A new image: forget every per-image result; ``lung_mask`` (the image's own, e.g. a phantom's)
        serves as its "auto" lungs (`LungMasks`)."""
        self.pipeline: dict[str, Any] = {}  # spec key -> PipelineResult (preprocessed, stage thumbnails, lung method)
        self.forward: dict[tuple[str, str], Any] = {}  # (model id, spec key) -> ForwardResult
        self.rankings: dict[tuple, list[tuple[int, float]]] = {}  # (model, layer, spec key, method, region) -> order
        self.thumbnails: dict[tuple, np.ndarray] = {}  # (model, layer, spec key, scale) -> (C, t, t, 4) uint8
        self.lungs = LungMasks(lung_mask)

    def drop_model(self, model_id: str) -> None:
        """A model loaded again or unloaded: nothing computed with it is kept."""
        self.layers.pop(model_id, None)
        for table in (self.forward, self.rankings, self.thumbnails):
            for k in [k for k in table if k[0] == model_id]:
                del table[k]

    # -- preprocessing -----------------------------------------------------------------------------
    def pipeline_for(self, spec: Any) -> Any:
        """The PipelineResult of ``spec`` for the current image, or None."""
        return self.pipeline.get(spec_key(spec))

    def keep_pipeline(self, result: Any) -> None:
        """Keep a pipeline run (the first one per spec) and the lung mask it made or used."""
        self.lungs.keep(result)
        self.pipeline.setdefault(spec_key(result.preprocessed.spec), result)

    def mask_for(self, spec: Any) -> tuple[np.ndarray | None, str | None]:
        """(lung mask, method that made it) a pipeline run for ``spec`` can reuse, or (None, None)."""
        return self.lungs.for_spec(spec)

    # -- forward passes ------------------------------------------------------------------------------
    def forward_for(self, model_id: str | None, spec: Any) -> Any:
        """The forward pass of ``model_id`` on the current image preprocessed with ``spec``, or None."""
        return self.forward.get((model_id, spec_key(spec))) if model_id else None

    def keep_forward(self, model_id: str, spec: Any, result: Any) -> None:
        self.forward[(model_id, spec_key(spec))] = result
