"""The training loop, optimizers and schedules, and batched inference.

Imports transferkit.core, transferkit.data, transferkit.backbones and transferkit.strategies.
"""
