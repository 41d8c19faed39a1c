"""An image opened while the view is still reacting to another change (a model just loaded, a Pipeline
dock setting just changed) is opened, not silently replaced by a rerun for the image shown before, and
is preprocessed the way the current model and Pipeline dock say."""
from __future__ import annotations

from typing import Any


def test_an_image_opened_in_the_same_moment_as_a_spec_change_opens_with_that_spec(
        qtbot: Any, loaded_window: Any) -> None:
    from cxr_studio.core.phantoms.phantom import make_phantom

    w = loaded_window
    s = w.session
    first = s.radiograph
    clahe = not s.effective_spec().clahe
    other = make_phantom(12, size=256, abnormal=True).radiograph()
    w.last_error = None
    s.spec = s.effective_spec().replace(clahe=clahe)  # the Pipeline dock: its rerun is queued for `first`
    w.controller.open_image(other)  # before the event loop runs that rerun
    qtbot.waitUntil(lambda: s.radiograph is other and s.heatmap is not None and w.bridge.pending == 0,
                    timeout=60000)
    assert s.radiograph is not first and w.last_error is None
    assert s.preprocessed.original.shape == other.pixels.shape and s.preprocessed.spec.clahe == clahe
    assert s.heatmap.model_id == s.current_model_id


def test_an_image_opened_in_the_same_moment_as_a_model_switch_uses_that_model(
        qtbot: Any, loaded_window: Any, tmp_path: Any) -> None:
    import torch

    from cxr_studio.core.models import build_model
    from cxr_studio.core.models.checkpoint import save_checkpoint
    from cxr_studio.core.phantoms.phantom import make_phantom

    w = loaded_window
    s = w.session
    torch.manual_seed(2)
    kw = {"width": 0.125, "fc_width": 64}
    model = build_model("cxrnet", **kw)
    second = tmp_path / "other-input.pt"  # another model input than the first model's: no cached run fits it
    spec = dict(model.default_preprocess, clahe=not model.default_preprocess.get("clahe", True))
    save_checkpoint(second, model, arch="cxrnet", arch_kwargs=kw, class_names=["normal", "abnormal"],
                    preprocess=spec, provenance={"recipe": "test"})
    w.controller.load_checkpoint(str(second))
    qtbot.waitUntil(lambda: len(s.models) == 2 and w.bridge.pending == 0, timeout=60000)
    first_id, second_id = list(s.models)
    assert s.current_model_id == second_id
    shown = make_phantom(14, size=256).radiograph()  # an image only the second model has seen
    w.controller.open_image(shown)
    qtbot.waitUntil(lambda: s.radiograph is shown and s.heatmap is not None and w.bridge.pending == 0,
                    timeout=60000)
    other = make_phantom(13, size=256).radiograph()
    s.current_model_id = first_id  # its rerun for the image shown is queued ...
    w.controller.open_image(other)  # ... and the user opens another image at once
    qtbot.waitUntil(lambda: s.radiograph is other and s.heatmap is not None and w.bridge.pending == 0,
                    timeout=60000)
    assert s.current_model_id == first_id and s.heatmap.model_id == first_id and w.last_error is None
    assert s.preprocessed.original.shape == other.pixels.shape
    assert s.preprocessed.spec.clahe == s.effective_spec(first_id).clahe != s.effective_spec(second_id).clahe


def test_a_layer_change_while_an_image_opens_leaves_no_result_of_the_old_image(
        qtbot: Any, loaded_window: Any) -> None:
    """A ranking or thumbnails job for the image shown, queued while another image opens, finishes
    after it: its result is dropped, so the new image's strongest channel is its own."""
    from cxr_studio.core.inspect.activations import rank_channels
    from cxr_studio.core.models.placement import layer_placement
    from cxr_studio.core.phantoms.phantom import make_phantom

    w = loaded_window
    s, c = w.session, w.controller
    other = make_phantom(21, size=320, abnormal=True).radiograph()
    w.last_error = None
    c.open_image(other)  # the open is queued first ...
    s.select_layer("relu4")  # ... then the layer change's ranking and thumbnails for the image shown
    qtbot.waitUntil(lambda: s.radiograph is other and s.heatmap is not None and w.bridge.pending == 0,
                    timeout=60000)
    qtbot.waitUntil(lambda: w.bridge.pending == 0 and s.heatmap.layer == s.layer, timeout=60000)
    act = c.activation()
    loaded = c.loaded()
    best = rank_channels(act, s.ranking, geometry=s.preprocessed.geometry, lung_mask=s.preprocessed.lung_mask,
                         placement=layer_placement(loaded.model, s.layer))[0][0]
    assert s.heatmap.channel == best and w.last_error is None
    for key, order in s.cache.rankings.items():  # every kept ranking is of this image's activations
        layer_act = s.cached_forward(key[0]).activations[key[1]]
        assert order == rank_channels(layer_act, key[3], geometry=s.preprocessed.geometry,
                                      lung_mask=s.preprocessed.lung_mask,
                                      placement=layer_placement(loaded.model, key[1]))


def test_a_heatmap_of_the_old_image_is_never_shown_on_the_new_one(qtbot: Any, loaded_window: Any) -> None:
    """Grad-CAM asked for while another image opens is computed on the image shown and finishes after
    the new image arrived: it is dropped, never drawn or stored over the new image."""
    from cxr_studio.core.phantoms.phantom import make_phantom

    w = loaded_window
    s = w.session
    other = make_phantom(22, size=300, abnormal=True).radiograph()
    assert other.pixels.shape != s.radiograph.pixels.shape
    seen: list[tuple[Any, Any]] = []
    s.events.heatmap.connect(lambda hm: seen.append((s.radiograph, hm)))
    drawn: list[tuple[Any, Any]] = []
    w.controller.heatmap_ready.connect(lambda hm: drawn.append((s.radiograph, hm)))
    w.controller.open_image(other)
    s.method = "gradcam"  # computed at once, on the image shown (its forward pass is there)
    qtbot.waitUntil(lambda: s.radiograph is other and getattr(s.heatmap, "method", None) == "gradcam"
                    and w.bridge.pending == 0, timeout=60000)
    for rad, hm in seen + drawn:
        if hm is not None and rad is other:
            assert tuple(hm.geometry.original_size) == other.pixels.shape
    assert tuple(s.heatmap.geometry.original_size) == other.pixels.shape and w.last_error is None
