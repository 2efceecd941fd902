"""A small name -> object registry used for encoders, decoders, presets, datasets, benchmarks and filters.

This module imports nothing but the standard library so every layer may use it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "ENCODERS", "DECODERS", "FAST_DECODERS", "MODELS", "DATASETS", "BENCHMARKS", "FILTERS"]


class Registry(Generic[T]):
    """Maps unique names to objects (classes, builder functions or config records).

    Example:
        >>> DECODERS: Registry[type] = Registry("decoder")
        >>> @DECODERS.register("sdt")
        ... class SDT: ...
        >>> DECODERS.get("sdt") is SDT
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; used directly or as a decorator.

        Raises:
            ValueError: if ``name`` is already registered (silent replacement hides bugs).
        """

        def _add(o: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = o
            return o

        if obj is not None:
            return _add(obj)
        return _add

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name`` and return it (typed, non-decorator form)."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj
        return obj

    def get(self, name: str) -> T:
        """Return the object registered under ``name``.

        Raises:
            KeyError: naming the unknown value, close matches and the valid choices.
        """
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise KeyError(
                f"unknown {self.kind} {name!r}.{hint} Valid choices: {', '.join(sorted(self._items)) or '(none)'}"
            ) from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


# The project's registries. Each is filled when the package that owns the entries is imported
# (explicit import lists in ``anydepth.models``, ``anydepth.data``, ``anydepth.eval``; no directory scanning).
ENCODERS: Registry = Registry("encoder")  # name -> builder(**overrides) -> ViT backbone module
DECODERS: Registry = Registry("decoder")  # name -> Decoder class, built as cls(in_dims, **kwargs)
# decoder name (as in DECODERS) -> its inference-only fast version, built as cls(decoder, **options)
FAST_DECODERS: Registry = Registry("fast decoder")
MODELS: Registry = Registry("model preset")  # name -> ModelConfig
DATASETS: Registry = Registry("dataset")  # name -> DepthDataset class
BENCHMARKS: Registry = Registry("benchmark")  # name -> BenchmarkSpec
FILTERS: Registry = Registry("quality score")  # name -> score function
