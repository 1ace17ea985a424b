"""Runnable examples of the shared library (``python -m examples.lifecycle``); not part of the ``common`` package."""
