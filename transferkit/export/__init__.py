"""Bundles (safetensors weights + JSON manifest + backbone assets): what a run hands back to deploy.

Imports transferkit.core, transferkit.data, transferkit.backbones.
"""
