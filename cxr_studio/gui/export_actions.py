"""Export actions of the main window: the shown overlay (PNG + NPY + JSON via core.export), the
compare figure, the channel grid, the filter mosaic, and "Export folder…" (`batch.run`, the
batch exporter's API, in the worker with a progress dialog). A mixin of `MainWindow` (uses its
session, controller, bridge)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QProgressBar, QProgressDialog

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
        s, hv = self.session, self.session.heatmap
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
        s, hv = self.session, self.session.heatmap
        if s.radiograph is None or hv is None or s.preprocessed is None:
            self.show_error("Nothing to export yet: open an image and wait for the heatmap.")
            return
        settings = s.render_settings(hv)  # the heatmap exported: its model, layer, channel and method

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
        if self.session.current_model is None:
            self.show_error("Load a model first: the folder export runs it on every image.")
            return
        src = QFileDialog.getExistingDirectory(self, "Folder of radiographs", self.settings.last_dir)
        if not src:
            return
        out = QFileDialog.getExistingDirectory(self, "Output folder", self.settings.last_export_dir)
        if out:
            self.settings.last_export_dir = out
            self.export_folder(src, out)

    def folder_options(self, out: str) -> Any:
        """The folder export's `ExportOptions` from the current view: its model (the one shown, not
        loaded again), layer, method, colormap, threshold, opacity, scale and ranking; each image's
        strongest channel."""
        from cxr_studio.batch import RANKINGS, ExportOptions

        s = self.session
        loaded = s.current_model
        path = getattr(loaded, "path", None)
        return ExportOptions(out=str(out), loaded=loaded, checkpoint=str(path) if path else None, layer=s.layer,
                             method=s.method, threshold=s.threshold, opacity=s.opacity, colormap=s.colormap,
                             scale=s.scale, ranking=s.ranking if s.ranking in RANKINGS else "max")

    def export_folder(self, src: str, out: str, on_done: Any = None) -> None:
        """Export every image of a folder (`batch.run`, what `cxr-studio export` runs) in the worker,
        with a progress dialog counting the images done; its Cancel stops after the current image
        (summary.csv still lists every image). ``on_done(exit_code)`` as the command line's."""
        from cxr_studio.batch import run
        from cxr_studio.core.imaging.io import list_images

        if self.session.current_model is None:
            self.show_error("Load a model first: the folder export runs it on every image.")
            return
        try:
            n = len(list_images(src))
        except ValueError as e:  # not a folder (any more)
            self.show_error(str(e))
            return
        options = self.folder_options(out)
        dlg = QProgressDialog(f"Exporting {n} image(s) from {Path(src).name}…", "Cancel", 0, max(1, n), self)
        bar = QProgressBar(dlg)
        bar.setFormat("%v of %m images")
        dlg.setBar(bar)
        dlg.setRange(0, max(1, n))  # after setBar: the new bar starts at 0..100
        dlg.setWindowModality(Qt.WindowModality.WindowModal)
        dlg.setMinimumDuration(0)
        dlg.setAutoClose(False)
        dlg.setAutoReset(False)
        dlg.setValue(0)
        dlg.show()
        self.folder_dialog = dlg
        label = "exporting folder"
        cancelled = {"yes": False}

        def progressed(what: str, fraction: float, message: str) -> None:
            if what == label:
                dlg.setValue(int(round(fraction * dlg.maximum())))
                if message and not cancelled["yes"]:
                    dlg.setLabelText(message)

        self.bridge.progress.connect(progressed)

        def finish() -> None:
            self.bridge.progress.disconnect(progressed)
            dlg.canceled.disconnect(cancel)  # closing the dialog emits canceled: not the user's Cancel
            dlg.close()

        def done(result: Any) -> None:
            finish()
            where = result.summary or Path(out) / "summary.csv"
            if result.exit_code == 0:
                self.statusBar().showMessage(f"Exported {result.exported} image(s) to {out}", 10000)
            elif result.cancelled and not result.failures:
                self.statusBar().showMessage(f"Folder export cancelled after {result.exported} of {result.total} "
                                             f"image(s); they are in {out} ({Path(where).name} lists the rest "
                                             "as cancelled)", 15000)
            elif result.summary is None:
                self.show_error(f"The folder export's {result.summary_error}")
            else:
                first = "; ".join(f"{Path(f).name}: {m}" for f, m in result.failures[:3])
                more = f" and {result.failed - 3} more" if result.failed > 3 else ""
                self.show_error(f"{result.failed} of {result.total} image(s) could not be exported ({first}{more}); "
                                f"see {where}.")
            if on_done:
                on_done(result.exit_code)

        def failed(msg: str) -> None:
            finish()
            if msg == "cancelled":
                self.statusBar().showMessage("Folder export cancelled.", 15000)
                if on_done:
                    on_done(1)
            else:
                self.show_error(f"The folder export failed: {msg}")

        jid = self.bridge.submit(label, run, [str(src)], options, on_result=done, on_error=failed, cancellable=True)

        def cancel() -> None:
            cancelled["yes"] = True
            dlg.setLabelText("Cancelling after the current image…")
            self.bridge.cancel(jid)
            if jid not in self.bridge.cancellable():  # it had not started: nothing will report back
                failed("cancelled")

        dlg.canceled.connect(cancel)
