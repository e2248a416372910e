"""The public surface of clrk.state is what __all__ says, sorted and complete."""

from __future__ import annotations

import clrk.state


def test_all_is_sorted_and_importable() -> None:
    names = clrk.state.__all__
    # isort style, as ruff keeps it: CONSTANTS, then Classes, then functions
    assert list(names) == sorted(names, key=lambda n: (not n.isupper(), n[0].islower(), n))
    for name in names:
        assert hasattr(clrk.state, name), name


def test_every_public_name_is_exported() -> None:
    public = {
        name
        for name, value in vars(clrk.state).items()
        if not name.startswith("_") and not isinstance(value, type(clrk))
    }
    assert public == set(clrk.state.__all__)
