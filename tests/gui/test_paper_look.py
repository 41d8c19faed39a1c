"""Issue 17 item 4, the paper's look by default: a non-zero threshold for every image, "no data"
transparent at any threshold, and another model shows its own strongest channel."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest


def test_every_image_opens_at_a_non_zero_threshold(qtbot: Any, loaded_window: Any) -> None:
    from cxr_studio.core.runtime.session import DEFAULT_THRESHOLD

    w = loaded_window
    assert 0 < w.session.threshold == DEFAULT_THRESHOLD
    assert w.heatmap_dock.threshold_spin.value() == pytest.approx(DEFAULT_THRESHOLD)
    below = int(np.ceil(DEFAULT_THRESHOLD * 255)) - 1
    assert w.view.heat_lut[below, 3] == 0 and w.view.heat_lut[below + 1, 3] == 255


def test_no_data_is_transparent_at_any_threshold(qtbot: Any, loaded_window: Any) -> None:
    w = loaded_window
    hv = w.session.heatmap
    assert hv.valid is not None and hv.valid.shape == hv.map_input.shape
    assert hv.valid.any() and not hv.valid.all()  # the receptive-field centres leave a border
    w.session.threshold = 0.0
    lut, img = w.view.heat_lut, w.view.heat.image
    assert lut[0, 3] == 0  # "no data" never coloured...
    assert lut[1, 3] == 255  # ...while the lowest real value is, at threshold 0
    v = w.view.heat_valid
    assert img.shape == v.shape
    assert (img[~v] == 0).all() and (img[v] >= 1).all()
    # the cursor readout has no activation where there is no data
    x0, y0, cw, ch = w.view.heat_rect
    i, j = np.argwhere(~v)[0]
    x = x0 + (j + 0.5) * cw / v.shape[1] - 0.5
    y = y0 + (i + 0.5) * ch / v.shape[0] - 0.5
    assert w.view.value_at(x, y)[1] is None
    w.session.threshold = 0.8
    assert w.view.heat_lut[0, 3] == 0 and w.view.heat_lut[255, 3] == 255


def test_saved_threshold_from_before_the_default_is_not_restored(qtbot: Any, settings: Any) -> None:
    from cxr_studio.core.runtime.session import DEFAULT_THRESHOLD

    settings.set_value("view/threshold", 0.0)  # written by an older version (no view/version)
    settings.set_value("view/opacity", 0.7)
    assert "threshold" not in settings.view_settings() and settings.view_settings()["opacity"] == 0.7
    settings.set_view_settings({"threshold": 0.45})
    assert settings.view_settings()["threshold"] == 0.45
    assert DEFAULT_THRESHOLD > 0


def test_switching_models_shows_that_models_strongest_channel(
        qtbot: Any, loaded_window: Any, tmp_path: Path) -> None:
    import torch

    from cxr_studio.core.inspect.activations import rank_channels
    from cxr_studio.core.models.checkpoint import save_checkpoint
    from cxr_studio.core.models import build_model
    from cxr_studio.gui import jobs

    w = loaded_window
    first = w.session.current_model_id
    torch.manual_seed(7)
    kw = {"width": 0.25, "fc_width": 64}
    model = build_model("cxrnet", **kw)
    other = tmp_path / "other.pt"
    save_checkpoint(other, model, arch="cxrnet", arch_kwargs=kw, class_names=["normal", "abnormal"],
                    preprocess=dict(model.default_preprocess), provenance={"recipe": "test"})
    w.controller.load_checkpoint(str(other))
    qtbot.waitUntil(lambda: len(w.session.models) == 2 and w.session.current_model_id != first, timeout=60000)
    second = w.session.current_model_id

    def strongest_shown(mid: str) -> bool:
        hv = w.session.heatmap
        act = w.controller.activation()
        if hv is None or hv.model_id != mid or act is None or w.bridge.pending:
            return False
        p = w.session.preprocessed
        placement = jobs.placement(w.session.models[mid].model, w.session.layer)
        best = rank_channels(act, w.session.ranking, geometry=p.geometry, lung_mask=p.lung_mask,
                             placement=placement)[0][0]
        return w.session.channel == best == hv.channel

    qtbot.waitUntil(lambda: strongest_shown(second), timeout=60000)
    w.session.channel = (w.session.channel + 3) % w.session.channel_count()  # the user looks elsewhere
    w.session.current_model_id = first
    qtbot.waitUntil(lambda: strongest_shown(first), timeout=60000)
