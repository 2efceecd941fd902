"""``anydepth.config``: schema defaults <- YAML <- overrides, strict keys, round trips; every shipped YAML loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from anydepth.config import config_from_dict, config_to_dict, config_to_yaml, load_config, save_config
from anydepth.engine.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


class Mode(str, Enum):  # noqa: UP042  (mirrors anydepth.types.DepthSpace)
    FAST = "fast"
    SLOW = "slow"


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    name: str | None = None


@dataclass(frozen=True)
class Item:
    pattern: str = "*"
    weight: float = 1.0


@dataclass(frozen=True)
class Schema:
    seed: int = 0
    mode: Mode = Mode.FAST
    inner: Inner = field(default_factory=Inner)
    items: list[Item] = field(default_factory=lambda: [Item()])
    extra: dict[str, Any] = field(default_factory=dict)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_yaml_and_overrides_merge_in_order(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.yaml", "seed: 1\ninner: {lr: 0.5}\nmode: slow\n")
    b = _write(tmp_path, "b.yaml", "seed: 2\nitems: [{pattern: 'decoder.*', weight: 2}]\n")
    cfg = load_config(Schema, [a, b], ["inner.betas=[0.8, 0.9]", "extra={k: {v: 1}}", "inner.name=x"])
    assert isinstance(cfg, Schema) and isinstance(cfg.inner, Inner)
    assert cfg.seed == 2  # later file wins
    assert cfg.inner.lr == 0.5 and cfg.inner.betas == (0.8, 0.9) and cfg.inner.name == "x"
    assert cfg.mode is Mode.SLOW
    assert cfg.items == [Item("decoder.*", 2.0)]
    assert cfg.extra == {"k": {"v": 1}}
    with pytest.raises(AttributeError):  # frozen (dataclasses.FrozenInstanceError)
        cfg.seed = 3  # type: ignore[misc]


def test_unknown_key_names_path_and_source(tmp_path: Path) -> None:
    bad = _write(tmp_path, "bad.yaml", "inner:\n  lrr: 1.0\n")
    with pytest.raises(KeyError, match=r"bad\.yaml.*inner\.lrr"):
        load_config(Schema, [bad])
    with pytest.raises(KeyError, match=r"inner\.lrr"):
        load_config(Schema, [], ["inner.lrr=2"])
    with pytest.raises(KeyError, match="nope"):
        load_config(Schema, [], ["nope=1"])


def test_bad_values_and_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seed"):
        load_config(Schema, [], ["seed=abc"])
    with pytest.raises(ValueError, match="mode"):
        load_config(Schema, [], ["mode=medium"])
    with pytest.raises(ValueError, match="key.path=value"):
        load_config(Schema, [], ["seed"])
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(Schema, [tmp_path / "missing.yaml"])
    lst = _write(tmp_path, "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(Schema, [lst])
    empty = _write(tmp_path, "empty.yaml", "")
    assert load_config(Schema, [empty]) == Schema()


def test_save_and_reload_round_trip(tmp_path: Path) -> None:
    cfg = load_config(
        Schema, [], ["mode=slow", "inner.lr=0.25", "items=[{pattern: a}, {pattern: b, weight: 3}]"]
    )
    path = save_config(cfg, tmp_path / "sub" / "cfg.yaml")
    assert path.is_file()
    assert "mode: slow" in path.read_text()  # enum values (what users type), not names
    assert load_config(Schema, [path]) == cfg
    assert config_from_dict(Schema, config_to_dict(cfg)) == cfg
    assert not [p for p in path.parent.iterdir() if p.name != "cfg.yaml"]  # no temp files left


def test_train_config_validation() -> None:
    with pytest.raises(ValueError, match="precision"):
        load_config(TrainConfig, [], ["train.precision=fp8"])
    with pytest.raises(ValueError, match="loss.ssi"):
        load_config(TrainConfig, [], ["loss.ssi=median"])
    with pytest.raises(KeyError, match="DatasetSpec|foo"):
        load_config(TrainConfig, [], ["data.train=[{name: synthetic, foo: 1}]"])
    cfg = load_config(TrainConfig, [], ["optim.groups=[{pattern: 'decoder.*', lr: 0.01}]"])
    assert cfg.optim.groups[0].lr == 0.01
    assert "precision: fp32" in config_to_yaml(cfg)


def _yaml_files() -> list[Path]:
    return sorted(CONFIGS.rglob("*.yaml")) if CONFIGS.is_dir() else []


# schema of each configs/<dir>; directories owned by other areas register theirs here
_SCHEMAS = {"train": TrainConfig}


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_yaml_loads_into_its_schema(path: Path) -> None:
    kind = path.relative_to(CONFIGS).parts[0]
    schema = _SCHEMAS.get(kind)
    if schema is None:
        pytest.skip(f"configs/{kind}/ has no schema registered in tests/test_config.py")
    cfg = load_config(schema, [path])
    assert isinstance(cfg, schema)
    if schema is TrainConfig:
        assert cfg.name == path.stem, "a training config's name should match its file name (run dir default)"
        assert cfg.data.train


def test_paper_recipes_encode_the_paper() -> None:
    for size in ("vits16", "vitb16", "vitl16"):
        sdt = load_config(TrainConfig, [CONFIGS / "train" / f"anydepth_{size}.yaml"])
        dpt = load_config(TrainConfig, [CONFIGS / "train" / f"dpt_{size}.yaml"])
        for cfg in (sdt, dpt):
            assert cfg.data.size == (768, 768) and cfg.train.epochs == 5
            assert cfg.optim.name == "adamw" and cfg.optim.lr == 1e-3
            assert cfg.schedule.power == 0.9 and cfg.schedule.warmup_epochs == 2
            assert cfg.loss.gradient_weight == 2.0 and cfg.model.freeze_encoder
            assert {d.name for d in cfg.data.train} == {
                "hypersim",
                "vkitti2",
                "blendedmvs",
                "irs",
                "tartanair",
            }
        assert sdt.model.preset == f"sdt_dinov3_{size}" and dpt.model.preset == f"dpt_dinov3_{size}"
        assert all("anydepth" in (d.split_file or "") for d in sdt.data.train)  # filtered 369K lists
        assert all("full" in (d.split_file or "") for d in dpt.data.train)  # unfiltered 584K lists
