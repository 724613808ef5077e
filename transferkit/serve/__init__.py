"""Serving a bundle: the Predictor (batched inference from a bundle) and the HTTP server (app.py, server.py).

Imports transferkit.core, transferkit.data, transferkit.train and transferkit.export.
"""
