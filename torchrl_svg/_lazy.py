"""Names a package imports on first use (PEP 562 module ``__getattr__`` and ``__dir__``)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, sources: Mapping[str, str], names: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose names import on first use.

    Args:
        package: the package's ``__name__``.
        sources: the module each lazy name is imported from, by name.
        names: the package's public names (its ``__all__``), listed by ``dir``.

    Returns:
        ``(__getattr__, __dir__)``, to be bound at the package's top level.

    Examples:
        >>> getattr_, dir_ = lazy_exports("torchrl_svg", {"sqrt": "math"}, ["sqrt"])
        >>> getattr_("sqrt")(4.0)
        2.0
    """
    public = set(names)

    def __getattr__(name: str) -> Any:
        if name in sources:
            return getattr(importlib.import_module(sources[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | public)

    return __getattr__, __dir__
