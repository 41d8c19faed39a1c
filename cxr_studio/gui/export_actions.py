"""Export actions of the main window: the shown overlay (PNG + NPY + JSON via core.export), the
compare figure, the channel grid, the filter mosaic, and "Export folder…" (the batch exporter in the
worker with a progress dialog). A mixin of `MainWindow` (uses its session, controller, bridge)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QProgressDialog

from . import jobs


def _safe(text: str) -> str:
    """A file-name part: letters, digits, "_", "-" and ".", the rest as "-"."""
    out = re.sub(r"[^A-Za-z0-9._+-]+", "-", str(text)).strip("-.")
    return out or "image"


class ExportActions:
    """Mixed into `MainWindow`."""

    def suggested_name(self, what: str = "overlay") -> Path:
        """``<image>_<layer>_<method>[_<channel>].png`` (or ``<image>_<what>.png`` for figures) in
        the folder last exported to."""
        s, hv = self.session, self.controller.last_heatmap
        stem = self.image_path.stem if self.image_path is not None else self.windowTitle().split("—")[-1].strip()
        parts = [_safe(stem)]
        if what == "overlay" and hv is not None:
            parts += [_safe(hv.layer), _safe(hv.method)] + ([str(hv.channel)] if hv.channel is not None else [])
        elif what == "grid" and s.layer:
            parts += [_safe(s.layer), "grid"]
        else:
            parts.append(_safe(what))
        return Path(self.settings.last_export_dir) / ("_".join(parts) + ".png")

    def _remember_export_dir(self, path: str | Path) -> None:
        self.settings.last_export_dir = str(Path(path).parent)

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
        path, _ = QFileDialog.getSaveFileName(self, "Export overlay", str(self.suggested_name()),
                                              "PNG + NPY + JSON (*.png)")
        if path:
            self._remember_export_dir(path)
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
        path, _ = QFileDialog.getSaveFileName(self, f"Export {what}", str(self.suggested_name(what)), "PNG (*.png)")
        if path:
            self._remember_export_dir(path)
            self.save_image(what, path if path.lower().endswith(".png") else path + ".png")

    def ask_export_folder(self) -> None:
        loaded = self.session.current_model
        if loaded is None or not getattr(loaded, "path", None):
            self.show_error("Load a checkpoint first: the folder export runs it on every image.")
            return
        src = QFileDialog.getExistingDirectory(self, "Folder of radiographs", self.settings.last_dir)
        if not src:
            return
        out = QFileDialog.getExistingDirectory(self, "Output folder", self.settings.last_export_dir)
        if out:
            self.settings.last_export_dir = out
            self.export_folder(src, out)

    def export_folder(self, src: str, out: str, on_done: Any = None) -> None:
        """Run the batch exporter (`cxr-studio export`) on a folder in the worker, with a progress
        dialog (real progress from the exporter) whose Cancel stops after the current image."""
        from cxr_studio.batch import main as batch_main
        from cxr_studio.core.imaging.io import list_images

        s = self.session
        n = max(1, len(list_images(src)))
        argv = ["--checkpoint", str(s.current_model.path), "--out", str(out), "--method", s.method,
                "--threshold", str(s.threshold), "--opacity", str(s.opacity), "--colormap", s.colormap,
                "--scale", s.scale, "--ranking", s.ranking if s.ranking in ("max", "mean", "lungs") else "max",
                "--no-progress"]
        if s.layer:
            argv += ["--layer", s.layer]
        argv.append(str(src))
        dlg = QProgressDialog(f"Exporting {n} image(s) from {Path(src).name}…", "Cancel", 0, 1000, self)
        dlg.setWindowModality(Qt.WindowModality.WindowModal)
        dlg.setMinimumDuration(0)
        dlg.setAutoClose(False)
        dlg.setAutoReset(False)
        dlg.show()
        self.folder_dialog = dlg
        label = "exporting folder"

        def progressed(what: str, fraction: float, message: str) -> None:
            if what == label:
                dlg.setValue(int(round(fraction * 1000)))
                if message:
                    dlg.setLabelText(message)

        self.bridge.progress.connect(progressed)

        def finish() -> None:
            self.bridge.progress.disconnect(progressed)
            dlg.canceled.disconnect(cancel)  # closing the dialog emits canceled: not the user's Cancel
            dlg.close()

        def done(code: int) -> None:
            finish()
            if code == 0:
                self.statusBar().showMessage(f"Folder exported to {out}", 10000)
            elif cancelled["yes"]:
                self.statusBar().showMessage(f"Folder export cancelled; what was written is in {out} "
                                             f"(summary.csv lists the rest as cancelled)", 15000)
            else:
                self.show_error(f"Some images could not be exported (exit code {code}); see "
                                f"{Path(out) / 'summary.csv'} and the log.")
            if on_done:
                on_done(code)

        def failed(msg: str) -> None:
            finish()
            if msg == "cancelled":
                self.statusBar().showMessage("Folder export cancelled.", 15000)
            else:
                self.show_error(f"The folder export failed: {msg}")
            if on_done and msg == "cancelled":
                on_done(1)

        cancelled = {"yes": False}
        jid = self.bridge.submit(label, batch_main, argv, on_result=done, on_error=failed, cancellable=True)

        def cancel() -> None:
            cancelled["yes"] = True
            dlg.setLabelText("Cancelling after the current image…")
            self.bridge.cancel(jid)

        dlg.canceled.connect(cancel)
