"""Issue 15: no source file over 400 lines (the package, its tests, benchmarks, training scripts), and
the app's open dialog offers every suffix the reader takes (the one suffix list)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 400


def test_no_source_file_is_over_400_lines() -> None:
    files = [p for d in ("cxr_studio", "tests", "benchmarks", "training", "packaging") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 100
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text(encoding="utf-8").splitlines())) > LIMIT}
    assert long == {}


def test_open_dialog_offers_every_readable_suffix() -> None:
    from cxr_studio.core.imaging.formats import SUPPORTED_SUFFIXES
    from cxr_studio.gui.main_window import IMAGE_FILTER

    offered = IMAGE_FILTER.split("(", 1)[1].split(")", 1)[0].split()
    assert sorted(offered) == sorted("*" + s for s in SUPPORTED_SUFFIXES) and "*.dic" in offered
