"""User input -> labeled examples: sources (folder, csv/jsonl, builtin), labels, splits, transforms, loaders.

Imports only transferkit.core.
"""
