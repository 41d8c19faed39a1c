"""Session state: validation, one signal per real change, model/layer/channel navigation; Signal."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch.nn as nn

from cxr_studio.core.runtime.events import Signal
from cxr_studio.core.pipeline import PreprocessSpec
from cxr_studio.core.imaging.radiograph import Radiograph
from cxr_studio.core.runtime.session import FIELDS, Session, SessionError


# -- Signal ---------------------------------------------------------------------------------------
def test_signal_connect_emit_disconnect() -> None:
    sig = Signal("x")
    got: list[tuple] = []
    cb = sig.connect(lambda *a: got.append(a))
    sig.connect(cb)  # connecting twice does not double-call
    sig.emit(1, "a")
    assert got == [(1, "a")]
    sig.disconnect(cb)
    sig.emit(2)
    assert got == [(1, "a")]
    sig.disconnect(cb)  # no-op
    with pytest.raises(TypeError):
        sig.connect(42)  # type: ignore[arg-type]


def test_signal_failing_callback_does_not_stop_others(caplog: pytest.LogCaptureFixture) -> None:
    sig = Signal("s")
    got: list[int] = []

    def bad(v: int) -> None:
        raise RuntimeError("boom")

    sig.connect(bad)
    sig.connect(got.append)
    with caplog.at_level(logging.ERROR):
        sig.emit(5)
    assert got == [5]
    assert "boom" in caplog.text


def test_signal_blocked_nests() -> None:
    sig = Signal()
    got: list[int] = []
    sig.connect(got.append)
    with sig.blocked():
        with sig.blocked():
            sig.emit(1)
        sig.emit(2)
        assert sig.is_blocked
    sig.emit(3)
    assert got == [3] and not sig.is_blocked


def test_signal_group() -> None:
    from cxr_studio.core.runtime.events import SignalGroup

    g = SignalGroup(["a", "b"])
    got: list = []
    g.a.connect(got.append)
    g.changed.connect(lambda *x: got.append(x))
    with g.blocked():
        g.a.emit(1)
        g.changed.emit("a", 1)
    g.a.emit(2)
    assert got == [2] and not g.a.is_blocked
    for bad in ("changed", "not an identifier", "signal"):
        with pytest.raises(ValueError):
            SignalGroup([bad])


# -- fixtures ---------------------------------------------------------------------------------------
def tiny_model() -> nn.Module:
    m = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU(),
        nn.Flatten(), nn.LazyLinear(2),
    )
    m.layer_names = {"conv1": "0", "relu1": "1", "pool1": "2", "conv2": "3", "relu2": "4", "fc": "6"}
    return m


@dataclass
class FakeLoaded:
    model: nn.Module = field(default_factory=tiny_model)
    arch: str = "tiny"
    class_names: list = field(default_factory=lambda: ["normal", "abnormal"])
    spec: Any = field(default_factory=lambda: PreprocessSpec.preset("fast"))
    sha256: str = "ab" * 32
    path: str = "/tmp/tiny.pt"
    multi_label: bool = False


class Recorder:
    def __init__(self, session: Session) -> None:
        self.calls: list[tuple[str, Any]] = []
        session.events.changed.connect(lambda n, v: self.calls.append((n, v)))

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]


def test_every_field_has_a_signal() -> None:
    s = Session()
    for name in FIELDS:
        assert isinstance(s.events.signal(name), Signal)
    with pytest.raises(ValueError, match="no signal called 'nope'"):
        s.events.signal("nope")


# -- validation and emission ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, good, bad",
    [
        ("threshold", 0.25, [-0.01, 1.01, "x", float("nan")]),
        ("opacity", 1.0, [2, -1]),
        ("colormap", "viridis", ["hot", None]),
        ("method", "gradcam++", ["cam", ""]),
        ("scale", "layer", ["global"]),
        ("ranking", "lungs", ["median"]),
    ],
)
def test_setters_validate_and_emit_once(name: str, good: Any, bad: list) -> None:
    s = Session()
    per_field: list[Any] = []
    s.events.signal(name).connect(per_field.append)
    rec = Recorder(s)
    setattr(s, name, good)
    setattr(s, name, good)  # no-op: no second emission
    assert getattr(s, name) == good
    assert per_field == [good] and rec.calls == [(name, good)]
    for b in bad:
        with pytest.raises(SessionError):
            setattr(s, name, b)
    assert getattr(s, name) == good and len(per_field) == 1


def test_error_messages_are_sentences() -> None:
    s = Session()
    with pytest.raises(SessionError, match=r"threshold must be between 0 and 1, got 1\.5"):
        s.threshold = 1.5
    with pytest.raises(SessionError, match="Unknown colormap 'hot'; choose one of jet, viridis"):
        s.colormap = "hot"
    assert issubclass(SessionError, ValueError)


def test_blocked_events_suppress_everything() -> None:
    s = Session()
    rec = Recorder(s)
    with s.events.blocked():
        s.threshold = 0.7
    assert s.threshold == 0.7 and rec.calls == []


# -- models, layers, channels -----------------------------------------------------------------------
def test_add_remove_models_and_fallback() -> None:
    s = Session()
    rec = Recorder(s)
    a, b, c = FakeLoaded(), FakeLoaded(), FakeLoaded()
    s.add_model("a", a)
    assert s.current_model_id == "a" and s.current_model is a
    assert s.layer in ("conv2", "relu2")  # deepest conv (its ReLU when models.layers decides)
    s.add_model("b", b)
    s.add_model("c", c)
    assert list(s.models) == ["a", "b", "c"] and s.current_model_id == "a"
    s.current_model_id = "b"
    with pytest.raises(SessionError, match="No model with id 'zzz'"):
        s.current_model_id = "zzz"
    s.remove_model("b")  # current removed -> the next one
    assert s.current_model_id == "c"
    s.remove_model("c")  # the last one removed -> the previous
    assert s.current_model_id == "a"
    s.remove_model("a")
    assert s.current_model_id is None and s.layer is None and s.models == {}
    with pytest.raises(SessionError):
        s.remove_model("a")
    assert rec.names().count("models") == 6


def test_select_layer_resets_channel_and_validates() -> None:
    s = Session()
    s.add_model("m", FakeLoaded())
    s.select_layer("conv2")
    s.channel = 5
    got: list[int] = []
    s.events.channel.connect(got.append)
    s.select_layer("conv1")
    assert s.layer == "conv1" and s.channel == 0 and got == [0]
    with pytest.raises(SessionError, match="no layer 'conv9'"):
        s.select_layer("conv9")
    with pytest.raises(SessionError, match="out of range"):
        s.channel = 4  # conv1 has 4 channels: 0..3
    with pytest.raises(SessionError):
        s.channel = 1.5  # type: ignore[assignment]


def test_next_channel_wraps_within_layer() -> None:
    s = Session()
    s.add_model("m", FakeLoaded())
    s.select_layer("relu1")  # channels from the conv before it: 4
    assert s.channel_count() == 4
    assert [s.next_channel(+1) for _ in range(5)] == [1, 2, 3, 0, 1]
    assert s.next_channel(-1) == 0 and s.next_channel(-1) == 3
    # a cached forward pass takes precedence for the channel count
    fwd = SimpleNamespace(activations={"relu1": np.zeros((7, 3, 3), np.float32)})
    s.set_forward("m", fwd)
    assert s.forward is fwd and s.channel_count() == 7
    s.channel = 6
    assert s.next_channel(+1) == 0


def test_next_layer_walks_conv_layers() -> None:
    s = Session()
    s.add_model("m", FakeLoaded())
    assert s.browsable_layers() == ["conv1", "conv2"]
    s.select_layer("conv1")
    assert s.next_layer(+1) == "conv2"
    assert s.next_layer(+1) == "conv1"  # wraps
    assert s.next_layer(-1) == "conv2"


def test_class_index_validated_against_model() -> None:
    s = Session()
    s.add_model("m", FakeLoaded())
    s.class_index = 0
    with pytest.raises(SessionError, match="out of range"):
        s.class_index = 2


def test_a_multi_label_model_explains_its_most_probable_class_until_one_is_picked() -> None:
    """Issue 13: Grad-CAM's class defaults to the most probable for multi-label models; a pick stays."""
    s = Session()
    s.add_model("m", FakeLoaded(class_names=["a", "b", "c", "d"], multi_label=True))
    assert s.class_index == 1  # before any prediction: the default
    s.set_forward("m", SimpleNamespace(activations={}, probabilities=np.array([0.1, 0.2, 0.9, 0.3])))
    assert s.class_index == 2
    s.class_index = 3  # the user's pick survives the next image's prediction
    s.set_forward("m", SimpleNamespace(activations={}, probabilities=np.array([0.9, 0.2, 0.1, 0.3])))
    assert s.class_index == 3
    s.add_model("m", FakeLoaded(class_names=["a", "b", "c", "d"], multi_label=True))  # reloaded: defaults again
    s.set_forward("m", SimpleNamespace(activations={}, probabilities=np.array([0.9, 0.2, 0.1, 0.3])))
    assert s.class_index == 0
    t = Session()  # a softmax classifier keeps the abnormal class, whatever it predicts
    t.add_model("m", FakeLoaded())
    t.set_forward("m", SimpleNamespace(activations={}, probabilities=np.array([0.8, 0.2])))
    assert t.class_index == 1


def test_new_image_clears_derived_state() -> None:
    s = Session()
    s.add_model("m", FakeLoaded())
    r1 = Radiograph.from_array(np.zeros((8, 8), np.uint8), path="/x/a.png")
    s.set_image(r1)
    pre = SimpleNamespace(geometry=None, spec=PreprocessSpec())
    s.set_preprocessed(pre)
    s.set_forward("m", SimpleNamespace(activations={}))
    s.region = SimpleNamespace(kind="rect", points=[(0, 0), (3, 3)])
    rec = Recorder(s)
    s.set_image(Radiograph.from_array(np.ones((8, 8), np.uint8)))
    assert s.preprocessed is None and s.forward is None and s.region is None
    assert s.cached_forward("m") is None
    assert set(rec.names()) == {"forward", "region", "preprocessed", "radiograph"}
    with pytest.raises(SessionError):
        s.set_image("not an image")


def test_effective_spec_and_render_settings() -> None:
    s = Session()
    assert s.effective_spec() == PreprocessSpec()
    s.spec = {"segmentation": "none", "input_size": 64}
    assert s.effective_spec().input_size == 64  # no model: the user's spec as it is
    s.spec = None
    s.add_model("m", FakeLoaded())
    assert s.effective_spec() == PreprocessSpec.preset("fast")
    s.spec = {"segmentation": "none", "input_size": 64}  # the one rule (the one the app computes with):
    fast = PreprocessSpec.preset("fast")  # the Pipeline dock's keys on top of the model's, not its input size
    assert s.effective_spec() == fast.replace(segmentation="none") and s.effective_spec("m") == s.effective_spec()
    s.set_image(Radiograph.from_array(np.zeros((8, 8), np.uint8), path="/x/a.png"))
    s.threshold, s.opacity, s.colormap, s.method = 0.3, 0.8, "inferno", "gradcam"
    s.region = SimpleNamespace(kind="rect", points=np.array([[1, 2], [5, 6]]))
    d = s.render_settings()
    assert d["image_path"] == "/x/a.png" and d["checkpoint_sha256"] == "ab" * 32
    assert (d["threshold"], d["opacity"], d["colormap"], d["method"]) == (0.3, 0.8, "inferno", "gradcam")
    assert d["region"] == {"kind": "rect", "points": [[1.0, 2.0], [5.0, 6.0]]}
    assert d["spec"]["input_size"] == fast.input_size and d["spec"]["segmentation"] == "none"
    assert d["layer"] in ("conv2", "relu2")


def test_model_switch_keeps_or_resets_layer_and_forward_cache() -> None:
    s = Session()
    a, b = FakeLoaded(), FakeLoaded()
    b.model.layer_names = {"conv1": "0", "relu1": "1", "fc": "6"}  # no conv2 in model b
    s.add_model("a", a)
    s.add_model("b", b)
    s.select_layer("conv2")
    fwd_a = SimpleNamespace(activations={})
    s.set_forward("a", fwd_a)
    s.current_model_id = "b"
    assert s.layer in ("conv1", "relu1") and s.forward is None  # b has no conv2: its deepest conv
    s.select_layer("conv1")
    s.current_model_id = "a"
    assert s.layer == "conv1" and s.forward is fwd_a  # a has conv1 too: kept; its cache restored


def test_render_settings_use_the_shown_heatmap() -> None:
    s = Session()
    s.add_model("m", FakeLoaded())
    s.channel = 3
    assert s.render_settings()["channel"] == 3
    got: list = []
    s.events.heatmap.connect(got.append)
    hm = SimpleNamespace(channel=None, map_original=np.zeros((4, 4), np.float32))
    s.set_heatmap(hm)
    assert got == [hm] and s.render_settings()["channel"] is None  # Grad-CAM: no channel
