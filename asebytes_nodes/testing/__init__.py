"""Test helpers shipped with the package: the backend contract suite and reference frames.

A backend author subclasses :class:`~asebytes_nodes.testing.contract.ReadableContract`
or :class:`~asebytes_nodes.testing.contract.WritableContract` in a pytest module and
provides the ``store`` fixture; every contract test then runs on that backend.
Importing this package needs pytest.
"""
