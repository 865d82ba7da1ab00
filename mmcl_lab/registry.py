"""Name -> entry registries for every plug-in kind (modalities, datasets, encoders, backbones, methods); a name taken
by another object raises. This module imports nothing of the package: every layer can use it."""

from __future__ import annotations

import warnings
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories filled by a decorator."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under name. Registering the same definition again (a notebook
        cell run twice: same module and qualified name) replaces it with a warning; any other clash raises."""
        def add(obj: T) -> T:
            old = self._entries.get(name)
            if old is not None:
                if _origin(old) != _origin(obj):
                    raise KeyError(f"{self.kind} {name!r} is already registered (by {'.'.join(_origin(old))})")
                warnings.warn(f"{self.kind} {name!r} redefined: the new definition replaces the old one",
                              stacklevel=2)
            self._entries[name] = obj
            return obj
        return add

    def get(self, name: str) -> T:
        """The entry called name, or a KeyError listing every valid name."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries


PLUGIN_GROUP = "mmcl_lab.plugins"  # entry points of installed packages: name = "my_pkg.my_module"


def load_plugins(modules: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Import every module of the 'mmcl_lab.plugins' entry point group, then each of modules, so that what they
    register can be named in configs; the modules imported. A module that fails to import is an error naming it."""
    import importlib
    from importlib.metadata import entry_points

    found = [(ep.value, f"entry point {ep.name!r} of group {PLUGIN_GROUP}") for ep in entry_points(group=PLUGIN_GROUP)]
    for name, origin in [*found, *((m, "--import") for m in modules)]:
        try:
            importlib.import_module(name.partition(":")[0])
        except Exception as err:
            raise ValueError(f"plug-in {name!r} ({origin}) failed to import: {type(err).__name__}: {err}") from None
    return [name for name, _ in found] + list(modules)


def _origin(obj) -> tuple[str, str]:
    return getattr(obj, "__module__", ""), getattr(obj, "__qualname__", repr(obj))


MODALITIES: Registry = Registry("modality")
DATASETS: Registry = Registry("dataset")
ENCODERS: Registry = Registry("encoder")
BACKBONES: Registry = Registry("backbone")
METHODS: Registry = Registry("method")
