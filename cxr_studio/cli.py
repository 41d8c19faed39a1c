"""`cxr-studio`: the desktop app, or `cxr-studio export ...` for batch export without a window."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "export":
        from .batch import main as batch_main

        return batch_main(argv[1:])
    from .gui.app import main as gui_main

    return gui_main(argv)


if __name__ == "__main__":
    sys.exit(main())
