"""Data sets on disk in the ImageNet folder layout (layout.py) and the embedded digits (digits.py)."""
