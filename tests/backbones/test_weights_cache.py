"""installed_file: the file a converted backbone's weights come from, or a BackboneLoadError naming the install."""
from __future__ import annotations

import pytest

from transferkit.backbones.weights_cache import installed_file
from transferkit.core.errors import BackboneLoadError


def test_a_missing_package_names_the_no_deps_install():
    with pytest.raises(BackboneLoadError, match=r"x-model needs the PyPI package no-such-dist-xyz==1\.0: "
                                                r"pip install --no-deps no-such-dist-xyz==1\.0"):
        installed_file("x-model", "no-such-dist-xyz", "1.0", "a/b.onnx")


def test_a_file_missing_from_an_installed_package_says_reinstall():
    with pytest.raises(BackboneLoadError, match=r"is missing from the installed pytest; reinstall it"):
        installed_file("x-model", "pytest", "8", "no/such/file.onnx")
    assert installed_file("x-model", "pytest", "8", "pytest/__init__.py").is_file()
