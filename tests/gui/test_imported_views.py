"""Every view of the app on models users bring (issue 13's "left": the filter mosaic, the strongest
channel, activation maximisation and the compare view had no test on imported models). Calls the
worker jobs the GUI sends (`gui.jobs`, no Qt), on torchvision state dicts opened as users open them, and
on a checkpoint whose stored input differs from its architecture's default."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from cxr_studio.core.imaging.radiograph import Radiograph
from cxr_studio.core.inspect.activations import rank_channels
from cxr_studio.core.inspect.features import AMSettings, activation_maximisation
from cxr_studio.core.inspect.views import compute_forward, compute_heatmap
from cxr_studio.core.models import build_model
from cxr_studio.core.models.checkpoint import load_checkpoint, save_checkpoint
from cxr_studio.core.models.importers import open_model
from cxr_studio.core.models.layers import deepest_conv
from cxr_studio.core.models.placement import layer_placement
from cxr_studio.core.phantoms.phantom import make_phantom
from cxr_studio.core.pipeline import preprocess
from cxr_studio.gui import jobs

N = 64
QUICK_AM = AMSettings(iterations=6, octaves=2)


def _opened(tmp_path: Path, arch: str) -> object:
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None, num_classes=2).eval()
    path = tmp_path / f"{arch}.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return open_model(path, arch=arch, input_size=N, classes=["normal", "tb"])


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_mosaic_strongest_channel_maximisation_and_compare_on_an_imported_model(tmp_path: Path, arch: str) -> None:
    loaded = _opened(tmp_path, arch)
    first = next(m for m in loaded.model.modules() if isinstance(m, torch.nn.Conv2d))
    # the filter mosaic: one RGB tile per first-layer filter
    mosaic = jobs.conv1_tiles(loaded)
    k = first.kernel_size[0]
    assert mosaic.ndim == 3 and mosaic.shape[2] == 3 and 0.0 <= mosaic.min() and mosaic.max() <= 1.0
    tiles = round(mosaic.shape[0] / (k + 1)) * round(mosaic.shape[1] / (k + 1))
    assert tiles >= first.out_channels > 0 and mosaic.std() > 0

    # the strongest channel of the deepest layer: the first of the ranking, on the model input
    phantom = make_phantom(4, size=160, abnormal=True)
    pre = preprocess(Radiograph.from_array(phantom.image), loaded.spec, lung_mask=phantom.lung_mask)
    fwd = compute_forward(loaded, pre)
    layer = deepest_conv(loaded.model)
    hm = compute_heatmap(loaded, pre, fwd, layer, "strongest", "activation", ranking="max")
    order = rank_channels(fwd.activations[layer], "max")
    assert hm.channel == order[0][0] and hm.map_input.shape == (N, N) and hm.map_input.max() == pytest.approx(1.0)
    assert hm.map_original.shape == phantom.image.shape

    # activation maximisation at the model's own input size, raising the channel it was asked for
    img = activation_maximisation(loaded.model, layer, hm.channel, settings=QUICK_AM)
    assert img.shape == (N, N) and np.isfinite(img).all() and img.std() > 0

    # the compare view's row: the deepest conv's strongest channel and its Grad-CAM
    row = jobs.compare_row("imported", loaded, pre, fwd, "lungs", None, 1, "channel")
    assert row.layer == layer and row.channel == rank_channels(
        fwd.activations[layer], "lungs", geometry=pre.geometry, lung_mask=pre.lung_mask,
        placement=layer_placement(loaded.model, layer))[0][0]
    assert row.activation.shape == row.gradcam.shape == (N, N) and np.isfinite(row.gradcam).all()
    assert row.probabilities.shape == (2,) and row.probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_a_checkpoints_stored_input_is_the_input_its_views_use(tmp_path: Path) -> None:
    """A checkpoint trained at another input size than its architecture's default: the layer table and
    activation maximisation use the stored size, as the preprocessing does."""
    torch.manual_seed(0)
    kw = {"width": 0.125, "head": "gap"}  # a global-average-pool head takes any input size
    model = build_model("cxrnet", **kw)
    default = int(model.default_preprocess["input_size"])
    spec = dict(model.default_preprocess, input_size=default + 32)
    path = tmp_path / "bigger-input.pt"
    save_checkpoint(path, model, arch="cxrnet", arch_kwargs=kw, class_names=["normal", "abnormal"],
                    preprocess=spec, provenance={"recipe": "test"})
    loaded = load_checkpoint(path)
    assert loaded.spec.input_size == default + 32
    img = activation_maximisation(loaded.model, "relu5", 0, settings=QUICK_AM)
    assert img.shape == (default + 32, default + 32)
    layers = {i.name: i.shape for i in jobs.layer_list(loaded, loaded.spec.input_size)}
    assert layers["conv1"][1] > 111  # the paper's 227 input gives 111
