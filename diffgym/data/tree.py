"""Helpers for observations that are arrays or (nested) dicts of arrays, as ``Dict`` spaces give.

Shared by the readers (:mod:`diffgym.data.loading`, :mod:`diffgym.data.segments`) and the writers
(:mod:`diffgym.data.collection`, :mod:`diffgym.data.d4rl`, :mod:`diffgym.data.team`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np

__all__ = ["ArrayTree", "iter_leaves", "stack_tree", "storage_dtype", "tree_map"]

#: An array, or a dict of arrays (possibly nested) as Minari returns for ``Dict`` spaces.
ArrayTree: TypeAlias = np.ndarray | dict[str, "ArrayTree"]


def tree_map(fn: Callable[..., Any], tree: Any, *others: Any) -> Any:
    """Apply ``fn`` to each leaf of ``tree`` (and the matching leaves of ``others``), keeping dict keys."""
    if isinstance(tree, Mapping):
        return {key: tree_map(fn, tree[key], *(other[key] for other in others)) for key in tree}
    return fn(tree, *others)


def iter_leaves(tree: Any, prefix: str) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, array)`` for every leaf, named like ``observations['key']``."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from iter_leaves(value, f"{prefix}[{key!r}]")
    else:
        yield prefix, np.asarray(tree)


def stack_tree(items: Sequence[Any]) -> ArrayTree:
    """Stack a list of arrays (or of dicts of arrays) along a new first axis."""
    first = items[0]
    if isinstance(first, Mapping):
        return {key: stack_tree([item[key] for item in items]) for key in first}
    return np.stack([np.asarray(item) for item in items])


def storage_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype diffgym uses in memory: float32 for floats, int64 for integers, bool kept."""
    if dtype.kind == "f":
        return np.dtype(np.float32)
    if dtype.kind in "iu":
        return np.dtype(np.int64)
    return dtype
