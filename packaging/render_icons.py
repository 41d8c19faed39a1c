"""Render the hand-drawn SVG app icon to the PNG sizes (and .ico / .icns) the bundles need.

    python packaging/render_icons.py            # writes resources/icons/cxr-studio-<N>.png and .ico
    python packaging/render_icons.py --icns     # ... and the macOS .icns (for a Mac build)
    python packaging/render_icons.py --check    # exit 1 when a rendered icon is missing or stale

Uses PySide6's QSvgRenderer on an offscreen QGuiApplication (no display needed). Every file is
written to a temporary name and moved into place, so an interrupted run leaves no half-written icon.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ICON_DIR = Path(__file__).resolve().parents[1] / "resources" / "icons"
SVG_NAME = "cxr-studio.svg"
SIZES = (16, 24, 32, 48, 64, 128, 256)


def png_name(size: int) -> str:
    """File name of the PNG rendering at ``size`` x ``size`` pixels."""
    return f"cxr-studio-{size}.png"


def _atomic_target(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    return Path(tmp)


def render_png(svg: Path, size: int, out: Path) -> None:
    """Render ``svg`` into a square transparent PNG of ``size`` pixels (atomic write)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QRectF, Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication(["render_icons"])  # noqa: F841 - keeps Qt alive
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise ValueError(f"{svg} is not an SVG file Qt can render.")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter, QRectF(0, 0, size, size))
    painter.end()
    tmp = _atomic_target(out)
    try:
        if not image.save(str(tmp), "PNG"):
            raise OSError(f"Qt could not write {out}.")
        tmp.chmod(0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def write_platform_icons(icon_dir: Path, icns: bool = False) -> list[Path]:
    """Windows .ico (and, when asked, macOS .icns: 0.5 MB, so made at build time on a Mac) from the
    256-pixel PNG with Pillow (atomic writes)."""
    from PIL import Image

    big = Image.open(icon_dir / png_name(256)).convert("RGBA")
    written = []
    formats = [(".ico", {"sizes": [(s, s) for s in SIZES]})] + ([(".icns", {})] if icns else [])
    for suffix, kwargs in formats:
        out = icon_dir / f"cxr-studio{suffix}"
        tmp = _atomic_target(out)
        try:
            big.save(tmp, format=suffix[1:].upper(), **kwargs)
            tmp.chmod(0o644)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(out)
    return written


def stale_icons(icon_dir: Path = ICON_DIR) -> list[str]:
    """Rendered icons that are missing or older than the SVG they come from."""
    svg = icon_dir / SVG_NAME
    problems = []
    for name in [png_name(s) for s in SIZES] + ["cxr-studio.ico"]:
        p = icon_dir / name
        if not p.exists():
            problems.append(f"{p} is missing")
        elif p.stat().st_mtime + 1 < svg.stat().st_mtime:
            problems.append(f"{p} is older than {svg.name}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that the rendered icons are there and fresh")
    ap.add_argument("--icns", action="store_true", help="also write the macOS cxr-studio.icns")
    ap.add_argument("--icon-dir", type=Path, default=ICON_DIR)
    args = ap.parse_args(argv)
    if args.check:
        problems = stale_icons(args.icon_dir)
        for p in problems:
            print(f"render_icons: {p}", file=sys.stderr)
        return 1 if problems else 0
    svg = args.icon_dir / SVG_NAME
    for size in SIZES:
        render_png(svg, size, args.icon_dir / png_name(size))
    written = write_platform_icons(args.icon_dir, icns=args.icns)
    print(f"rendered {len(SIZES)} PNG sizes and {', '.join(p.name for p in written)} into {args.icon_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
