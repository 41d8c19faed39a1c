"""Entry script of the bundled `cxr-studio-train` (the same as the pip console script)."""
import multiprocessing
import sys

from cxr_studio.training.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # data-loader workers re-enter the frozen executable
    sys.exit(main())
