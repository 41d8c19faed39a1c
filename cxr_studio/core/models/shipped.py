"""The models that ship with CXR Studio, described from their own checkpoints' metadata.

A shipped model is a CXR Studio checkpoint in the resources' ``models/`` folder (the lung segmenter
excepted). What the app shows about it (name, what it was trained on, its measured test AUC, its
operating threshold) is read from the file's provenance, never written a second time in code.

``kind`` tells which images a model is meant for: ``"radiographs"`` (trained on real chest X-rays) or
``"phantoms"`` (the demo model). ``default_model_for_radiographs()`` is the model a real radiograph opens
with when the user names none: ``models/cxrnet-tb.pt``, or else the only shipped model of kind
``"radiographs"``; when there is none, or several and no TB model, there is no default and callers say
which models ship.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxr_studio.core.resources import DEMO_MODEL, LUNG_SEGMENTER, TB_MODEL, resource_dirs

__all__ = ["ShippedModel", "shipped_models", "default_shipped_model", "default_model_for_radiographs", "describe_shipped",
           "operating_threshold", "predicted_class", "no_default_message", "TB_MODEL", "DEMO_MODEL"]


@dataclass(frozen=True)
class ShippedModel:
    path: Path
    name: str  # short title shown in lists
    kind: str  # "radiographs" | "phantoms"
    trained_on: str
    test_auc: float | None  # pooled held-out AUC as stored in the file
    threshold: float | None  # operating threshold for the positive class

    def label(self) -> str:
        auc = f", test AUC {self.test_auc:.3f}" if self.test_auc is not None else ""
        return f"{self.name} — trained on {self.trained_on}{auc}"

    def short_label(self) -> str:
        """The list entry: what tells the models apart first (the AUC before the kind, which a narrow
        dock elides; a title's closing parenthesis, such as the architecture, is left to ``label``). Three
        decimals, as ``label``: the shipped pair's AUCs differ in the third (0.902 and 0.900)."""
        auc = f" · AUC {self.test_auc:.3f}" if self.test_auc is not None else ""
        name = self.name
        if name.endswith(")") and " (" in name:
            name = name[: name.rindex(" (")]
        return f"{name}{auc} · {self.kind}"


def operating_threshold(provenance: Any) -> float | None:
    """The operating threshold a checkpoint's provenance declares (``operating_point.threshold``), or None."""
    if not isinstance(provenance, dict):
        return None
    op = provenance.get("operating_point")
    if isinstance(op, dict) and isinstance(op.get("threshold"), (int, float)):
        t = float(op["threshold"])
        return t if 0.0 < t < 1.0 else None
    return None


def predicted_class(probabilities: Any, threshold: float | None, multi_label: bool = False) -> int | None:
    """The class a prediction calls: for two softmax classes with an operating threshold, class 1 when
    its probability reaches the threshold (as the app's verdict and the cohort table read it), else
    the most probable class; None without probabilities."""
    probs = [float(p) for p in probabilities]
    if not probs:
        return None
    if threshold is not None and len(probs) == 2 and not multi_label:
        return int(probs[1] >= threshold)
    return max(range(len(probs)), key=probs.__getitem__)


def _pooled_auc(provenance: dict) -> float | None:
    tm = provenance.get("test_metrics")
    if isinstance(tm, dict):
        pooled = tm.get("pooled")
        if isinstance(pooled, dict) and isinstance(pooled.get("auc"), (int, float)):
            return float(pooled["auc"])
    return None


def describe_shipped(path: Path, meta: dict) -> ShippedModel:
    """A ShippedModel from a checkpoint's metadata (``peek_checkpoint``'s dict)."""
    prov = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
    release = prov.get("release") if isinstance(prov.get("release"), dict) else {}
    kind = str(release.get("kind") or ("phantoms" if path.name == Path(DEMO_MODEL).name else "radiographs"))
    name = str(release.get("title") or path.stem)
    trained_on = str(release.get("trained_on") or ("synthetic phantoms" if kind == "phantoms" else "unknown data"))
    return ShippedModel(path=path, name=name, kind=kind, trained_on=trained_on,
                        test_auc=_pooled_auc(prov), threshold=operating_threshold(prov))


def _candidate_files() -> list[Path]:
    seen: dict[str, Path] = {}
    for d in resource_dirs():
        folder = d / "models"
        if not folder.is_dir():
            continue
        for p in sorted(folder.glob("*.pt")):
            if p.name != Path(LUNG_SEGMENTER).name and p.name not in seen:
                seen[p.name] = p
    return list(seen.values())


# (path, size, mtime) -> description: reading a checkpoint's metadata loads the whole file, and the
# app asks several times at start (welcome page, Models dock, the first image's default model)
_described: dict[tuple[str, int, int], ShippedModel] = {}


def _describe_file(p: Path) -> ShippedModel:
    # torch-free at import: the GUI's docks and batch read thresholds and names from this module
    from cxr_studio.core.models.checkpoint import peek_checkpoint

    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _described:
        _described[key] = describe_shipped(p, peek_checkpoint(p))
    return _described[key]


def shipped_models() -> list[ShippedModel]:
    """Every shipped classifier, models for real radiographs first, then by name."""
    from cxr_studio.core.models.checkpoint import CheckpointError

    out = []
    for p in _candidate_files():
        try:
            out.append(_describe_file(p))
        except (CheckpointError, OSError):
            continue  # an unreadable file in the resources is reported by bundle_check, not here
    return sorted(out, key=lambda m: (m.kind != "radiographs", m.name))


def default_shipped_model() -> ShippedModel | None:
    """The shipped model for real radiographs: the TB model (``models/cxrnet-tb.pt``) when it ships, else
    the only model for radiographs (None when none, or several and none of them is the TB model; the
    others, such as the unguided twin kept for comparison, are there to be picked by name)."""
    real = [m for m in shipped_models() if m.kind == "radiographs"]
    main = [m for m in real if m.path.name == Path(TB_MODEL).name]
    if main:
        return main[0]
    return real[0] if len(real) == 1 else None


def default_model_for_radiographs() -> Path | None:
    """The path of ``default_shipped_model()``."""
    m = default_shipped_model()
    return m.path if m is not None else None


def no_default_message() -> str:
    """One sentence for a command that needs a model when the user named none and none is the default."""
    models = shipped_models()
    if not models:
        return "Name a model with --checkpoint FILE (no models ship with this installation)."
    listed = "; ".join(f"{m.path} ({m.name}, for {m.kind})" for m in models)
    return f"Name a model with --checkpoint FILE; the shipped models are: {listed}."
