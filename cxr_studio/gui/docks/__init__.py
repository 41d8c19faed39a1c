"""Dock widgets of the main window, one per file; each receives the session (nothing global)."""
