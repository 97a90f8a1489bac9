"""Shared test set-up: the ``gpu`` marker's skip."""

import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA; none is present here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
