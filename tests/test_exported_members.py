"""Each package's ``__all__`` names exactly its public members, and each exists."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("package", ["promises", "agent_tools"])
def test_all_lists_every_public_member_and_nothing_else(package: str) -> None:
    module = importlib.import_module(package)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith(package + ".")
    }
    assert set(module.__all__) >= public
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.__all__ names missing {name}"
