"""The one list of heatmap methods, by name, and of map scalings and channel rankings (no torch import:
command lines and the GUI read it at start).

``SALIENCY_METHODS`` are computed by ``saliency_methods.saliency_map``; ``HEATMAP_METHODS`` adds the
paper's ``activation`` (one channel of a layer) and is what the app, ``cxr-studio export --method`` and
the session accept. ``LABELS`` are the names people read; ``SLOW_METHODS`` need many forward passes.
"""
from __future__ import annotations

SALIENCY_METHODS: tuple[str, ...] = (
    "channel-max", "channel-lungs", "gradcam", "gradcam++", "hirescam", "scorecam", "layercam", "eigencam",
    "occlusion", "integrated-gradients",
)
HEATMAP_METHODS: tuple[str, ...] = ("activation", *SALIENCY_METHODS)
SLOW_METHODS: tuple[str, ...] = ("scorecam", "occlusion", "integrated-gradients")
SCALES: tuple[str, ...] = ("channel", "layer")  # a channel's map min-max per channel, or by the layer's range
RANKINGS: tuple[str, ...] = ("max", "mean", "lungs", "region")  # how channels are ordered ("strongest" first)
LABELS: dict[str, str] = {
    "activation": "Channel activation",
    "channel-max": "Strongest channel (max)",
    "channel-lungs": "Strongest channel (mean in lungs)",
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "hirescam": "HiResCAM",
    "scorecam": "Score-CAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "occlusion": "Occlusion",
    "integrated-gradients": "Integrated gradients",
}
