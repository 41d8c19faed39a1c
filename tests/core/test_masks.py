"""The one mask reader: OR of files, half-maximum or nonzero rule, resizing, one-sentence errors."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from cxr_studio.core.imaging.masks import MaskReadError, read_mask


def test_or_of_files_rules_and_resize(tmp_path) -> None:
    a = np.zeros((8, 10), np.uint8)
    a[2:4, 1:3] = 255
    a[6, 6] = 40  # an interpolated edge value
    b = np.zeros((8, 10), np.uint16)
    b[5:7, 7:9] = 1  # a 0/1 16-bit mask
    cv2.imwrite(str(tmp_path / "a.png"), a)
    cv2.imwrite(str(tmp_path / "b.png"), b)
    m = read_mask([tmp_path / "a.png", tmp_path / "b.png"])
    assert m.dtype == bool and m.sum() == 4 + 4 and not m[6, 6]
    assert read_mask(tmp_path / "a.png", rule="nonzero")[6, 6]
    big = read_mask(tmp_path / "a.png", shape=(16, 20))
    assert big.shape == (16, 20) and big.sum() == 16
    assert read_mask([]) is None


def test_bad_files_are_one_sentence(tmp_path) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    with pytest.raises(MaskReadError, match="cannot read the mask .*bad.png"):
        read_mask(tmp_path / "bad.png")
    with pytest.raises(MaskReadError, match="missing"):
        read_mask(tmp_path / "none.png")
    cv2.imwrite(str(tmp_path / "s.png"), np.zeros((4, 4), np.uint8))
    cv2.imwrite(str(tmp_path / "t.png"), np.zeros((5, 4), np.uint8))
    with pytest.raises(MaskReadError, match="partner"):
        read_mask([tmp_path / "s.png", tmp_path / "t.png"])
    with pytest.raises(ValueError, match="rule"):
        read_mask(tmp_path / "s.png", rule="most")
