"""The one cancellation signal of long jobs: raised by a cancellable job that stopped because its
``cancel`` event was set. It lives below every part (inspect's saliency and feature jobs raise it, the
runtime's worker catches it), so no part imports the worker for it."""
from __future__ import annotations


class Cancelled(Exception):
    """Raised by a cancellable job that stopped because its ``cancel`` event was set."""
