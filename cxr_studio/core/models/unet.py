"""`lung_unet`: a compact U-Net for lung-field segmentation (grayscale 256x256 in, 1 logit map out).

Four down-sampling levels, two 3x3 conv + BatchNorm + ReLU per level, bilinear up-sampling with skip
connections. ``base=16`` gives about 1.9M parameters (3.7 MB stored as float16).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cxr_studio.core.imaging.spec import PreprocessSpec
from cxr_studio.core.models.registry import register

SEGMENTER_SPEC = PreprocessSpec(
    segmentation="none",
    crop=False,
    intermediate_size=256,
    clahe=True,
    input_size=256,
    channels=1,
    normalization="center",
)


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.conv = DoubleConv(cin + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


class LungUNet(nn.Module):
    def __init__(self, base: int = 16, depth: int = 4, in_channels: int = 1) -> None:
        super().__init__()
        if depth < 1 or base < 1:
            raise ValueError("lung_unet needs depth >= 1 and base >= 1")
        chans = [base * 2**i for i in range(depth + 1)]
        self.enc = nn.ModuleList([DoubleConv(in_channels, chans[0])])
        for i in range(1, depth + 1):
            self.enc.append(DoubleConv(chans[i - 1], chans[i]))
        self.dec = nn.ModuleList(
            [Up(chans[i + 1] if i == depth - 1 else chans[i + 1], chans[i], chans[i]) for i in reversed(range(depth))]
        )
        self.head = nn.Conv2d(chans[0], 1, 1)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up in self.dec:
            x = up(x, skips.pop())
        return self.head(x)


@register("lung_unet", family="segmentation")
def lung_unet(base: int = 16, depth: int = 4) -> nn.Module:
    """Compact U-Net lung segmenter (grayscale in, lung logit map out)."""
    model = LungUNet(base=base, depth=depth)
    names = {f"enc{i + 1}": f"enc.{i}" for i in range(depth)}
    names["bottleneck"] = f"enc.{depth}"
    names.update({f"dec{depth - j}": f"dec.{j}" for j in range(depth)})
    names["head"] = "head"
    model.layer_names = names
    model.new_layers = list(names)
    model.default_preprocess = SEGMENTER_SPEC.to_dict()
    model.class_names = ["background", "lung"]
    return model
