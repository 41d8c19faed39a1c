"""Issue 15's user-visible bug: after a model whose own input spec does not segment (the demo's),
opening another radiograph still gets lungs for the outline and the "lungs" ranking, never an error
dialog, and every mask says which method made it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest


@pytest.fixture(scope="module")
def unsegmented_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A narrow cxrnet whose preprocessing does not segment (as the demo model's)."""
    import torch

    from cxr_studio.core.models.checkpoint import save_checkpoint
    from cxr_studio.core.models import build_model

    torch.manual_seed(1)
    kw = {"width": 0.125, "fc_width": 64}
    model = build_model("cxrnet", **kw)
    spec = dict(model.default_preprocess, segmentation="none", crop=False)
    path = tmp_path_factory.mktemp("ckpt") / "demo-like.pt"
    save_checkpoint(path, model, arch="cxrnet", arch_kwargs=kw, class_names=["normal", "abnormal"],
                    preprocess=spec, provenance={"recipe": "test"})
    return path


def _open_demo_like(qtbot: Any, w: Any, phantom: Any, ckpt: Path) -> None:
    w.session.ranking = "lungs"  # the demo's ranking
    w.open_radiograph(phantom.radiograph(), phantom.lung_mask, "demo-like phantom")
    w.controller.load_checkpoint(str(ckpt))
    qtbot.waitUntil(lambda: w.session.heatmap is not None, timeout=60000)
    qtbot.waitUntil(lambda: w.bridge.pending == 0, timeout=60000)
    assert "segmentation: given" in w.pipeline_dock.info.text()


def test_real_image_after_demo_gets_segmented_lungs_and_lungs_ranking(
        qtbot: Any, window: Any, phantom: Any, unsegmented_checkpoint: Path) -> None:
    from cxr_studio.core.phantoms.phantom import make_phantom

    w = window
    _open_demo_like(qtbot, w, phantom, unsegmented_checkpoint)
    other = make_phantom(11, size=320, abnormal=True).radiograph()  # "a real radiograph": no mask known
    w.last_error = None
    heat_before = w.session.heatmap
    w.open_radiograph(other, None, "another radiograph")
    qtbot.waitUntil(lambda: w.session.heatmap not in (None, heat_before)
                    and w.session.radiograph is other, timeout=60000)
    qtbot.waitUntil(lambda: w.bridge.pending == 0, timeout=60000)
    assert w.last_error is None and (w._error_box is None or not w._error_box.isVisible())
    p = w.session.preprocessed
    assert p.spec.segmentation == "none"  # the model input is as the model was trained
    assert p.lung_mask is not None and p.lung_mask.shape == other.pixels.shape and p.lung_mask.any()
    info = w.pipeline_dock.info.text()
    assert "segmentation: given" not in info and "model input is not segmented" in info
    made_by = w.session.cache.mask_for(p.spec)[1]
    assert made_by not in (None, "given", "none") and f"segmentation: {made_by}" in info
    assert w.view._outline_data is not None  # the outline is drawn
    # the shown channel is the strongest by mean inside the segmented lungs
    from cxr_studio.core.inspect.activations import rank_channels
    from cxr_studio.gui import jobs

    act = w.controller.activation()
    placement = jobs.placement(w.session.current_model.model, w.session.layer)
    best = rank_channels(act, "lungs", geometry=p.geometry, lung_mask=p.lung_mask, placement=placement)[0][0]
    assert w.session.ranking == "lungs" and w.session.heatmap.channel == best
    # segmentation switched to auto: the same mask is reused and still says what made it
    model_input = p.model_input.copy()
    w.session.spec = w.session.effective_spec().replace(segmentation="auto", crop=False)
    qtbot.waitUntil(lambda: w.session.preprocessed is not p
                    and w.session.preprocessed.spec.segmentation == "auto", timeout=60000)
    q = w.session.preprocessed
    assert q.lung_mask is p.lung_mask and q.segmentation_method == made_by
    assert f"segmentation: {made_by}" in w.pipeline_dock.info.text()
    assert w.last_error is None
    np.testing.assert_array_equal(p.model_input, model_input)  # display lungs never touched it


def test_no_lungs_falls_back_to_max_with_a_status_message(
        qtbot: Any, window: Any, phantom: Any, unsegmented_checkpoint: Path, monkeypatch: Any) -> None:
    import cxr_studio.core.lungs as lungs
    from cxr_studio.core.phantoms.phantom import make_phantom

    w = window
    _open_demo_like(qtbot, w, phantom, unsegmented_checkpoint)

    def fails(*_a: Any, **_k: Any) -> Any:
        raise ValueError("the segmenter is broken in this test")

    monkeypatch.setattr(lungs, "segment_lungs_detailed", fails)
    other = make_phantom(12, size=320, abnormal=False).radiograph()
    messages: list[str] = []
    w.controller.message.connect(messages.append)
    w.last_error = None
    w.open_radiograph(other, None, "unsegmentable")
    qtbot.waitUntil(lambda: w.session.radiograph is other and w.session.preprocessed is not None
                    and w.session.heatmap is not None
                    and getattr(w.session.heatmap, "model_id", None) == w.session.current_model_id
                    and w.session.heatmap is not None, timeout=60000)
    qtbot.waitUntil(lambda: w.bridge.pending == 0, timeout=60000)
    assert w.session.preprocessed.lung_mask is None
    assert w.last_error is None and (w._error_box is None or not w._error_box.isVisible())
    assert any("ranking by max" in m for m in messages)
    assert any("could not be segmented" in m for m in messages)
    from cxr_studio.core.inspect.activations import rank_channels
    from cxr_studio.gui import jobs

    act = w.controller.activation()
    placement = jobs.placement(w.session.current_model.model, w.session.layer)
    best = rank_channels(act, "max", geometry=w.session.preprocessed.geometry, placement=placement)[0][0]
    assert w.session.heatmap.channel == best
