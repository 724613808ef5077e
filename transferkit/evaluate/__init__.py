"""Predictions -> metrics -> reports (markdown + json).

Imports transferkit.core, transferkit.data and transferkit.train (for batched inference).
"""
