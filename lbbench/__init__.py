"""lbbench: an open benchmark suite for large-batch training through Horovod.

The package root and everything outside ``lbbench.backends`` is framework-free: importing
it never imports torch, tensorflow or horovod (tests/test_import_hygiene.py checks this).
"""

__version__ = "0.1.0"
