"""Typed configuration: frozen dataclass schemas filled from YAML files and ``key=value`` overrides.

This is the only module of ``anydepth`` that imports OmegaConf. The schema is a (frozen) dataclass whose
fields may be scalars, enums, tuples/lists, ``dict[str, Any]`` or nested dataclasses (also in lists). Values
are merged in this order, later winning:

1. the schema's defaults,
2. each YAML file in ``yaml_paths`` (in order),
3. each override in ``overrides`` (dotted ``key.path=value``; the value is parsed as YAML, so
   ``optim.lr=2e-4``, ``model.overrides={decoder_kwargs: {features: 64}}`` and ``data.sizes=[64,64]`` work).

Unknown keys and badly typed values raise ``KeyError``/``ValueError`` naming the full key path and the source
(file name or ``--set`` override), so a typo never passes silently.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Opt:
    ...     lr: float = 1e-3
    >>> load_config(Opt, [], ["lr=0.5"]).lr
    0.5
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["load_config", "save_config", "config_to_dict", "config_to_yaml", "config_from_dict"]

T = TypeVar("T")

PathLike = str | os.PathLike[str]


def _schema_node(schema_cls: type) -> Any:
    from omegaconf import OmegaConf

    if not (isinstance(schema_cls, type) and dataclasses.is_dataclass(schema_cls)):
        raise ValueError(f"config schema must be a dataclass type, got {schema_cls!r}")
    from omegaconf.errors import OmegaConfBaseException

    try:
        node = OmegaConf.structured(schema_cls)
    except OmegaConfBaseException as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(
            f"config schema {schema_cls.__name__} is not supported by OmegaConf: {msg}"
        ) from None
    OmegaConf.set_readonly(node, False)  # frozen dataclasses give read-only nodes; we merge into a copy
    return node


def _merge(node: Any, other: Any, source: str) -> Any:
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    try:
        return OmegaConf.merge(node, other)
    except ConfigKeyError as e:
        key = getattr(e, "full_key", None) or "?"
        hint = str(e).splitlines()[0] if str(e) else ""
        raise KeyError(f"{source}: unknown config key {key!r} ({hint})") from None
    except ValidationError as e:
        key = getattr(e, "full_key", None) or "?"
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{source}: invalid value for config key {key!r}: {msg}") from None
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{source}: cannot merge config key {key!r}: {msg}") from None


def _to_object(node: Any, source: str) -> Any:
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    try:
        return OmegaConf.to_object(node)
    except MissingMandatoryValue as e:
        raise ValueError(
            f"{source}: required config key {getattr(e, 'full_key', '?')!r} is not set"
        ) from None
    except OmegaConfBaseException as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{source}: invalid config ({getattr(e, 'full_key', '?')}): {msg}") from None
    except (TypeError, ValueError) as e:  # raised by a dataclass __post_init__
        raise ValueError(f"{source}: invalid config: {e}") from None


def _parse_override(item: str) -> Any:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key.path=value")
    key = item.partition("=")[0].strip()
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {item!r}: empty key path")
    try:
        return OmegaConf.from_dotlist([item.strip()])
    except Exception as e:  # yaml.YAMLError (not wrapped by OmegaConf), OmegaConf errors, ValueError
        if not isinstance(e, OmegaConfBaseException | ValueError) and not _is_yaml_error(e):
            raise
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ValueError(f"override {item!r}: value is not valid YAML ({reason})") from None


def _is_yaml_error(e: BaseException) -> bool:
    import yaml

    return isinstance(e, yaml.YAMLError)


def load_config(schema_cls: type[T], yaml_paths: Sequence[PathLike] = (), overrides: Sequence[str] = ()) -> T:
    """Build a config object of type ``schema_cls`` from defaults, YAML files and overrides.

    Args:
        schema_cls: a dataclass type (usually frozen) whose fields define every valid key.
        yaml_paths: YAML files merged in order (later files win). Each must hold a mapping.
        overrides: ``"dotted.key=value"`` strings (values parsed as YAML), applied last, in order.

    Returns:
        An instance of ``schema_cls`` (nested dataclasses instantiated, enums converted).

    Raises:
        FileNotFoundError: a YAML file does not exist.
        KeyError: an unknown key (message names the file or override and the full key path).
        ValueError: a value of the wrong type, malformed YAML or override, or a rejected ``__post_init__``.
    """
    from omegaconf import DictConfig, OmegaConf

    node = _schema_node(schema_cls)
    for p in yaml_paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            data = OmegaConf.load(path)
        except Exception as e:  # yaml.YAMLError and friends; OmegaConf does not wrap them
            raise ValueError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
        if data is None or (isinstance(data, DictConfig) and len(data) == 0):
            continue
        if not isinstance(data, DictConfig):
            raise ValueError(f"{path}: top level must be a mapping of config keys, got {type(data).__name__}")
        node = _merge(node, data, str(path))
    for item in overrides:
        node = _merge(node, _parse_override(item), f"override {item!r}")
    return _to_object(node, f"config {schema_cls.__name__}")


def config_from_dict(schema_cls: type[T], data: dict[str, Any], source: str = "dict") -> T:
    """Like ``load_config`` but from an in-memory mapping (e.g. a config stored in a checkpoint)."""
    from omegaconf import OmegaConf

    node = _merge(_schema_node(schema_cls), OmegaConf.create(data), source)
    return _to_object(node, source)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain ``dict`` (enums as their values, tuples as lists) of a config dataclass instance."""
    from omegaconf import OmegaConf

    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise ValueError(f"expected a config dataclass instance, got {type(cfg).__name__}")
    node = OmegaConf.structured(cfg)
    out = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    assert isinstance(out, dict)
    return _enum_values(out, cfg)


def _enum_values(d: Any, ref: Any) -> Any:
    # OmegaConf writes enum *names*; our enums are str-valued, and their values are what users type.
    from enum import Enum

    if dataclasses.is_dataclass(ref) and isinstance(d, dict):
        return {k: _enum_values(v, getattr(ref, k, None)) for k, v in d.items()}
    if isinstance(ref, Enum):
        return ref.value
    if isinstance(ref, (list, tuple)) and isinstance(d, list):
        return [_enum_values(v, r) for v, r in zip(d, ref, strict=False)]
    return d


def config_to_yaml(cfg: Any) -> str:
    """The YAML text of a config dataclass instance (loadable again with ``load_config``)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(config_to_dict(cfg)))


def save_config(cfg: Any, path: PathLike) -> Path:
    """Write ``cfg`` as YAML to ``path`` atomically (temp file in the same directory, then rename).

    Returns:
        The written path.
    """
    dst = Path(path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    text = config_to_yaml(cfg)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst
