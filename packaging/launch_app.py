"""Entry script of the bundled `cxr-studio` (the same as the pip console script).

`cxr-studio --check-install` (bundle only) prints what the installation lacks and exits 1 if
anything is missing, 0 otherwise: the same check as `python -m cxr_studio.bundle_check`.
"""
import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()  # data-loader workers re-enter the frozen executable
    if sys.argv[1:] == ["--check-install"]:
        from cxr_studio.bundle_check import report_missing

        problems = report_missing(sys.stdout, deep=True)
        if not problems:
            print("cxr-studio: the installation is complete.")
        sys.exit(1 if problems else 0)
    from cxr_studio.cli import main

    sys.exit(main())
