"""Bring your own model (issue 13): torchvision state dicts saved the ways users save them,
TorchScript, torch.export programs, a tiny ViT; deepest layer, Grad-CAM against pytorch-grad-cam,
export, multi-label, one clear sentence for bad files. Small random-weight models at 64 px."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.vision_transformer import VisionTransformer

from cxr_studio.core.inspect.activations import forward_with_activations, list_layers
from cxr_studio.core.models.checkpoint import CheckpointError, load_checkpoint
from cxr_studio.core.runtime.engine import ModelManager
from cxr_studio.core.models.importers import ScriptProgram, open_model, release_imported
from cxr_studio.core.models.layers import LayerNotFoundError, deepest_conv
from cxr_studio.core.models.placement import layer_placement
from cxr_studio.core.inspect.saliency import grad_cam

N = 64


def _x(seed: int = 0, channels: int = 3) -> torch.Tensor:
    return torch.rand(1, channels, N, N, generator=torch.Generator().manual_seed(seed))


def _reference_cam(model: torch.nn.Module, layer: str, x: torch.Tensor, k: int) -> np.ndarray:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=model, target_layers=[model.get_submodule(layer)]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(k)])[0]


def _check_cam(model: torch.nn.Module, layer: str, k: int = 1) -> None:
    x = _x(3)
    ours = grad_cam(model, x[0], layer, k)
    ref = _reference_cam(model, layer, x, k)
    assert ours.shape == ref.shape == (N, N)
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] >= 0.99


def _save(model: torch.nn.Module, path: Path, how: str) -> Path:
    sd = model.state_dict()
    if how == "plain":
        torch.save(sd, path)
    elif how == "state_dict+module":  # DataParallel, with the optimizer's epoch beside it
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 7}, path)
    elif how == "model":
        torch.save({"model": sd, "optimizer_lr": 0.01}, path)
    return path


FAMILIES = [  # (builder, how saved, deepest layer expected, layer compared with pytorch-grad-cam)
    ("resnet18", "plain", "layer4", "layer4"),
    # DenseNet's forward applies an in-place ReLU to `features`, which changes the activation
    # pytorch-grad-cam keeps (ours is the layer's true output); compare one block earlier
    ("densenet121", "state_dict+module", "features", "features.denseblock4"),
    ("efficientnet_b0", "model", "features", "features"),
    ("mobilenet_v3_small", "plain", "features", "features"),
]


@pytest.mark.parametrize("arch,how,deepest,cam_layer", FAMILIES)
def test_torchvision_state_dicts_load_and_explain(tmp_path, arch, how, deepest, cam_layer):
    torch.manual_seed(0)
    ref = torchvision.models.get_model(arch, weights=None, num_classes=3).eval()
    path = _save(ref, tmp_path / f"{arch}.pth", how)
    loaded = open_model(path, arch=arch, input_size=N, classes=["normal", "tb", "other"])
    m = loaded.model
    assert loaded.arch == arch and loaded.arch_kwargs["num_classes"] == 3  # read from the head
    assert loaded.class_names == ["normal", "tb", "other"] and loaded.spec.input_size == N
    assert "imported_from" in loaded.provenance
    with torch.no_grad():
        assert torch.allclose(m(_x()), ref(_x()), atol=1e-5)
    assert deepest_conv(m) == deepest
    layers = list_layers(m, N)
    assert [li.name for li in layers][:1] and all(li.name in m.layer_names for li in layers)
    assert dict((li.name, li.shape) for li in layers)[deepest][1:] == (2, 2)
    place = layer_placement(m, deepest)
    assert place is not None and place.stride == 32.0
    _check_cam(m, cam_layer)
    from cxr_studio.core.inspect.features import conv1_mosaic

    first = next(mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d))
    assert conv1_mosaic(m).shape[2] == 3 and first.out_channels >= 16  # the first conv's filters as tiles


def test_state_dict_that_does_not_fit_names_keys_in_one_sentence(tmp_path):
    path = _save(torchvision.models.resnet18(num_classes=2), tmp_path / "r18.pth", "plain")
    with pytest.raises(CheckpointError) as err:
        open_model(path, arch="resnet34")
    msg = str(err.value)
    assert "missing: layer1.2.conv1.weight" in msg and "\n" not in msg
    with pytest.raises(CheckpointError, match="Unknown architecture 'resnet9000' for the state dict"):
        open_model(path, arch="resnet9000")
    with pytest.raises(CheckpointError, match="bare state dict.*--arch"):
        open_model(path)
    with pytest.raises(CheckpointError, match="3 class names are given .* 2 outputs"):
        open_model(path, arch="resnet18", classes=["a", "b", "c"])


def test_receptive_field_placement_of_padded_and_unpadded_stacks():
    from cxr_studio.core.models import build_model

    vgg = build_model("vgg11", num_classes=2, weights="empty")  # 2x2 max pools: offset 0.5 + 1 + 2 + 4 + 8
    assert layer_placement(vgg, "features").stride == 32.0 and layer_placement(vgg, "features").offset == 15.5
    dense = build_model("densenet121", num_classes=2, weights="empty")  # 2x2 average pools in transitions
    assert layer_placement(dense, "features").offset == 14.0


def test_torchscript_trace_is_rebuilt_and_observable(tmp_path):
    torch.manual_seed(1)
    ref = torchvision.models.resnet18(num_classes=2).eval()
    path = tmp_path / "traced.pt"
    torch.jit.trace(ref, _x()).save(str(path))
    with pytest.raises(CheckpointError, match="TorchScript.*open it explicitly"):
        load_checkpoint(path)  # never run by the safe loader
    loaded = open_model(path, input_size=N)  # found by content, no --arch
    assert loaded.arch == "resnet18" and "rebuilt as torchvision resnet18" in loaded.warnings[0]
    assert deepest_conv(loaded.model) == "layer4"
    with torch.no_grad():
        assert torch.allclose(loaded.model(_x(5)), ref(_x(5)), atol=1e-5)
    _check_cam(loaded.model, "layer4", 0)


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_torchscript_of_unknown_architecture_predicts_and_says_what_it_cannot_show(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(_Tiny().eval()).save(str(path))
    loaded = open_model(path, input_size=N, multi_label=True)
    assert isinstance(loaded.model, ScriptProgram) and loaded.spec.channels == 1
    fwd = forward_with_activations(loaded.model, _x(channels=1)[0])
    assert fwd.probabilities.shape == (3,) and not np.isclose(fwd.probabilities.sum(), 1.0)  # sigmoid
    with pytest.raises(LayerNotFoundError, match="only its prediction"):
        deepest_conv(loaded.model)


def test_exported_program_is_unflattened_so_layers_can_be_hooked(tmp_path):
    torch.manual_seed(2)
    ref = torchvision.models.mobilenet_v3_small(num_classes=2).eval()
    path = tmp_path / "mobile.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(ref, (_x(),)), str(path))
    loaded = open_model(path)
    assert loaded.spec.input_size == N and loaded.arch == "exported"  # the size it was exported for
    assert deepest_conv(loaded.model) == "features"
    # placement read from the unflattened graph's conv / pool calls, as for the eager model
    assert layer_placement(loaded.model, "features") == layer_placement(
        open_model(_save(ref, tmp_path / "m.pth", "plain"), arch="mobilenet_v3_small", input_size=N).model, "features")
    assert layer_placement(loaded.model, "features").stride == 32.0
    fwd = forward_with_activations(loaded.model, _x(4)[0], ["features"])
    assert fwd.activations["features"].shape == (576, 2, 2)
    _check_cam(loaded.model, "features")
    # the filter mosaic reads the first conv's weight from the unflattened graph, as from the eager model
    from cxr_studio.core.inspect.features import conv1_mosaic
    assert np.array_equal(conv1_mosaic(loaded.model), conv1_mosaic(ref))
    assert np.array_equal(conv1_mosaic(loaded.model, "features.0.0"), conv1_mosaic(ref, "features.0.0"))
    with pytest.raises(CheckpointError, match="exported for 64x64 inputs only"):
        open_model(path, input_size=96)


def test_tiny_vit_predicts_and_names_the_views_that_need_a_spatial_layer(tmp_path):
    from cxr_studio.core.phantoms.phantom import make_phantom
    from cxr_studio.core.pipeline import preprocess
    from cxr_studio.core.inspect.views import ViewError, compute_forward, compute_heatmap

    torch.manual_seed(3)
    vit = VisionTransformer(image_size=N, patch_size=16, num_layers=1, num_heads=2, hidden_dim=16,
                            mlp_dim=32, num_classes=2).eval()
    path = tmp_path / "vit.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(vit, (_x(),)), str(path))
    loaded = open_model(path, preset="torchvision")
    note = " ".join(loaded.warnings)
    assert "token sequences" in note and "Grad-CAM" in note
    assert deepest_conv(loaded.model) == "conv_proj"
    pre = preprocess(make_phantom(0, size=96).radiograph(), loaded.spec.replace(segmentation="none", crop=False))
    fwd = compute_forward(loaded, pre)
    assert fwd.probabilities.shape == (2,)
    token_layer = next(n for n in loaded.model.layer_names if n.startswith("encoder.layers"))
    with pytest.raises(ViewError) as err:
        compute_heatmap(loaded, pre, fwd, token_layer)
    assert "\n" not in str(err.value)


def test_multi_label_export_names_the_class(tmp_path):
    from cxr_studio.batch import main
    from cxr_studio.core.imaging.io import write_png
    from cxr_studio.core.phantoms.phantom import make_phantom

    torch.manual_seed(4)
    path = _save(torchvision.models.resnet18(num_classes=3), tmp_path / "ml.pth", "plain")
    write_png(tmp_path / "img.png", make_phantom(1, size=96).image)
    out = tmp_path / "out"
    code = main(["--checkpoint", str(path), "--arch", "resnet18", "--classes", "effusion,nodule,mass",
                 "--multi-label", "--input-size", str(N), "--segmentation", "none", "--method", "gradcam",
                 "--class", "nodule", "--out", str(out), "--no-progress", str(tmp_path / "img.png")])
    assert code == 0
    assert all((out / f"img{s}").is_file() for s in (".png", ".npy", ".json"))
    side = json.loads((out / "img.json").read_text())
    assert side["class_name"] == "nodule" and side["class_index"] == 1 and side["multi_label"] is True
    assert len(side["probabilities"]) == 3 and abs(sum(side["probabilities"]) - 1.0) > 1e-3
    assert main(["--checkpoint", str(path), "--arch", "resnet18", "--class", "2", "--input-size", str(N),
                 "--segmentation", "none", "--method", "gradcam", "--out", str(out / "b"), "--no-progress",
                 str(tmp_path / "img.png")]) == 0
    assert json.loads((out / "b" / "img.json").read_text())["class_index"] == 2


def test_bad_files_get_one_sentence(tmp_path, capsys):
    from cxr_studio.batch import main

    png = tmp_path / "picture.pth"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    for bad in (png, junk, tmp_path / "missing.pt"):
        with pytest.raises(CheckpointError) as err:
            open_model(bad, arch="resnet18")
        assert "\n" not in str(err.value)
    assert main(["--checkpoint", str(png), "--arch", "resnet18", "--out", str(tmp_path / "o"), str(png)]) == 2
    err = capsys.readouterr().err
    assert "PNG image" in err and "Traceback" not in err


def test_manager_release_and_the_same_flags_everywhere(tmp_path, capsys):
    path = _save(torchvision.models.resnet18(num_classes=2), tmp_path / "r.pth", "plain")
    manager = ModelManager("cpu")
    manager.open_options[str(path.resolve())] = {"arch": "resnet18", "input_size": N}
    mid = manager.load(path)
    assert manager.get(mid).arch == "resnet18" and manager.get(mid).spec.input_size == N
    release = release_imported(path, tmp_path / "release.pt", arch="resnet18", input_size=N)
    again = load_checkpoint(release)  # self-describing now: no --arch
    assert again.arch == "resnet18" and again.spec.input_size == N and "imported_from" in again.provenance
    from cxr_studio.batch import build_parser
    from cxr_studio.training.cli import main as train_main

    for flag in ("--arch", "--classes", "--input-size", "--preset", "--multi-label"):
        assert flag in build_parser().format_help()
    from cxr_studio.gui.app import parse_args  # the app's parser (no Qt needed to parse)

    app_args = parse_args(["--checkpoint", str(path), "--arch", "resnet18", "--classes", "a,b", "--input-size", "96"])
    assert (app_args.arch, app_args.classes, app_args.input_size) == ("resnet18", ["a", "b"], 96)
    assert train_main(["export-release", str(path), str(tmp_path / "rel2.pt"), "--arch", "resnet18",
                       "--classes", "normal,tb"]) == 0
    assert load_checkpoint(tmp_path / "rel2.pt").class_names == ["normal", "tb"]
    with pytest.raises(SystemExit):
        train_main(["eval", "--help"])
    assert "--preset" in capsys.readouterr().out


def test_eval_takes_a_torchvision_state_dict_with_the_same_flags(tmp_path, capsys):
    from cxr_studio.core.phantoms.phantom import write_phantom_dataset
    from cxr_studio.training.cli import main as train_main

    root = write_phantom_dataset(tmp_path / "data", 6, seed=0, size=128)
    path = _save(torchvision.models.resnet18(num_classes=2), tmp_path / "r.pth", "plain")
    code = train_main(["eval", "--checkpoint", str(path), "--arch", "resnet18", "--input-size", str(N),
                       "--data", str(root), "--all", "--json", str(tmp_path / "m.json")])
    assert code == 0 and json.loads((tmp_path / "m.json").read_text())["n"] == 6
    assert train_main(["eval", "--checkpoint", str(path), "--data", str(root), "--all"]) == 2  # no --arch
    assert "bare state dict" in capsys.readouterr().err


def _saved_forms(tmp_path: Path) -> list[tuple[str, Path, list[str]]]:
    """Every form a user brings, saved here, with the flags `cxr-studio export` needs for it."""
    torch.manual_seed(5)
    forms = [(arch, _save(getattr(torchvision.models, arch)(num_classes=2), tmp_path / f"{arch}.pth", how),
              ["--arch", arch]) for arch, how, _, _ in FAMILIES]
    traced = tmp_path / "traced.pt"
    torch.jit.trace(torchvision.models.resnet18(num_classes=2).eval(), _x()).save(str(traced))
    forms.append(("torchscript", traced, []))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(torchvision.models.mobilenet_v3_small(num_classes=2).eval(), (_x(),))
        torch.export.save(program, str(tmp_path / "mobile.pt2"))
    forms.append(("exported", tmp_path / "mobile.pt2", []))
    return forms


def test_export_writes_png_npy_json_for_every_form_a_user_brings(tmp_path):
    from cxr_studio.batch import main
    from cxr_studio.core.imaging.io import write_png
    from cxr_studio.core.phantoms.phantom import make_phantom

    write_png(tmp_path / "img.png", make_phantom(2, size=96).image)
    for name, path, flags in _saved_forms(tmp_path):
        out = tmp_path / f"out-{name}"
        code = main(["--checkpoint", str(path), *flags, "--input-size", str(N), "--segmentation", "none",
                     "--method", "gradcam", "--out", str(out), "--no-progress", str(tmp_path / "img.png")])
        assert code == 0, name
        assert all((out / f"img{s}").is_file() for s in (".png", ".npy", ".json")), name
        cam = np.load(out / "img.npy")
        assert cam.ndim == 2 and np.isfinite(cam).all() and cam.max() > cam.min(), name
        side = json.loads((out / "img.json").read_text())
        assert side["method"] == "gradcam" and len(side["probabilities"]) == 2, name
