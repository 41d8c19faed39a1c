"""The main window's menus: File, View, Inspect, Navigate, Help.

Each action calls the window (or its controller and docks); nothing here holds state.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtGui import QAction, QKeySequence

from . import layout
from .sanity_dialog import run_sanity_check


def action(window: Any, menu: Any, text: str, slot: Any, shortcut: Any = None, checkable: bool = False) -> QAction:
    a = QAction(text, window)
    if shortcut is not None:
        a.setShortcut(QKeySequence(shortcut))
    a.setCheckable(checkable)
    a.triggered.connect(slot)
    menu.addAction(a)
    return a


def build(w: Any) -> None:
    mb = w.menuBar()
    f = mb.addMenu("&File")
    action(w, f, "&Open image…", w.ask_open, QKeySequence.StandardKey.Open)
    action(w, f, "Open &demo", lambda: w.open_demo())
    w.recent_menu = f.addMenu("Open &recent")
    action(w, f, "&Next image in folder", lambda: w.step_image(1), "Ctrl+Right")
    action(w, f, "&Previous image in folder", lambda: w.step_image(-1), "Ctrl+Left")
    f.addSeparator()
    action(w, f, "&Load checkpoint…", w.models_dock.ask_load, "Ctrl+L")
    f.addSeparator()
    action(w, f, "&Export overlay (PNG + NPY + JSON)…", w.ask_export, "Ctrl+E")
    action(w, f, "Export &compare figure…", lambda: w.ask_save_image("compare"))
    action(w, f, "Export channel &grid…", lambda: w.ask_save_image("grid"))
    action(w, f, "Export filter &mosaic…", lambda: w.ask_save_image("mosaic"))
    action(w, f, "Export &folder…", w.ask_export_folder)
    f.addSeparator()
    action(w, f, "&Quit", w.close, QKeySequence.StandardKey.Quit)
    v = mb.addMenu("&View")
    action(w, v, "&Fit to window", w.view.fit, "Ctrl+0")
    action(w, v, "&Compare models", lambda: layout.show_bottom(w, w.compare_dock), "Ctrl+K")
    action(w, v, "C&ohort…", lambda: layout.show_bottom(w, w.cohort_dock), "Ctrl+Shift+K")
    action(w, v, "&Reset layout", lambda: layout.arrange(w))
    w.outline_action = action(w, v, "Lung &outline", lambda on: setattr(w.session, "show_lung_outline", on), "O", True)
    w.lesion_action = action(w, v, "L&esion outline", lambda on: setattr(w.session, "show_lesion_outline", on),
                             "L", True)
    w.light_action = action(w, v, "&Light theme", w._toggle_theme, None, True)
    v.addSeparator()
    for d in w.docks:
        v.addAction(d.toggleViewAction())
    i = mb.addMenu("&Inspect")
    w.sanity_action = action(w, i, "&Sanity check (randomised model)…", lambda: run_sanity_check(w), "Ctrl+R")
    n = mb.addMenu("&Navigate")
    action(w, n, "Next channel", lambda: w._step_channel(1), "]")
    action(w, n, "Previous channel", lambda: w._step_channel(-1), "[")
    action(w, n, "Next layer", lambda: w._step_layer(1), "Ctrl+PgDown")
    action(w, n, "Previous layer", lambda: w._step_layer(-1), "Ctrl+PgUp")
    action(w, n, "&Strongest channel", w.controller.strongest, "S")
    h = mb.addMenu("&Help")
    action(w, h, "&About", w.show_about)
    w._fill_recent()
