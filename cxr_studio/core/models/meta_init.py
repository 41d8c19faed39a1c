"""Building a model on the meta device without its random initialisation (the weights come from a
file): used by the fit checks (fitting.py) and the torchvision builder probe (torchvision_any.py)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch.nn as nn

_INITS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
          "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_")


@contextlib.contextmanager
def no_init() -> Iterator[None]:
    """``torch.nn.init`` functions do nothing inside (for builds on the meta device, where random
    initialisation is wasted work: the weights come from a file)."""
    saved = {name: getattr(nn.init, name) for name in _INITS if hasattr(nn.init, name)}
    try:
        for name in saved:
            setattr(nn.init, name, lambda tensor, *a, **k: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)
