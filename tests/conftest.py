"""Shared test set-up: the ``torch`` and ``gpu`` markers' skips."""

import pytest


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
