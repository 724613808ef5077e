"""Shared basics: errors, registry lookup, seeding, io helpers, runtime (precision) choices.

Imports nothing else from transferkit.
"""
