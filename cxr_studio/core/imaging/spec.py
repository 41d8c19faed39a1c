"""`PreprocessSpec`: the plain value describing a model's preprocessing (it travels inside
checkpoints), with the segmentation methods and input normalisations it can name.

Its own module, imported by models, checkpoints and the pipeline alike, so that describing a model's
input never imports the pipeline (which segments lungs, which loads the U-Net checkpoint, which
describes its own input: the cycle issue 15 removed). ``core.pipeline`` re-exports it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

SEGMENTATION_METHODS = ("auto", "unet", "atlas", "heuristic", "none")
NORMALIZATIONS = {
    # name: (mean, std) applied per channel after scaling to 0..1
    "none": (0.0, 1.0),
    "center": (0.5, 0.5),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "xrv": (0.5, 1.0 / 2048.0),  # TorchXRayVision: 0..1 -> [-1024, 1024]
}


@dataclass
class PreprocessSpec:
    """Every setting of the pipeline, as plain values (stored in checkpoints and export sidecars)."""

    segmentation: str = "auto"
    atlas_dir: str | None = None
    crop: bool = True
    crop_margin: float = 0.05  # fraction of the lung bounding box added on each side
    blank_outside: bool = False  # set pixels outside the lung mask to 0 inside the crop
    intermediate_size: int = 1024  # the paper resizes the lung ROI to 1024x1024
    clahe: bool = True
    clahe_clip: float = 2.0  # OpenCV clipLimit
    clahe_tiles: int = 8  # tiles per side
    input_size: int = 227  # 227 for the paper's CNN, 224 for torchvision nets
    channels: int = 3  # grayscale replicated to this many channels (1 or 3)
    normalization: str = "none"  # key of NORMALIZATIONS

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.segmentation not in SEGMENTATION_METHODS:
            raise ValueError(
                f"Unknown segmentation method {self.segmentation!r}; choose one of {SEGMENTATION_METHODS}"
            )
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"Unknown normalization {self.normalization!r}; choose one of {tuple(NORMALIZATIONS)}"
            )
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if not (8 <= int(self.input_size) <= 4096):
            raise ValueError(f"input_size must be between 8 and 4096, got {self.input_size}")
        if not (8 <= int(self.intermediate_size) <= 8192):
            raise ValueError(f"intermediate_size must be between 8 and 8192, got {self.intermediate_size}")
        if not (0.0 <= float(self.crop_margin) <= 1.0):
            raise ValueError(f"crop_margin must be in [0, 1], got {self.crop_margin}")
        if not (0.0 < float(self.clahe_clip) <= 100.0):
            raise ValueError(f"clahe_clip must be in (0, 100], got {self.clahe_clip}")
        if not (1 <= int(self.clahe_tiles) <= 64):
            raise ValueError(f"clahe_tiles must be between 1 and 64, got {self.clahe_tiles}")

    # -- plain-value round trip -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"Unknown preprocessing setting(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def replace(self, **changes: Any) -> "PreprocessSpec":
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str) -> "PreprocessSpec":
        """Named presets: ``paper`` (227, 0..1), ``torchvision`` (224, ImageNet normalisation),
        ``fast`` (no segmentation, 512 intermediate: for phantoms and quick looks)."""
        presets = {
            "paper": cls(),
            "torchvision": cls(input_size=224, normalization="imagenet"),
            "fast": cls(segmentation="none", crop=False, intermediate_size=512),
        }
        if name not in presets:
            raise ValueError(f"Unknown preprocessing preset {name!r}; choose one of {tuple(presets)}")
        return presets[name]
