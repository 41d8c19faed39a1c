"""The Session owns what the app computed for the current image (issue 15): forward passes keyed by model
and spec, the pipeline runs, rankings, thumbnails, lung masks with their method, layer lists; and the
one heatmap type, whose activation view the GUI computes with the same function as `compute_heatmap`."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn

from cxr_studio.core.pipeline import preprocess
from cxr_studio.core.imaging.radiograph import Radiograph
from cxr_studio.core.imaging.spec import PreprocessSpec
from cxr_studio.core.models.placement import layer_placement
from cxr_studio.core.inspect.saliency import to_original
from cxr_studio.core.inspect.views import channel_heatmap, compute_forward, compute_heatmap
from cxr_studio.core.phantoms.phantom import make_phantom
from cxr_studio.core.runtime.session import Session
from cxr_studio.core.runtime.view_cache import spec_key


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2))
    m.layer_names = {"conv1": "0", "relu1": "1", "pool1": "2", "conv2": "3", "relu2": "4", "fc": "7"}
    return m.eval()


@dataclass
class Loaded:
    model: nn.Module = field(default_factory=tiny_model)
    class_names: list = field(default_factory=lambda: ["normal", "abnormal"])
    spec: Any = field(default_factory=lambda: PreprocessSpec.preset("fast"))


def image(seed: int = 0) -> Radiograph:
    return Radiograph.from_array(make_phantom(seed, size=128).image)


def test_forward_passes_are_kept_per_model_and_spec() -> None:
    s = Session()
    s.add_model("m", Loaded())
    s.set_image(image())
    fwd = SimpleNamespace(activations={})
    s.set_forward("m", fwd)
    assert s.cached_forward("m") is fwd and s.cache.forward_for("m", s.effective_spec("m")) is fwd
    s.spec = s.effective_spec().replace(clahe=not s.effective_spec().clahe)  # another model input
    assert s.cached_forward("m") is None
    s.spec = None  # back to the model's own: the pass is still there
    assert s.cached_forward("m") is fwd
    s.current_model_id = None
    s.current_model_id = "m"
    assert s.forward is fwd  # selecting the model again restores its pass


def test_a_new_image_resets_the_cache_and_brings_its_own_lungs() -> None:
    s = Session()
    s.add_model("m", Loaded())
    s.set_image(image(0))
    spec = s.effective_spec()
    s.cache.rankings[("m", "relu2", spec_key(spec), "max", "")] = [(0, 1.0)]
    s.cache.thumbnails[("m", "relu2", spec_key(spec), "channel")] = np.zeros((6, 4, 4, 4), np.uint8)
    s.cache.layers["m"] = ["a layer list"]
    mask = np.zeros((128, 128), bool)
    mask[20:100, 10:60] = True
    s.set_image(image(1), lung_mask=mask)
    assert not s.cache.rankings and not s.cache.thumbnails and not s.cache.forward and not s.cache.pipeline
    assert s.cache.layers["m"] == ["a layer list"]  # a model's layers do not depend on the image
    got, how = s.cache.mask_for(PreprocessSpec(segmentation="none"))  # display lungs: the image's own
    assert got is not None and got.sum() == mask.sum() and how == "given"
    assert s.cache.mask_for(PreprocessSpec(segmentation="heuristic")) == (None, None)  # asked for: segmented
    s.set_image(image(2))
    assert s.cache.mask_for(PreprocessSpec(segmentation="none")) == (None, None)


def test_a_pipeline_run_is_kept_with_the_lungs_it_made() -> None:
    s = Session()
    s.set_image(image())
    spec = PreprocessSpec.preset("fast").replace(segmentation="heuristic")
    pre = preprocess(s.radiograph, spec)
    res = SimpleNamespace(preprocessed=pre, lung_method="heuristic")
    s.cache.keep_pipeline(res)
    assert s.cache.pipeline_for(spec) is res and s.cache.pipeline_for(spec.replace(clahe=not spec.clahe)) is None
    mask, how = s.cache.mask_for(spec)
    assert how == "heuristic" and mask is pre.lung_mask


def test_unloading_or_reloading_a_model_drops_what_was_computed_with_it() -> None:
    s = Session()
    s.add_model("a", Loaded())
    s.add_model("b", Loaded())
    s.set_image(image())
    for mid in ("a", "b"):
        s.set_forward(mid, SimpleNamespace(activations={}, name=mid))
        s.cache.rankings[(mid, "relu2", "k", "max", "")] = [(0, 1.0)]
        s.cache.layers[mid] = [mid]
    s.remove_model("a")
    assert s.cached_forward("a") is None and list(s.cache.rankings) == [("b", "relu2", "k", "max", "")]
    assert list(s.cache.layers) == ["b"] and s.cached_forward("b").name == "b"
    s.add_model("b", Loaded())  # loaded again (another file under the same id)
    assert s.cached_forward("b") is None and not s.cache.rankings and not s.cache.layers


@pytest.mark.parametrize("scale", ["channel", "layer"])
def test_the_guis_channel_view_is_compute_heatmaps(scale: str) -> None:
    loaded = Loaded()
    pre = preprocess(image(), loaded.spec)
    fwd = compute_forward(loaded, pre)
    act = fwd.activations["relu2"]
    ref = compute_heatmap(loaded, pre, fwd, "relu2", channel=3, scale=scale)
    hm = channel_heatmap(act, 3, scale, layer_placement(loaded.model, "relu2"), pre.geometry, layer="relu2",
                         model_id="m")
    assert np.array_equal(hm.map_input, ref.map_input) and np.array_equal(hm.valid, ref.valid)
    assert (hm.channel, hm.layer, hm.method, hm.model_id) == (3, "relu2", "activation", "m")
    part = act[3] if scale == "channel" else act
    assert hm.value_range == ref.value_range and hm.value_range[1] == pytest.approx(float(part.max()))
    # map_original is computed on first use, once, from the preprocessing geometry
    assert np.array_equal(hm.map_original, to_original(hm.map_input, pre.geometry)) and hm.map_original is hm.map_original
    assert hm.crop_box == tuple(int(v) for v in pre.geometry.crop_box)
    with pytest.raises(ValueError, match="does not exist"):
        channel_heatmap(act, 6, scale, None, pre.geometry)
