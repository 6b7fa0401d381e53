"""Executors of the embedded default stack (``tools/stack.py``)."""
