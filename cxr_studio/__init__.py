"""CXR Studio: a workstation that shows what chest X-ray classifiers look at."""

__version__ = "0.1.0"
