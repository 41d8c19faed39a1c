"""Model registry, cxrnet (the paper's CNN), torchvision transfer nets and readable layer names."""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn as nn
import torchvision

from cxr_studio.core.models import (
    LayerNotFoundError,
    UnknownArchitectureError,
    WeightsFileError,
    WeightsUnavailableError,
    architectures,
    build_model,
    conv_layers,
    count_parameters,
    deepest_conv,
    describe,
    layer_table,
    model_meta,
    readable_name,
    register,
    resolve_layer,
)
from cxr_studio.core.models import registry
from cxr_studio.core.models.cxrnet import feature_sizes
from cxr_studio.core.pipeline import PreprocessSpec

TINY = dict(width=0.125, fc_width=64)


def test_registry_lists_the_families():
    assert {"cxrnet", "cxrnet_narrow", "alexnet", "vgg16", "vgg19"} <= set(architectures())
    assert model_meta("vgg16").rebuild_overrides == {"weights": "empty"}
    assert "width" in model_meta("cxrnet").parameters


def test_unknown_architecture_and_option_are_clear_errors():
    with pytest.raises(UnknownArchitectureError, match="resnet9000.*known ones"):
        build_model("resnet9000")
    with pytest.raises(ValueError, match="no option.*widht.*accepts"):
        build_model("cxrnet", widht=0.5)
    with pytest.raises(ValueError, match="init"):
        build_model("cxrnet", init="xavier", **TINY)
    with pytest.raises(ValueError, match="too small"):
        build_model("cxrnet", input_size=40, **TINY)


def test_register_adds_a_family_with_default_attributes():
    @register("test_tiny_linear", family="test")
    def _tiny(*, n: int = 3) -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, n, 3), nn.ReLU(), nn.Flatten())

    try:
        m = build_model("test_tiny_linear", n=2)
    finally:
        registry._REGISTRY.pop("test_tiny_linear", None)
    assert "test_tiny_linear" not in architectures()
    assert m.layer_names == {"0": "0", "1": "1", "2": "2"}
    assert m.class_names == ["normal", "abnormal"] and m.new_layers == []
    assert m.arch == "test_tiny_linear" and m.arch_kwargs == {"n": 2}
    assert deepest_conv(m) == "1"


def test_full_cxrnet_matches_the_papers_reading():
    m = build_model("cxrnet")
    n = count_parameters(m)
    assert abs(n - 103.3e6) <= 0.1e6, n
    assert m.classifier.fc6.in_features == 20736
    rows = {name: shape for name, _, shape, _ in layer_table(m)}
    assert rows["conv5"] == (256, 20, 20)
    assert rows["pool5"] == (256, 9, 9)
    assert rows["fc8"] == (2,)
    assert isinstance(m.features.norm1, nn.LocalResponseNorm) and m.features.norm1.k == 2.0
    assert m.classifier.drop6.p == 0.5 and m.classifier.drop7.p == 0.5
    # paper init: N(0, 0.01) weights, zero biases
    w = m.classifier.fc6.weight
    w = w.detach()
    assert abs(float(w.std()) - 0.01) < 1e-3 and abs(float(w.mean())) < 1e-3
    assert float(m.features.conv3.bias.detach().abs().max()) == 0.0


def test_cxrnet_layer_names_in_forward_order():
    m = build_model("cxrnet", **TINY)
    expected = (
        "conv1 relu1 norm1 pool1 conv2 relu2 norm2 pool2 conv3 relu3 conv4 relu4 conv5 relu5 pool5 "
        "fc6 relu6 drop6 fc7 relu7 drop7 fc8"
    ).split()
    assert list(m.layer_names) == expected
    assert m.layer_names["conv5"] == "features.conv5" and m.layer_names["fc8"] == "classifier.fc8"
    assert conv_layers(m) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert deepest_conv(m) == "relu5"
    assert resolve_layer(m, "conv2") is m.features.conv2
    assert resolve_layer(m, "features.conv2") is m.features.conv2  # module paths work too
    assert readable_name(m, "classifier.fc7") == "fc7"
    with pytest.raises(LayerNotFoundError, match="conv9"):
        resolve_layer(m, "conv9")


def test_cxrnet_options_change_the_network():
    m = build_model("cxrnet", width=0.25, fc_width=32, input_size=128, num_classes=3, init="kaiming")
    assert m.features.conv1.out_channels == 24 and m.features.conv5.out_channels == 64
    assert m.classifier.fc6.in_features == 64 * feature_sizes(128)["pool5"] ** 2
    assert m.classifier.fc8.out_features == 3 and len(m.class_names) == 3
    assert m.default_preprocess == PreprocessSpec.preset("paper").replace(input_size=128).to_dict()
    out = m.eval()(torch.rand(2, 3, 128, 128))
    assert out.shape == (2, 3)
    gray = build_model("cxrnet", in_channels=1, **TINY)
    assert gray.features.conv1.in_channels == 1 and gray.default_preprocess["channels"] == 1
    gray.train()
    assert layer_table(gray)[0][2] == (12, 111, 111) and gray.training  # mode restored
    # He init: conv weight std ~ sqrt(2 / fan_in)
    fan_in = 3 * 7 * 7
    assert abs(float(m.features.conv1.weight.detach().std()) - (2 / fan_in) ** 0.5) < 0.03


def test_cxrnet_gap_head_is_cam_shaped_and_round_trips(tmp_path):
    """head="gap": pool5 -> global average -> fc8, no hidden fc layers; the score is linear in the
    channel means, so the fc8 row of a class weighs each relu5/pool5 channel (CAM)."""
    from cxr_studio.core.models.checkpoint import load_checkpoint, save_checkpoint

    m = build_model("cxrnet", head="gap", init="kaiming", dropout=0.0, width=0.25, fc_width=999)
    assert not hasattr(m.classifier, "fc6") and list(m.classifier._modules) == ["gap", "flatten", "drop8", "fc8"]
    assert m.classifier.fc8.in_features == m.features.conv5.out_channels == 64
    assert count_parameters(m) < count_parameters(build_model("cxrnet", width=0.25, fc_width=16))
    m.eval()
    x = torch.rand(2, 3, 227, 227)
    with torch.no_grad():
        pooled = m.features(x).mean((2, 3))
        assert torch.allclose(m(x), m.classifier.fc8(pooled), atol=1e-5)
    assert "fc8" in m.layer_names and resolve_layer(m, "relu5") is m.features.relu5
    path = save_checkpoint(tmp_path / "gap.pt", m)
    back = load_checkpoint(path)
    assert back.model.classifier.fc8.in_features == 64
    with torch.no_grad():
        assert torch.allclose(back.model(x), m(x), atol=1e-5)
    with pytest.raises(ValueError, match="head"):
        build_model("cxrnet", head="attention")


def test_cxrnet_batch_norm_variant_keeps_the_paper_layers_and_round_trips(tmp_path):
    """norm="batch": BatchNorm between every conv and its ReLU, LRN gone; the paper's layer names and
    sizes stay, the statistics start defined (gamma 1, running var 1) and travel with the checkpoint."""
    from cxr_studio.core.models.checkpoint import load_checkpoint, save_checkpoint

    paper = list(build_model("cxrnet", width=0.25, fc_width=16).features._modules)
    assert paper == ["conv1", "relu1", "norm1", "pool1", "conv2", "relu2", "norm2", "pool2", "conv3", "relu3",
                     "conv4", "relu4", "conv5", "relu5", "pool5"]
    m = build_model("cxrnet", head="gap", norm="batch", init="kaiming", dropout=0.0, width=0.25)
    names = list(m.features._modules)
    assert [n for n in names if not n.startswith("bn")] == [n for n in paper if not n.startswith("norm")]
    for i in range(1, 6):
        assert names.index(f"conv{i}") + 1 == names.index(f"bn{i}") == names.index(f"relu{i}") - 1
        bn = getattr(m.features, f"bn{i}")
        assert bn.num_features == getattr(m.features, f"conv{i}").out_channels
        assert torch.equal(bn.running_var, torch.ones_like(bn.running_var)) and torch.all(bn.weight == 1)
    assert resolve_layer(m, "relu5") is m.features.relu5 and deepest_conv(m) == "relu5"
    x = torch.rand(2, 3, 227, 227)
    m.train()
    m(x)  # one training pass moves the running statistics away from their start
    m.eval()
    path = save_checkpoint(tmp_path / "bn.pt", m, arch_kwargs={"head": "gap", "norm": "batch", "width": 0.25})
    back = load_checkpoint(path).model.eval()
    assert not torch.equal(back.features.bn1.running_mean, torch.zeros_like(back.features.bn1.running_mean))
    with torch.no_grad():
        assert torch.allclose(back(x), m(x), atol=1e-5)
    with pytest.raises(ValueError, match="norm"):
        build_model("cxrnet", norm="group")


def test_cxrnet_narrow_and_describe(capsys):
    text = describe("cxrnet_narrow", input_size=227)
    assert "conv5" in text and "total parameters" in text
    assert "1,496,514" in text
    assert "conv5" in capsys.readouterr().out


def test_alexnet_layers_and_transfer_head():
    m = build_model("alexnet", weights="none")
    names = list(m.layer_names)
    for n in ("conv1", "relu1", "pool1", "conv2", "pool2", "conv5", "relu5", "pool5", "fc6", "fc7", "fc8"):
        assert n in names
    assert names.index("conv1") < names.index("conv5") < names.index("fc6") < names.index("fc8")
    assert m.layer_names["fc8"] == "classifier.6"
    assert resolve_layer(m, "fc8").out_features == 2
    assert m.new_layers == ["fc8"]
    assert deepest_conv(m) == "relu5" and len(conv_layers(m)) == 5
    assert m.default_preprocess == PreprocessSpec.preset("torchvision").to_dict()
    assert m.eval()(torch.rand(1, 3, 224, 224)).shape == (1, 2)


def test_vgg16_readable_names():
    m = build_model("vgg16", weights="empty")  # names do not need the (slow) random init
    convs = conv_layers(m)
    assert convs[0] == "conv1_1" and convs[-1] == "conv5_3" and len(convs) == 13
    assert m.layer_names["conv5_3"] == "features.28" and m.layer_names["pool5"] == "features.30"
    assert deepest_conv(m) == "relu5_3"
    assert [n for n in m.layer_names if n.startswith("fc")] == ["fc6", "fc7", "fc8"]
    assert resolve_layer(m, "fc8").out_features == 2


def test_vgg19_has_fourth_convs_per_block():
    m = build_model("vgg19", weights="empty", num_classes=3)
    convs = conv_layers(m)
    assert len(convs) == 16
    assert {"conv3_4", "conv4_4", "conv5_4"} <= set(convs)
    assert deepest_conv(m) == "relu5_4"
    assert resolve_layer(m, "fc8").out_features == 3


def test_local_weights_file_loads_the_backbone(tmp_path):
    torch.manual_seed(0)
    src = torchvision.models.alexnet(weights=None)
    path = tmp_path / "alexnet-local.pth"
    torch.save(src.state_dict(), path)
    m = build_model("alexnet", weights=str(path))
    assert torch.equal(resolve_layer(m, "conv1").weight, src.features[0].weight)
    assert torch.equal(resolve_layer(m, "fc7").weight, src.classifier[4].weight)
    assert resolve_layer(m, "fc8").out_features == 2  # the 1000-class head was dropped
    assert any("head was replaced" in n for n in m.weights_notes)


def test_bad_local_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsFileError, match="not found"):
        build_model("alexnet", weights=str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a state dict at all")
    with pytest.raises(WeightsFileError, match="junk.pth"):
        build_model("alexnet", weights=str(junk))
    wrong = tmp_path / "wrong.pth"
    torch.save(build_model("cxrnet", **TINY).state_dict(), wrong)
    with pytest.raises(WeightsFileError, match="do not fit"):
        build_model("alexnet", weights=str(wrong))


def test_offline_without_cached_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    calls = []

    def no_network(url, *a, **k):
        calls.append(url)
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(WeightsUnavailableError) as err:
        build_model("alexnet")  # weights="imagenet" is the default
    msg = str(err.value)
    assert calls and "alexnet" in calls[0]
    assert str(tmp_path / "torch-home") in msg and "weights='none'" in msg
    assert isinstance(err.value, ValueError)


def test_imagenet_weights_come_through_torch_hub(monkeypatch):
    torch.manual_seed(2)
    fake = torchvision.models.alexnet(weights=None).state_dict()
    urls = []

    def cached(url, *a, **k):
        urls.append(url)
        assert k.get("weights_only") is True
        return fake

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", cached)
    m = build_model("alexnet", weights="imagenet")
    assert urls == [torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url]
    assert torch.equal(resolve_layer(m, "conv5").weight, fake["features.10.weight"])
    assert resolve_layer(m, "fc8").out_features == 2
