"""Training configuration: defaults, a YAML/TOML config file, then command-line flags on top."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecat.errors import EdgecatError


@dataclass
class TrainConfig:
    """Every number of the schedule; see ``edgecat train --help`` for what each one means."""

    data: str = ""
    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"
    img_size: int | None = None
    batch_size: int = 32
    #: "two-stage" | "full"; None picks two-stage, or full when weights are none
    schedule: str | None = None
    stage1_epochs: int = 3
    stage1_lr: float = 1e-3
    stage2_epochs: int = 3
    stage2_lr: float = 1e-5
    unfreeze: int = 100
    full_epochs: int = 6
    full_lr: float = 1e-3
    head: str = "gap"
    dropout: float = 0.2
    augment: bool = True
    #: "auto" (when stage 1 has no augmentation) | "on" | "off"
    feature_cache: str = "auto"
    #: augmented views of each training image whose frozen-layer outputs the feature cache keeps
    #: (epoch e trains on view e mod N, so N >= epochs sees what uncached training sees)
    cache_views: int = 3
    val_split: float = 0.2
    seed: int = 42
    patience: int = 3
    #: full schedule: training batches used to recompute BatchNormalization statistics before each validation (0: off)
    bn_recalibrate: int = 16
    threshold: float = 0.5
    out: str | None = None
    name: str | None = None
    #: "auto" (on when a GPU is present) | "on" | "off"
    mixed_precision: str = "auto"
    tensorboard: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("extra")
        return d

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)} - {"extra"}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = cls.field_names()
        norm = {str(k).replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(norm) - names)
        if unknown:
            raise EdgecatError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**norm)

    def merged(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with the non-None ``overrides`` applied (flags given on the command line)."""
        values = self.to_dict()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return TrainConfig.from_dict(values)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml), TOML (.toml) or JSON file of training settings.

    A ``[train]`` table / ``train:`` key is used when present, so one file can hold other sections.
    """
    path = Path(path)
    if not path.exists():
        raise EdgecatError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise EdgecatError(f"config file must be .yaml, .yml, .toml or .json: {path}")
    except EdgecatError:
        raise
    except Exception as exc:  # noqa: BLE001 - parser errors of three libraries
        raise EdgecatError(f"cannot parse config file {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise EdgecatError(f"config file {path} must hold a mapping of settings")
    if isinstance(data.get("train"), dict):
        data = data["train"]
    return data
