"""Everything CXR Studio computes, without Qt (a test enforces that no module here imports Qt)."""
