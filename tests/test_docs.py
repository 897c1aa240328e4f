"""Run the docstring examples of the public modules (with the test cache directory)."""
import doctest
import importlib

import pytest

MODULES = ["softsym", "softsym.groups.base", "softsym.reps.algebra", "softsym.reps.basis", "softsym.data.synthetic", "softsym.data.user"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
    assert result.attempted > 0, f"{name} has no doctest examples"
