"""Scanning long recordings: windows, their features, per-window probabilities and events.

:func:`scan` (also ``calm.scan``) is the entry point; :mod:`calm.scanning.outputs` writes its
events in the formats the usual tools open, and :mod:`calm.scanning.timeline` draws a file.
"""

from calm.scanning.events import Event
from calm.scanning.run import FileScan, ScanOptions, scan

__all__ = ["Event", "FileScan", "ScanOptions", "scan"]
