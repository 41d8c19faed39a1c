"""Optional importers: ``timm:NAME`` (cxr-studio[timm]) and TorchXRayVision ``xrv:NAME``
(cxr-studio[xrv]). The tests that need a package skip without it; the message for a missing
package is tested always."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from cxr_studio.core.inspect.activations import forward_with_activations
from cxr_studio.core.models.checkpoint import CheckpointError
from cxr_studio.core.models.importers import open_model
from cxr_studio.core.models.layers import deepest_conv
from cxr_studio.core.inspect.saliency import grad_cam

N = 64


def _cam_matches(model: torch.nn.Module, layer: str, x: torch.Tensor, k: int) -> None:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    ours = grad_cam(model, x[0], layer, k)
    with GradCAM(model=model, target_layers=[model.get_submodule(layer)]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(k)])[0]
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] >= 0.99


def test_a_missing_optional_package_is_named_with_the_extra(tmp_path, monkeypatch):
    real = importlib.import_module

    def no_timm(name, *a, **k):
        if name in ("timm", "torchxrayvision"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", no_timm)
    with pytest.raises(CheckpointError, match=r"needs the timm package: pip install 'cxr-studio\[timm\]'"):
        open_model(tmp_path / "w.pth", arch="timm:resnet18")
    with pytest.raises(CheckpointError, match=r"cxr-studio\[xrv\]"):
        open_model(None, arch="xrv:densenet121-res224-all")
    with pytest.raises(CheckpointError, match="use timm:NAME or xrv:NAME"):
        open_model(tmp_path / "w.pth", arch="keras:resnet")


def test_timm_state_dict_loads_with_outputs_and_channels_from_the_file(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model("resnet18", pretrained=False, num_classes=3, in_chans=1).eval()
    path = tmp_path / "timm_r18.pth"
    torch.save({"state_dict": ref.state_dict()}, path)
    loaded = open_model(path, arch="timm:resnet18", input_size=N)
    m = loaded.model
    assert loaded.arch_kwargs == {"num_classes": 3, "in_chans": 1} and loaded.spec.channels == 1
    x = torch.rand(1, 1, N, N)
    with torch.no_grad():
        assert torch.allclose(m(x), ref(x), atol=1e-5)
    assert deepest_conv(m) == "layer4"
    _cam_matches(m, "layer4", x, 2)
    with pytest.raises(CheckpointError, match="do not fit timm:resnet34"):
        open_model(path, arch="timm:resnet34")


def test_xrv_densenet_state_dict_is_multi_label_with_its_pathologies(tmp_path):
    xrv = pytest.importorskip("torchxrayvision")
    torch.manual_seed(1)
    ref = xrv.models.DenseNet(weights=None).eval()
    path = tmp_path / "xrv_dense.pth"
    torch.save(ref.state_dict(), path)
    loaded = open_model(path, arch="xrv:densenet121", input_size=N)
    assert loaded.multi_label and loaded.spec.channels == 1 and loaded.spec.normalization == "xrv"
    labels = list(getattr(ref, "pathologies", None) or ref.targets)
    assert len(loaded.class_names) == len(labels) == 18
    assert [c for c, p in zip(loaded.class_names, labels) if p] == [p for p in labels if p]
    x = torch.rand(1, 1, N, N) * 2048 - 1024
    fwd = forward_with_activations(loaded.model, x[0])
    with torch.no_grad():
        expected = torch.sigmoid(ref(x))[0].numpy()
    np.testing.assert_allclose(fwd.probabilities, expected, atol=1e-5)  # one sigmoid per pathology
    layer = deepest_conv(loaded.model)
    assert fwd.probabilities.shape == (len(labels),) and layer.startswith("features")
    # random weights leave some classes with an all-zero Grad-CAM (nothing to compare): take the first that has one
    k = next(k for k in range(len(labels)) if grad_cam(loaded.model, x[0], "features.denseblock4", k).std() > 0)
    _cam_matches(loaded.model, "features.denseblock4", x, k)
    with pytest.raises(CheckpointError) as err:
        open_model(None, arch="xrv:no-such-weights")
    assert "\n" not in str(err.value)


class _Exploit:
    """What a hostile weights file holds: a call to run when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_published_weights_loader_allows_layers_and_nothing_else(tmp_path):
    """xrv_weights.load_layers_only: what torchxrayvision's own torch.load becomes (weights_only)."""
    from cxr_studio.core.models.xrv_weights import UnsafeWeightsError, load_layers_only

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    torch.save(net, tmp_path / "whole.pt")  # a whole pickled model, as the xrv DenseNet files are
    got = load_layers_only(tmp_path / "whole.pt", map_location="cpu")
    assert isinstance(got, torch.nn.Sequential)
    assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), net.state_dict().values()))
    marker = tmp_path / "ran"
    torch.save({"w": torch.zeros(2), "x": _Exploit(marker)}, tmp_path / "hostile.pt")
    with pytest.raises(UnsafeWeightsError, match="os.system|posix.system|not a network layer"):
        load_layers_only(tmp_path / "hostile.pt")
    assert not marker.exists()
    torch.save(net, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeWeightsError, match="legacy whole-model format"):
        load_layers_only(tmp_path / "legacy.pt")


def test_xrv_published_weights_load_from_the_package_cache_without_unpickling_code(tmp_path, monkeypatch):
    xrv = pytest.importorskip("torchxrayvision")
    import os

    name = "densenet121-res224-all"
    monkeypatch.setattr(xrv.utils, "get_cache_dir", lambda: str(tmp_path) + os.sep)
    cached = tmp_path / os.path.basename(xrv.models.model_urls[name]["weights_url"])
    torch.manual_seed(4)
    ref = xrv.models.DenseNet(weights=None).eval()
    torch.save(ref, cached)  # what the package downloads: a whole pickled DenseNet
    loaded = open_model(None, arch=f"xrv:{name}", input_size=N)
    package_own = xrv.models.get_model(name).eval()  # the package's unpickling load: our own file here
    x = torch.rand(1, 1, N, N) * 2048 - 1024
    with torch.no_grad():
        expected = package_own(x)[0].numpy()  # calibrated probabilities (op_threshs)
        plain = torch.sigmoid(ref(x))[0].numpy()
    assert package_own.op_threshs is not None and not np.allclose(expected, plain)
    np.testing.assert_allclose(forward_with_activations(loaded.model, x[0]).probabilities, expected, atol=1e-5)
    assert loaded.multi_label and "TorchXRayVision weights" in loaded.provenance["imported_from"]
    assert xrv.models.torch is torch  # the package's own torch is back after the load
    marker = tmp_path / "ran"
    torch.save(_Exploit(marker), cached)  # a file planted in the cache
    with pytest.raises(CheckpointError, match="refused") as err:
        open_model(None, arch=f"xrv:{name}", input_size=N)
    assert not marker.exists() and "\n" not in str(err.value)
