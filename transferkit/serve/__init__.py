"""Serving a bundle: the Predictor (batched inference from a bundle); the HTTP server comes later.

Imports transferkit.core, transferkit.data, transferkit.train and transferkit.export.
"""
