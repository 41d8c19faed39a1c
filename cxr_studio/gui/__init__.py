"""The desktop app (PySide6 + pyqtgraph). It observes a `cxr_studio.core.runtime.session.Session` and sends
torch work to the engine's `Worker`; nothing here computes what is shown (that is `cxr_studio.core`)."""
