"""Packaging: the start-up installation check, the desktop entry, the DICOM MIME registration
(the icons: test_icons.py), the smoke test's heatmap detector and (marked `bundle`) the smoke test of a built bundle."""
from __future__ import annotations

import configparser
import fnmatch
import importlib.util
import io
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_studio import bundle_check
from cxr_studio.core import resources

REPO = Path(__file__).resolve().parents[1]
RES = REPO / "resources"
DESKTOP = RES / "cxr-studio.desktop"
MIME_XML = RES / "mime" / "cxr-studio-dicom.xml"
MIME_NS = "{http://www.freedesktop.org/standards/shared-mime-info}"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


smoke_test = _load("smoke_test", REPO / "packaging" / "smoke_test.py")


# ---------------------------------------------------------------- bundle_check

@pytest.fixture
def complete_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A resources folder with every shipped file and a Qt plugin folder with the offscreen plugin."""
    res = tmp_path / "resources"
    (res / "models").mkdir(parents=True)
    (res / resources.DEMO_MODEL).write_bytes(b"demo")
    (res / resources.LUNG_SEGMENTER).write_bytes(b"unet")
    shutil.copytree(RES / "icons", res / "icons")
    plugins = tmp_path / "plugins" / "platforms"
    plugins.mkdir(parents=True)
    (plugins / "libqoffscreen.so").write_bytes(b"\x7fELF")
    monkeypatch.setattr(resources, "resource_dirs", lambda: [res])
    monkeypatch.setattr(bundle_check, "qt_plugin_dirs", lambda: [plugins])
    monkeypatch.setattr(bundle_check, "missing_libraries", lambda plugin: [])
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    return res


def test_complete_install_has_no_problems(complete_install: Path) -> None:
    assert bundle_check.check_bundle() == []
    out = io.StringIO()
    assert bundle_check.report_missing(out) == []
    assert out.getvalue() == ""


def test_missing_demo_model_is_reported(complete_install: Path) -> None:
    (complete_install / resources.DEMO_MODEL).unlink()
    problems = bundle_check.check_bundle()
    assert len(problems) == 1
    assert "cxrnet-demo.pt" in problems[0] and "UNTRAINED" in problems[0]


def test_missing_segmenter_and_icon_are_reported(complete_install: Path) -> None:
    (complete_install / resources.LUNG_SEGMENTER).unlink()
    (complete_install / "icons" / "cxr-studio-48.png").unlink()
    problems = bundle_check.check_bundle()
    assert len(problems) == 2
    assert any("lung-unet.pt" in p for p in problems)
    icon_problem = next(p for p in problems if "icons" in p)
    assert "cxr-studio-48.png" in icon_problem and "cxr-studio-16.png" not in icon_problem


def test_missing_platform_plugin_names_it_and_where_it_looked(complete_install: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty" / "platforms"
    empty.mkdir(parents=True)
    monkeypatch.setattr(bundle_check, "qt_plugin_dirs", lambda: [empty])
    problems = bundle_check.check_bundle()
    assert len(problems) == 1
    assert "'offscreen'" in problems[0] and str(empty) in problems[0]
    assert "cannot open" in problems[0]


def test_platform_plugin_with_missing_system_libraries(complete_install: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = tmp_path / "x" / "platforms"
    plugins.mkdir(parents=True)
    (plugins / "libqxcb.so").write_bytes(b"\x7fELF")
    monkeypatch.setattr(bundle_check, "qt_plugin_dirs", lambda: [plugins])
    monkeypatch.setattr(bundle_check, "missing_libraries",
                        lambda p: ["libxcb-icccm.so.4", "libxkbcommon-x11.so.0"] if p.name == "libqxcb.so" else [])
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    [problem] = bundle_check.check_bundle()
    assert "libxcb-icccm.so.4" in problem and "apt install libxcb-icccm4 libxkbcommon-x11-0" in problem


def test_any_one_wanted_platform_is_enough(complete_install: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = tmp_path / "y" / "platforms"
    plugins.mkdir(parents=True)
    (plugins / "libqxcb.so").write_bytes(b"\x7fELF")
    monkeypatch.setattr(bundle_check, "qt_plugin_dirs", lambda: [plugins])
    monkeypatch.setenv("QT_QPA_PLATFORM", "wayland;xcb")
    assert bundle_check.check_bundle() == []


def test_wanted_platforms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb:dpi=96;offscreen")
    assert bundle_check.wanted_platforms() == ["xcb", "offscreen"]
    monkeypatch.delenv("QT_QPA_PLATFORM")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert bundle_check.wanted_platforms() == ["wayland", "xcb"]
    monkeypatch.delenv("WAYLAND_DISPLAY")
    assert bundle_check.wanted_platforms() == ["xcb"]
    monkeypatch.setattr(sys, "platform", "win32")
    assert bundle_check.wanted_platforms() == ["windows"]


def test_debian_package_names() -> None:
    assert bundle_check.debian_package("libxcb-icccm.so.4") == "libxcb-icccm4"
    assert bundle_check.debian_package("libxcb-cursor.so.0") == "libxcb-cursor0"
    assert bundle_check.debian_package("libxkbcommon-x11.so.0") == "libxkbcommon-x11-0"


def test_missing_module_style_and_decoders(complete_install: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(bundle_check.REQUIRED_MODULES, "no_such_module_cxr", "testing")
    monkeypatch.setattr(bundle_check.metadata, "entry_points", lambda group: [])
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(bundle_check.importlib.util, "find_spec",
                        lambda name, *a: None if name == "qdarkstyle" else real_find_spec(name, *a))
    problems = bundle_check.check_bundle()
    assert len(problems) == 3
    assert any("'no_such_module_cxr'" in p for p in problems)
    assert any("qdarkstyle" in p for p in problems)
    assert any("JPEG, JPEG 2000" in p for p in problems)


def test_deep_check_imports_packages_for_real(complete_install: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_mod_cxr.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(bundle_check, "REQUIRED_MODULES", {"broken_mod_cxr": "testing", "json": "testing"})
    assert bundle_check.check_bundle() == []  # present, so the quick check is satisfied
    [problem] = bundle_check.check_bundle(deep=True)
    assert "'broken_mod_cxr'" in problem and "RuntimeError: operator torchvision::nms" in problem


def test_a_failing_check_is_reported_not_raised(complete_install: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> list[str]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(bundle_check, "check_style", boom)
    assert bundle_check.check_bundle() == ["The installation check boom failed: disk on fire"]


def test_report_missing_prints_each_problem(complete_install: Path) -> None:
    (complete_install / resources.DEMO_MODEL).unlink()
    (complete_install / resources.LUNG_SEGMENTER).unlink()
    out = io.StringIO()
    problems = bundle_check.report_missing(out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "cxr-studio: this installation is incomplete (2 problems):"
    assert lines[1:] == [f"  - {p}" for p in problems]


def test_real_qt_plugin_folder_has_the_offscreen_plugin() -> None:
    """Unpatched: this environment's PySide6 ships the plugin the tests run with."""
    plugin = bundle_check.find_platform_plugin("offscreen", bundle_check.qt_plugin_dirs())
    assert plugin is not None and plugin.is_file()


# ---------------------------------------------------------------- desktop entry

def _desktop() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.optionxform = str  # keys are case-sensitive
    cp.read(DESKTOP, encoding="utf-8")
    return cp


def test_desktop_entry_keys_and_exec() -> None:
    entry = _desktop()["Desktop Entry"]
    for key in ("Type", "Name", "Exec", "Icon", "Categories", "MimeType", "Terminal"):
        assert key in entry, key
    assert entry["Type"] == "Application" and entry["Terminal"] == "false"
    argv = shlex.split(entry["Exec"])
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] in scripts  # the console script pip installs (the bundle installer rewrites the path)
    codes = [a for a in argv[1:] if a.startswith("%")]
    assert codes == ["%f"], "one file argument: the app opens one radiograph"
    assert entry["TryExec"] == argv[0]
    assert (RES / "icons" / f"{entry['Icon']}.svg").is_file()
    for key in ("Categories", "MimeType", "Keywords", "Actions"):
        assert entry[key].endswith(";"), key


def test_desktop_entry_mime_types_and_actions() -> None:
    cp = _desktop()
    mimes = cp["Desktop Entry"]["MimeType"].rstrip(";").split(";")
    assert {"application/dicom", "image/png", "image/jpeg", "image/tiff"} <= set(mimes)
    for action in cp["Desktop Entry"]["Actions"].rstrip(";").split(";"):
        section = cp[f"Desktop Action {action}"]
        assert section["Name"] and shlex.split(section["Exec"])[0] == "cxr-studio"


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None, reason="desktop-file-utils not installed")
def test_desktop_entry_passes_desktop_file_validate() -> None:
    p = subprocess.run(["desktop-file-validate", str(DESKTOP)], capture_output=True, text=True)
    assert p.returncode == 0 and "error" not in p.stdout, p.stdout


# ---------------------------------------------------------------- DICOM MIME registration

def _dicom_type() -> ET.Element:
    root = ET.parse(MIME_XML).getroot()
    assert root.tag == f"{MIME_NS}mime-info"
    [mime] = [m for m in root.findall(f"{MIME_NS}mime-type") if m.get("type") == "application/dicom"]
    return mime


def _magic_matches(mime: ET.Element, data: bytes) -> bool:
    """Evaluate the type's string magic rules (the only kind it uses) on a file's bytes."""
    for match in mime.iter(f"{MIME_NS}match"):
        assert match.get("type") == "string"
        offset, value = int(match.get("offset")), match.get("value").encode()
        if data[offset:offset + len(value)] == value:
            return True
    return False


def test_mime_xml_registers_dcm_glob_and_dicm_magic() -> None:
    mime = _dicom_type()
    globs = [g.get("pattern") for g in mime.findall(f"{MIME_NS}glob")]
    assert "*.dcm" in globs
    assert any(fnmatch.fnmatch("chest_0001.dcm", g) for g in globs)
    [match] = list(mime.iter(f"{MIME_NS}match"))
    assert (match.get("type"), match.get("offset"), match.get("value")) == ("string", "128", "DICM")


def test_mime_magic_recognises_a_real_dicom_file(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Phantom^Demo"
    path = tmp_path / "no_extension"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    mime = _dicom_type()
    assert _magic_matches(mime, path.read_bytes())
    assert not _magic_matches(mime, (RES / "icons" / "cxr-studio-32.png").read_bytes())


@pytest.mark.skipif(shutil.which("update-mime-database") is None, reason="shared-mime-info not installed")
def test_update_mime_database_accepts_the_xml(tmp_path: Path) -> None:
    (tmp_path / "packages").mkdir()
    shutil.copy(MIME_XML, tmp_path / "packages")
    p = subprocess.run(["update-mime-database", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 0 and "Failed" not in p.stderr, p.stderr
    assert "application/dicom:*.dcm" in (tmp_path / "globs2").read_text()
    assert b"DICM" in (tmp_path / "magic").read_bytes()


# ---------------------------------------------------------------- smoke test helpers and the bundle

def _window(folder: Path, heat: bool, colorbar: bool = True) -> Path:
    """A fake 600x400 screenshot: grey radiograph, optional jet blob in the middle, a jet colour bar
    at the right edge (outside the centre box, as in the real window)."""
    rng = np.random.default_rng(0)
    img = np.repeat((rng.random((400, 600, 1)) * 120 + 60), 3, axis=2)
    if colorbar:
        ramp = np.linspace(0, 1, 400)[:, None]
        img[:, 560:580] = np.concatenate([np.clip(1.5 - abs(4 * ramp - k), 0, 1) for k in (3, 2, 1)],
                                         axis=1)[:, None, :] * 255
    if heat:
        yy, xx = np.mgrid[:400, :600]
        d = np.clip(1 - np.hypot(xx - 270, yy - 140) / 90, 0, 1)[..., None]
        jet = np.concatenate([np.clip(1.5 - abs(4 * d - k), 0, 1) for k in (3, 2, 1)], axis=2) * 255
        img = np.where(d > 0.1, 0.4 * img + 0.6 * jet, img)
    path = folder / f"window_{int(heat)}{int(colorbar)}.png"
    Image.fromarray(img.astype(np.uint8)).save(path)
    return path


def test_heatmap_evidence_tells_a_heatmap_from_a_plain_window(tmp_path: Path) -> None:
    ev = smoke_test.heatmap_evidence(_window(tmp_path, heat=True))
    assert ev["fraction"] >= smoke_test.MIN_HEAT_FRACTION and ev["hue_families"] >= 3
    ev = smoke_test.heatmap_evidence(_window(tmp_path, heat=False))  # the colour bar alone is not a heatmap
    assert ev["fraction"] < smoke_test.MIN_HEAT_FRACTION and ev["hue_families"] == 0


def test_launcher_check_install_passes_here(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The bundle launcher's --check-install, run from source: this environment has every packaged
    piece (models not trained yet would only be warnings)."""
    launcher = [sys.executable, str(REPO / "packaging" / "launch_app.py")]
    assert smoke_test.check_install(launcher, tmp_path, timeout=120)
    assert "PASS  check-install" in capsys.readouterr().out


def test_smoke_test_says_when_there_is_no_bundle(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, str(REPO / "packaging" / "smoke_test.py"), "--bundle", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "build the bundle first" in p.stderr


def test_spec_and_build_script_are_well_formed() -> None:
    import ast

    spec = (REPO / "packaging" / "cxr-studio.spec").read_text()
    ast.parse(spec)
    for name in ("launch_app.py", "launch_train.py"):
        assert f'HERE / "{name}"' in spec and (REPO / "packaging" / name).is_file()
    assert subprocess.run(["bash", "-n", str(REPO / "packaging" / "build.sh")]).returncode == 0


def test_install_desktop_registers_a_bundle_and_uninstalls(tmp_path: Path) -> None:
    """In a bundle folder (spaces in its path), the script installs the entry with the bundle's
    absolute program path, the icons and the MIME type, and --uninstall removes them."""
    bundle = tmp_path / "My Apps" / "cxr-studio"
    (bundle / "_internal").mkdir(parents=True)
    shutil.copytree(RES, bundle / "_internal" / "resources", ignore=shutil.ignore_patterns("models"))
    exe = bundle / "cxr-studio"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    shutil.copy(REPO / "packaging" / "install_desktop.sh", bundle)
    data = tmp_path / "share"
    env = {**os.environ, "XDG_DATA_HOME": str(data)}
    p = subprocess.run(["bash", str(bundle / "install_desktop.sh")], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read(data / "applications" / "cxr-studio.desktop", encoding="utf-8")
    assert shlex.split(cp["Desktop Entry"]["Exec"]) == [str(exe), "%f"]
    assert shlex.split(cp["Desktop Action Demo"]["Exec"]) == [str(exe), "--demo"]
    assert (data / "icons" / "hicolor" / "48x48" / "apps" / "cxr-studio.png").is_file()
    assert (data / "mime" / "packages" / "cxr-studio-dicom.xml").is_file()
    p = subprocess.run(["bash", str(bundle / "install_desktop.sh"), "--uninstall"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert not (data / "applications" / "cxr-studio.desktop").exists()
    assert not list((data / "icons").rglob("cxr-studio.png"))


BUNDLE = Path(os.environ.get("CXR_STUDIO_BUNDLE", REPO / "dist" / "cxr-studio"))


@pytest.mark.bundle
@pytest.mark.skipif(not (BUNDLE / "cxr-studio").exists(), reason=f"no built bundle at {BUNDLE}")
def test_built_bundle_smoke_test(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, str(REPO / "packaging" / "smoke_test.py"), "--bundle", str(BUNDLE),
                        "--keep", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 failed" in p.stdout


@pytest.mark.slow
def test_a_wheel_carries_the_shipped_resources(tmp_path: Path) -> None:
    """A non-editable install gets the demo model, the segmenter and the icons: the wheel holds
    them under cxr_studio/resources (a symlink to the top-level folder in the source tree)."""
    import zipfile

    repo = Path(__file__).resolve().parents[1]
    assert (repo / "cxr_studio" / "resources").resolve() == (repo / "resources").resolve()
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(repo), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("cxr_studio-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in (resources.DEMO_MODEL, resources.LUNG_SEGMENTER, "icons/cxr-studio.svg", "cxr-studio.desktop"):
        assert f"cxr_studio/resources/{rel}" in names, rel
    pkg_dir = Path(resources.__file__).resolve().parents[1] / "resources"
    assert pkg_dir in resources.resource_dirs()
