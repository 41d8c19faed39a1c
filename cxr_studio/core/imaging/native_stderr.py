"""Keep the C libraries under OpenCV (libpng, libtiff, libjpeg) and OpenCV's own logger from
printing on stderr while a file is decoded: a damaged file is reported in our one sentence, not
beside a native ``libpng error: ...`` line. Used by `io.read_image` (re-exported there)."""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from typing import Iterator

import cv2

_NOISE = (b"libpng ", b"[ERROR:", b"[ WARN:", b"TIFFRead", b"TIFFFetch", b"Corrupt JPEG", b"Premature end of JPEG")
_QUIET_LOCK = threading.Lock()


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Keep the C libraries under OpenCV from printing on stderr while a file is decoded: damaged
    files are reported in our one sentence (the ImageReadError), not beside it. Output of anything
    else that wrote to stderr meanwhile is passed on afterwards."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr (a windowed app): nothing to keep quiet
        yield
        return
    try:
        sink_file = tempfile.TemporaryFile()
    except OSError:  # no temporary folder: decode without the filter
        os.close(saved)
        yield
        return
    level = cv2.utils.logging.getLogLevel()
    with _QUIET_LOCK, sink_file as sink:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        try:
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            cv2.utils.logging.setLogLevel(level)
            sink.seek(0)
            kept = [ln for ln in sink.read().splitlines(keepends=True) if not ln.lstrip().startswith(_NOISE)]
            if kept:
                os.write(2, b"".join(kept))
