"""The app's "Sanity check": the heatmap on screen beside the same heatmap of the randomised model.

One step of Adebayo et al.'s cascading randomisation (`sanity`): every parameterised layer from the
classifier down to the explained one (the layer of a layer method; the deepest conv for occlusion and
integrated gradients) is re-initialised under a fixed seed on a copy of the model, and the same view
(layer, channel, method, class) is computed on it. A map that still looks the same shows the image,
not what the model learned. The caller's model is never modified.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cxr_studio.core.inspect.saliency_methods import INPUT_METHODS, map_support
from cxr_studio.core.inspect.sanity import compare, randomised_model
from cxr_studio.core.inspect.views import HeatmapResult, compute_heatmap


@dataclass
class SanityView:
    trained: HeatmapResult
    randomised: HeatmapResult
    randomised_down_to: str  # the deepest layer re-initialised
    scores: dict[str, Any] = field(default_factory=dict)  # spearman_randomised, ssim_randomised, passes

    def summary(self) -> str:
        s = self.scores
        verdict = "passes" if s["passes"] else "FAILS"
        return (f"{verdict}: Spearman {s['spearman_randomised']:.2f}, SSIM {s['ssim_randomised']:.2f} between the "
                f"trained and the randomised model's maps (layers down to {self.randomised_down_to} re-initialised; "
                "a faithful map changes: Spearman below 0.5)")


def sanity_view(loaded: Any, preprocessed: Any, layer: str, channel: Any = "strongest", method: str = "activation",
                class_index: int | None = None, scale: str = "channel", ranking: str = "max", region: Any = None,
                seed: int = 0, cancel: Any = None) -> SanityView:
    """The view (as `views.compute_heatmap` takes it) on the trained and on the randomised model."""
    model = getattr(loaded, "model", loaded)
    trained = compute_heatmap(model, preprocessed, None, layer, channel, method, class_index, scale, ranking, region,
                              cancel=cancel)
    explained = None if method in INPUT_METHODS else layer
    down_to, random_model = randomised_model(model, explained, seed)
    same_channel = trained.channel if trained.channel is not None else channel
    randomised = compute_heatmap(random_model, preprocessed, None, layer, same_channel, method, trained.class_index,
                                 scale, ranking, region, cancel=cancel)
    x = preprocessed.tensor(next(model.parameters()).device)
    support = map_support(model, x, method if method in INPUT_METHODS else "gradcam", layer)
    scores = compare(np.asarray(trained.map_input), np.asarray(randomised.map_input), support)
    return SanityView(trained, randomised, down_to, scores)
