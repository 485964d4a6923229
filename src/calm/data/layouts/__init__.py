"""Loaders for public datasets in their published local layouts, one module each.

They are reached through :func:`calm.data.loaders.load_dataset`, which detects the layout.
"""
