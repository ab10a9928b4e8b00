"""MLPerf Training interop: packages checked by MLPerf's own tools (export.py)."""
