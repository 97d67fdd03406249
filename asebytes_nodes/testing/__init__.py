"""Test helpers shipped with the package: the backend contract suite and reference frames.

A backend author subclasses :class:`~asebytes_nodes.testing.contract.ReadableContract`
or :class:`~asebytes_nodes.testing.contract.WritableContract` in a pytest module and
provides the ``store`` fixture; every contract test then runs on that backend.
Importing this package needs pytest.
"""

import pkgutil

import pytest

# pytest rewrites the asserts of test files only; a failing contract assert in this installed
# package would show a bare AssertionError without its values. Marked before any submodule is
# imported (this package itself is already importing, so it cannot be marked: its asserts live
# in the submodules).
pytest.register_assert_rewrite(*(f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__)))
