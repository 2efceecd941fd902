"""Splitting a batch job (filter, inference, evaluation) over several processes or machines, and merging it back.

A job over an ordered list of items is split into ``N`` shards; shard ``K`` (0-based) owns the items at positions
``K, K + N, K + 2N, ...`` of the full list (strided, so shards get similar mixes of datasets and sizes). The
assignment depends only on the list order and ``N``, so every process computes it alone, with no communication.

* Which shard a process is: ``--shard K/N`` on the command line (:func:`parse_shard`), else torchrun's ``RANK`` and
  ``WORLD_SIZE`` environment variables (:func:`shard_from_env`); :func:`resolve_shard` applies that rule.
* Where a shard writes: its own directory ``OUTPUT/shards/K-of-N/`` (:func:`shard_dir`), so shards never write the
  same file and each one resumes on its own; a finished shard writes ``shard.json`` (:func:`mark_complete`).
* Merging: :func:`shard_dirs` lists the shard directories of an output (:func:`finished_shards`: all of them,
  finished), :func:`check_arguments` checks that a shard ran the merging command, :func:`merge_rows` puts
  per-shard rows back into the order of the full list and checks that no item is missing or duplicated; the
  caller then writes the single-machine outputs from them, which are therefore identical to those of one process.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from anydepth.atomic import atomic_path, json_text

__all__ = [
    "SHARDS_DIR",
    "Shard",
    "check_arguments",
    "finished_shards",
    "is_complete",
    "mark_complete",
    "merge_rows",
    "parse_shard",
    "resolve_shard",
    "shard_dir",
    "shard_dirs",
    "shard_from_env",
    "shard_info",
]

T = TypeVar("T")

SHARDS_DIR = "shards"
MARKER = "shard.json"
_DIR_RE = re.compile(r"^(\d+)-of-(\d+)$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count).

    Attributes:
        index: this shard, 0-based.
        count: number of shards.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: expected 0 <= K < N (K is 0-based)")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def name(self) -> str:
        """Directory name of the shard: ``K-of-N``."""
        return f"{self.index}-of-{self.count}"

    def owns(self, position: int) -> bool:
        """True if the item at ``position`` of the full list belongs to this shard."""
        return position % self.count == self.index

    def take(self, items: Sequence[T]) -> list[T]:
        """The items of this shard, in their order in ``items`` (positions ``K, K+N, ...``). To keep groups
        together (e.g. the batches of one run), pass the groups as the items."""
        return list(items[self.index :: self.count])


def parse_shard(text: str) -> Shard:
    """Parse ``K/N`` (0-based ``K``), e.g. ``--shard 0/4`` ... ``--shard 3/4``.

    Raises:
        ValueError: not two integers with 0 <= K < N.
    """
    k, sep, n = text.partition("/")
    try:
        if not sep:
            raise ValueError
        return Shard(int(k), int(n))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected K/N with integers 0 <= K < N (K is 0-based)") from None


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard | None:
    """The shard of a process started by ``torchrun`` (``RANK`` of ``WORLD_SIZE``); ``None`` if not set or 1.

    Raises:
        ValueError: ``RANK``/``WORLD_SIZE`` are not integers with 0 <= RANK < WORLD_SIZE.
    """
    env = os.environ if env is None else env
    world = env.get("WORLD_SIZE")
    if world is None:
        return None
    rank = env.get("RANK", "0")
    try:
        shard = Shard(int(rank), int(world))
    except ValueError:
        raise ValueError(
            f"RANK={rank!r} and WORLD_SIZE={world!r}: expected integers 0 <= RANK < WORLD_SIZE"
        ) from None
    return shard if shard.count > 1 else None


def resolve_shard(spec: str | None, env: Mapping[str, str] | None = None) -> Shard | None:
    """``--shard K/N`` if given, else torchrun's ``RANK``/``WORLD_SIZE``, else ``None`` (one process does it all)."""
    if spec is not None:
        return parse_shard(spec)
    return shard_from_env(env)


def shard_dir(output: str | os.PathLike[str], shard: Shard) -> Path:
    """``OUTPUT/shards/K-of-N``: where shard ``shard`` of a job writing to ``output`` keeps its files."""
    return Path(output) / SHARDS_DIR / shard.name


def shard_dirs(output: str | os.PathLike[str]) -> list[tuple[Shard, Path]]:
    """The shard directories under ``output`` (sorted by index); empty if the job was not sharded.

    Raises:
        ValueError: directories of different shard counts (two sharded runs mixed in one output).
    """
    root = Path(output) / SHARDS_DIR
    if not root.is_dir():
        return []
    found = []
    for d in sorted(root.iterdir()):
        m = _DIR_RE.match(d.name)
        if d.is_dir() and m:
            found.append((Shard(int(m.group(1)), int(m.group(2))), d))
    counts = {s.count for s, _ in found}
    if len(counts) > 1:
        raise ValueError(
            f"{root} holds shards of different counts {sorted(counts)}; keep one sharded run per output"
        )
    return sorted(found, key=lambda t: t[0].index)


def mark_complete(
    directory: str | os.PathLike[str], shard: Shard, info: Mapping[str, Any] | None = None
) -> Path:
    """Write ``shard.json`` (shard, item count, caller's info) into a finished shard's directory, atomically."""
    path = Path(directory) / MARKER
    with atomic_path(path, overwrite=True) as tmp:
        Path(tmp).write_text(
            json_text(
                {"shard": str(shard), "complete": True, **(info or {})},
                nonfinite="null",
                indent=2,
                sort_keys=True,
            )
            + "\n",
            encoding="utf-8",
        )
    return path


def shard_info(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """What :func:`mark_complete` wrote into ``directory`` (shard, ``complete``, the caller's info); ``{}`` if the
    shard has not finished (no or unreadable ``shard.json``)."""
    path = Path(directory) / MARKER
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def is_complete(directory: str | os.PathLike[str]) -> bool:
    """True if ``directory`` holds the ``shard.json`` of a finished shard."""
    return bool(shard_info(directory).get("complete"))


def finished_shards(output: str | os.PathLike[str]) -> list[tuple[Shard, Path]]:
    """The directories of shards ``0 .. N-1`` under ``output``, every one finished (for a merge that needs all).

    Raises:
        ValueError: no shard directory, or shards missing or unfinished (named, with how to run them).
    """
    dirs = shard_dirs(output)
    if not dirs:
        raise ValueError(f"{output}: no shard directories ({SHARDS_DIR}/K-of-N) to merge")
    count = dirs[0][0].count
    done = {s.index for s, d in dirs if is_complete(d)}
    todo = [f"{k}/{count}" for k in range(count) if k not in done]
    if todo:
        raise ValueError(
            f"{output}: shard(s) {', '.join(todo)} are missing or unfinished (no {MARKER}); run them with "
            "--shard K/N before merging"
        )
    return dirs


def check_arguments(
    mine: Mapping[str, Any], theirs: Mapping[str, Any], *, ignore: Iterable[str] = (), where: str = "shard"
) -> None:
    """Check that a shard ran with the arguments of the merging command (apart from the per-process ones).

    Args:
        mine: the merging command's arguments (name -> value, as recorded).
        theirs: the arguments the shard recorded.
        ignore: names that may differ between processes (``shard``, ``device``, ``overwrite``, ...).
        where: the shard, for the message (e.g. its directory).

    Raises:
        ValueError: naming the first differing argument and both values.
    """
    skip = set(ignore)
    diff = sorted(k for k in set(mine) | set(theirs) if k not in skip and mine.get(k) != theirs.get(k))
    if diff:
        k = diff[0]
        raise ValueError(
            f"{where} was run with other arguments ({k}={theirs.get(k)!r}, this command: {mine.get(k)!r}); "
            "merge with the command the shards ran (without --shard)"
        )


def merge_rows(
    parts: Iterable[Iterable[T]],
    key: Callable[[T], Hashable],
    order: Sequence[Hashable],
    *,
    allow_missing: bool = False,
) -> list[T]:
    """Merge per-shard rows into the order of the full item list.

    Args:
        parts: the rows of each shard (any order within and across shards).
        key: the item key of a row (e.g. ``(dataset, index)`` or an input path).
        order: the keys of the full list, in the single-machine order.
        allow_missing: skip keys no shard produced instead of failing.

    Returns:
        One row per key of ``order`` (fewer with ``allow_missing``), in that order.

    Raises:
        ValueError: a key produced twice, a row whose key is not in ``order``, or (unless ``allow_missing``) a key
            that no shard produced.
    """
    wanted = set(order)
    by_key: dict[Hashable, T] = {}
    for rows in parts:
        for r in rows:
            k = key(r)
            if k not in wanted:
                raise ValueError(f"merging shards: item {k!r} is not in the job's item list")
            if k in by_key:
                raise ValueError(f"merging shards: item {k!r} was produced by two shards")
            by_key[k] = r
    missing = [k for k in order if k not in by_key]
    if missing and not allow_missing:
        raise ValueError(
            f"merging shards: {len(missing)} item(s) missing, e.g. {missing[:3]}; run the missing shards"
        )
    return [by_key[k] for k in order if k in by_key]
