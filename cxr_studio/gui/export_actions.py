"""Export actions of the main window: the shown overlay (PNG + NPY + JSON via core.export), the
compare figure, the channel grid, the filter mosaic, and "Export folder…" (the batch exporter in the
worker with a progress dialog). A mixin of `MainWindow` (uses its session, controller, bridge)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QProgressDialog

from . import jobs


class ExportActions:
    """Mixed into `MainWindow`."""

    def export_overlay(self, stem: str | Path, overwrite: bool = False, on_done: Any = None) -> None:
        """Write the shown overlay as PNG + NPY + JSON (in the worker)."""
        s, hv = self.session, self.controller.last_heatmap
        if s.radiograph is None or hv is None or s.preprocessed is None:
            self.show_error("Nothing to export yet: open an image and wait for the heatmap.")
            return
        settings = s.render_settings()
        settings.update({"layer": hv.layer, "channel": hv.channel, "method": hv.method, "model_id": hv.model_id})

        def done(res: Any) -> None:
            self.statusBar().showMessage(f"Exported {res.png.name}, {res.npy.name}, {res.json.name}", 8000)
            if on_done:
                on_done(res)

        self.bridge.submit("exporting", jobs.export_overlay, str(stem), s.radiograph.pixels, hv.map_input,
                           s.preprocessed.geometry, settings, overwrite, on_result=done, on_error=self.show_error)

    def ask_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export overlay", self.settings.last_dir, "PNG + NPY + JSON (*.png)")
        if path:
            self.export_overlay(path, overwrite=True)  # the dialog already asked about overwriting

    def save_image(self, what: str, path: str | Path) -> Path | None:
        """Write the compare figure, the channel grid or the conv1 mosaic as a PNG."""
        try:
            if what == "compare":
                img = self.compare_dock.figure()
            elif what == "grid":
                m = self.channels_dock.model
                if m.thumbs is None:
                    raise ValueError("No channel grid yet: open an image with a model and pick a conv layer.")
                img = jobs.channel_grid_image(m.thumbs, m.order)
            else:
                if self.mosaic_dock.conv1 is None:
                    raise ValueError("No filter mosaic yet: load a model first.")
                img = (np.clip(self.mosaic_dock.conv1, 0, 1) * 255).round().astype(np.uint8)
            out = jobs.write_rgb_png(path, img)
        except (ValueError, OSError) as e:
            self.show_error(str(e))
            return None
        self.statusBar().showMessage(f"Saved {out}", 8000)
        return out

    def ask_save_image(self, what: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Export {what}", self.settings.last_dir, "PNG (*.png)")
        if path:
            self.save_image(what, path if path.lower().endswith(".png") else path + ".png")

    def ask_export_folder(self) -> None:
        loaded = self.session.current_model
        if loaded is None or not getattr(loaded, "path", None):
            self.show_error("Load a checkpoint first: the folder export runs it on every image.")
            return
        src = QFileDialog.getExistingDirectory(self, "Folder of radiographs", self.settings.last_dir)
        if not src:
            return
        out = QFileDialog.getExistingDirectory(self, "Output folder", src)
        if out:
            self.export_folder(src, out)

    def export_folder(self, src: str, out: str, on_done: Any = None) -> None:
        """Run the batch exporter (`cxr-studio export`) on a folder in the worker, with a progress
        dialog (progress = exports written so far / images in the folder)."""
        from PySide6.QtCore import QTimer

        from cxr_studio.batch import main as batch_main
        from cxr_studio.core.io import list_images

        s = self.session
        n = max(1, len(list_images(src)))
        argv = ["--checkpoint", str(s.current_model.path), "--out", str(out), "--method", s.method,
                "--threshold", str(s.threshold), "--opacity", str(s.opacity), "--colormap", s.colormap,
                "--scale", s.scale, "--ranking", s.ranking if s.ranking in ("max", "mean", "lungs") else "max",
                "--no-progress"]
        if s.layer:
            argv += ["--layer", s.layer]
        argv.append(str(src))
        dlg = QProgressDialog(f"Exporting {n} image(s) from {Path(src).name}…", "", 0, n, self)
        dlg.setCancelButton(None)
        dlg.setWindowModality(Qt.WindowModality.WindowModal)
        dlg.setMinimumDuration(0)
        dlg.show()
        self.folder_dialog = dlg
        timer = QTimer(self)
        timer.timeout.connect(lambda: dlg.setValue(min(n, len(list(Path(out).glob("*.json"))))))
        timer.start(250)

        def finish() -> None:
            timer.stop()
            dlg.close()

        def done(code: int) -> None:
            finish()
            if code == 0:
                self.statusBar().showMessage(f"Folder exported to {out}", 10000)
            else:
                self.show_error(f"Some images could not be exported (exit code {code}); see "
                                f"{Path(out) / 'summary.csv'} and the log.")
            if on_done:
                on_done(code)

        def failed(msg: str) -> None:
            finish()
            self.show_error(f"The folder export failed: {msg}")

        self.bridge.submit("exporting folder", batch_main, argv, on_result=done, on_error=failed)

