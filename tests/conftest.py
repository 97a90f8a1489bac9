"""Shared test set-up: the ``torch`` and ``gpu`` markers' skips, and a home of the tests' own."""

import os
import tempfile

import pytest


def pytest_configure(config):
    # calibrations and the generic path's cache go to $FITPLAN_HOME: the tests neither read a developer's
    # nor leave theirs behind (a test that needs the defaults unsets it with monkeypatch)
    if "FITPLAN_HOME" not in os.environ:
        os.environ["FITPLAN_HOME"] = tempfile.mkdtemp(prefix="fitplan-tests-")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _torch_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def pytest_collection_modifyitems(config, items):
    if not _torch_installed():
        skip_torch = pytest.mark.skip(reason="needs torch (pip install '.[validate]'); it is not installed here")
        for item in items:
            if "torch" in item.keywords:
                item.add_marker(skip_torch)
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA; none is present here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
