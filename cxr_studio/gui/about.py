"""About dialog: versions of the stack and the compute device."""
from __future__ import annotations

import platform
from typing import Any

from PySide6.QtWidgets import QMessageBox, QWidget


def about_text(device: Any = None) -> str:
    """HTML with the versions of CXR Studio and its main dependencies, and the device."""
    import numpy
    import pyqtgraph
    import PySide6

    import cxr_studio

    rows = [("CXR Studio", cxr_studio.__version__), ("Python", platform.python_version()),
            ("PySide6", PySide6.__version__), ("pyqtgraph", pyqtgraph.__version__), ("NumPy", numpy.__version__)]
    try:
        import torch

        rows.append(("PyTorch", torch.__version__))
    except ImportError:
        pass
    dev = "unknown"
    if device is not None:
        try:
            from cxr_studio.core.runtime.engine import describe_device

            d = describe_device(device)
            dev = f"{d.get('name', device)} ({d.get('kind', '')})"
        except Exception:  # noqa: BLE001 - informative only
            dev = str(device)
    rows.append(("Device", dev))
    table = "".join(f"<tr><td>{k}</td><td>&nbsp;{v}</td></tr>" for k, v in rows)
    return ("<h3>CXR Studio</h3><p>Reproduces <i>Visualizing abnormalities in chest radiographs through "
            "salient network activations in Deep Learning</i> (NLM, IEEE LSC 2017).</p>"
            f"<table>{table}</table>")


def show_about(parent: QWidget | None, device: Any = None) -> QMessageBox:
    box = QMessageBox(parent)
    box.setWindowTitle("About CXR Studio")
    box.setText(about_text(device))
    box.open()
    return box
