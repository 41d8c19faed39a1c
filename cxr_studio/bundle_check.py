"""Start-up check that an installation (PyInstaller bundle or pip install) is complete.

``check_bundle()`` returns human-readable problems (empty when all is well): the Qt platform
plugin the app will ask for, shipped resources (demo model, lung segmenter, icons), the style
sheet, the DICOM decoders and the Python packages the app imports. ``report_missing()`` prints
them, so a broken bundle says what is missing instead of failing silently. Nothing here imports
Qt unless asked to look for Qt's plugin folder, and nothing is loaded that the app would not load.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TextIO

from .core import resources

ICON_SVG = "icons/cxr-studio.svg"
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256)
REQUIRED_MODULES = {
    "PySide6": "the window toolkit",
    "pyqtgraph": "the image view",
    "torch": "running the models",
    "torchvision": "the AlexNet / VGG models",
    "cv2": "preprocessing (CLAHE, resizing)",
    "pydicom": "reading DICOM files",
}
# Transfer syntaxes a chest radiograph archive commonly uses: JPEG baseline and JPEG 2000.
DICOM_SYNTAXES = {"1.2.840.10008.1.2.4.50": "JPEG", "1.2.840.10008.1.2.4.90": "JPEG 2000"}
_PLUGIN_PATTERN = {"win32": "q{name}.dll", "darwin": "libq{name}.dylib"}


def icon_name(size: int) -> str:
    """Resource path of the square PNG icon of ``size`` pixels."""
    return f"icons/cxr-studio-{size}.png"


def wanted_platforms() -> list[str]:
    """Qt platform plugins the app may start with; any one of them is enough."""
    env = os.environ.get("QT_QPA_PLATFORM", "").strip()
    if env:
        return [p.split(":")[0].strip() for p in env.split(";") if p.strip()]
    if sys.platform == "win32":
        return ["windows"]
    if sys.platform == "darwin":
        return ["cocoa"]
    return ["wayland", "xcb"] if os.environ.get("WAYLAND_DISPLAY") else ["xcb"]


def qt_plugin_dirs() -> list[Path]:
    """Folders where Qt looks for its ``platforms`` plugins, in Qt's order."""
    dirs: list[Path] = []
    if os.environ.get("QT_QPA_PLATFORM_PLUGIN_PATH"):
        dirs.append(Path(os.environ["QT_QPA_PLATFORM_PLUGIN_PATH"]))
    for p in os.environ.get("QT_PLUGIN_PATH", "").split(os.pathsep):
        if p:
            dirs.append(Path(p) / "platforms")
    try:
        from PySide6.QtCore import QLibraryInfo

        dirs.append(Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms")
    except ImportError:
        pass
    return dirs


def find_platform_plugin(name: str, dirs: list[Path]) -> Path | None:
    """The plugin file of Qt platform ``name`` (e.g. ``xcb`` -> ``libqxcb.so``) in ``dirs``."""
    filename = _PLUGIN_PATTERN.get(sys.platform, "libq{name}.so").format(name=name)
    for d in dirs:
        if (d / filename).is_file():
            return d / filename
    return None


def debian_package(soname: str) -> str:
    """Debian/Ubuntu package that usually ships ``soname`` (libxcb-icccm.so.4 -> libxcb-icccm4)."""
    base, _, version = soname.partition(".so.")
    if not version:
        return base
    return f"{base}-{version}" if base[-1].isdigit() else f"{base}{version.split('.')[0]}"


def missing_libraries(plugin: Path) -> list[str]:
    """Shared libraries ``plugin`` needs that the loader cannot find (Linux, via ldd); [] when
    everything resolves or when ldd is not available to ask."""
    ldd = shutil.which("ldd")
    if ldd is None or not sys.platform.startswith("linux"):
        return []
    try:
        out = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    missing = [line.split("=>")[0].strip() for line in out.splitlines() if "not found" in line]
    return sorted(set(missing))


def check_qt_platform() -> list[str]:
    """Problems with the Qt platform plugin; [] when at least one wanted platform can load."""
    wanted = wanted_platforms()
    dirs = qt_plugin_dirs()
    problems: list[str] = []
    for name in wanted:
        plugin = find_platform_plugin(name, dirs)
        if plugin is None:
            problems.append(f"The Qt platform plugin '{name}' is missing (looked in: "
                            f"{', '.join(str(d) for d in dirs) or 'no plugin folder found'}).")
            continue
        libs = missing_libraries(plugin)
        if not libs:
            return []
        problems.append(f"The Qt platform plugin '{name}' cannot load: the system libraries "
                        f"{', '.join(libs)} are missing (Debian/Ubuntu: sudo apt install "
                        f"{' '.join(debian_package(s) for s in libs)}).")
    if problems:
        problems[-1] += " The window cannot open without it."
    return problems


def check_resources() -> list[str]:
    """Shipped files that ``cxr_studio.core.resources.find_resource`` cannot find."""
    where = ", ".join(str(d) for d in resources.resource_dirs())
    problems: list[str] = []
    if resources.find_resource(resources.DEMO_MODEL) is None:
        problems.append(f"The demo model (resources/{resources.DEMO_MODEL}) is not installed: the demo will use an "
                        f"UNTRAINED network (searched: {where}).")
    if resources.find_resource(resources.LUNG_SEGMENTER) is None:
        problems.append(f"The learned lung segmenter (resources/{resources.LUNG_SEGMENTER}) is not installed: lungs "
                        f"will be found by the atlas or heuristic method.")
    icons = [ICON_SVG] + [icon_name(s) for s in ICON_SIZES]
    missing_icons = [i for i in icons if resources.find_resource(i) is None]
    if missing_icons:
        names = ", ".join(f"resources/{i}" for i in missing_icons)
        problems.append(f"App icons are missing ({names}): windows show a generic icon.")
    return problems


def check_style() -> list[str]:
    """The dark style sheet (qdarkstyle) and its files."""
    spec = importlib.util.find_spec("qdarkstyle")
    if spec is None or spec.origin is None:
        return ["The style package qdarkstyle is not installed: the app falls back to Qt's plain style."]
    qss = Path(spec.origin).parent / "dark" / "darkstyle.qss"
    if not qss.is_file():
        return [f"The dark style sheet {qss} is missing: the app falls back to Qt's plain style."]
    return []


def check_modules() -> list[str]:
    """Python packages the app imports, found without importing them."""
    problems = []
    for mod, use in REQUIRED_MODULES.items():
        try:
            found = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            problems.append(f"The Python package '{mod}' is missing: it is needed for {use}.")
    return problems


def check_imports() -> list[str]:
    """Import the packages for real (seconds, so only on request): finds a package that is present
    but broken, e.g. a torchvision whose operator library was left out of a bundle."""
    problems = []
    for mod, use in REQUIRED_MODULES.items():
        try:
            if importlib.util.find_spec(mod) is None:
                continue  # check_modules reports it
            importlib.import_module(mod)
        except Exception as e:  # noqa: BLE001 - any import failure is the problem to report
            problems.append(f"The Python package '{mod}' is installed but cannot be imported "
                            f"({type(e).__name__}: {e}): it is needed for {use}.")
    return problems


def check_dicom_decoders() -> list[str]:
    """Compressed-DICOM decoders (pylibjpeg plugins, found through their package metadata)."""
    try:
        eps = metadata.entry_points(group="pylibjpeg.pixel_data_decoders")
        available = {ep.name for ep in eps}
    except Exception:  # noqa: BLE001 - broken metadata reads as "no decoders"
        available = set()
    missing = [label for uid, label in DICOM_SYNTAXES.items() if uid not in available]
    if missing:
        return [f"Compressed DICOM ({', '.join(missing)}) cannot be decoded: the pylibjpeg decoder plugins "
                f"or their package metadata are missing."]
    return []


def check_bundle(deep: bool = False) -> list[str]:
    """Every problem found, each a sentence saying what is missing and what it means; [] if none.
    ``deep`` also imports the packages (slow; for `--check-install` rather than every start)."""
    problems: list[str] = []
    checks = [check_qt_platform, check_modules, check_resources, check_style, check_dicom_decoders]
    for check in checks + ([check_imports] if deep else []):
        try:
            problems.extend(check())
        except Exception as e:  # noqa: BLE001 - a failing check must not stop the app from starting
            problems.append(f"The installation check {check.__name__} failed: {e}")
    return problems


def report_missing(stream: TextIO | None = None, deep: bool = False) -> list[str]:
    """Print the problems ``check_bundle`` finds (to stderr by default) and return them."""
    problems = check_bundle(deep=deep)
    if problems:
        out = stream if stream is not None else sys.stderr
        print(f"cxr-studio: this installation is incomplete ({len(problems)} problem"
              f"{'s' if len(problems) != 1 else ''}):", file=out)
        for p in problems:
            print(f"  - {p}", file=out)
    return problems


if __name__ == "__main__":
    sys.exit(1 if report_missing(sys.stdout, deep="--deep" in sys.argv) else 0)
