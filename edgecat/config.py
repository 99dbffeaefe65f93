"""Training configuration: defaults, a YAML/TOML config file, then command-line flags on top."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

from edgecat.errors import EdgecatError, first_line

Count = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]
Rate = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


# A pydantic dataclass: the fields, defaults and ``dataclasses`` behaviour of before, plus types
# and ranges checked the moment a config is made, i.e. before any image is read or model built.
@dataclass(config=ConfigDict(extra="forbid"))
class TrainConfig:
    """Every number of the schedule; see ``edgecat train --help`` for what each one means."""

    data: str = ""
    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"
    img_size: Optional[Annotated[int, Field(ge=16)]] = None  # evaluated by pydantic on 3.10
    batch_size: Positive = 32
    #: "two-stage" | "full"; None picks two-stage, or full when weights are none
    schedule: Optional[Literal["two-stage", "full"]] = None
    stage1_epochs: Count = 3
    stage1_lr: Rate = 1e-3
    stage2_epochs: Count = 3
    stage2_lr: Rate = 1e-5
    #: base layers unfrozen in stage 2; None: the backbone's own depth (edgecat.models.BACKBONES)
    unfreeze: Optional[Count] = None
    #: epochs of the full schedule; None: stage1_epochs + stage2_epochs (6 by default), so a run
    #: that switches to full (``weights="none"``) lasts as long as the stages it was given
    full_epochs: Optional[Count] = None
    full_lr: Rate = 1e-3
    head: Literal["gap", "dense256"] = "gap"
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.2
    augment: bool = True
    #: "auto" | "on": both stages train on cached outputs of the frozen layers; "off": images every epoch
    feature_cache: Literal["auto", "on", "off"] = "auto"
    #: augmented views of each training image whose frozen-layer outputs the feature cache keeps
    #: (epoch e trains on view e mod N, so N >= epochs sees what uncached training sees)
    cache_views: Positive = 3
    val_split: Annotated[float, Field(gt=0, lt=1)] = 0.2
    seed: int = 42
    patience: Count = 3
    #: full schedule: training batches used to recompute BatchNormalization statistics before each validation (0: off)
    bn_recalibrate: Count = 16
    threshold: Fraction = 0.5
    out: Optional[str] = None
    name: Optional[str] = None
    #: "auto" (on when a GPU is present) | "on" | "off"
    mixed_precision: Literal["auto", "on", "off"] = "auto"
    tensorboard: bool = True
    #: also write model.h5 (legacy Keras HDF5 that loads without edgecat) at the end
    save_h5: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build and validate; a wrong type or range is one line naming the setting."""
        names = cls.field_names()
        norm = {str(k).replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(norm) - names)
        if unknown:
            raise EdgecatError(f"unknown training setting(s): {', '.join(unknown)} "
                               f"(known: {', '.join(sorted(names))})")
        try:
            return cls(**norm)
        except ValidationError as exc:
            raise EdgecatError(describe(exc)) from None

    def merged(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with the non-None ``overrides`` applied (flags given on the command line)."""
        values = self.to_dict()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return TrainConfig.from_dict(values)


def describe(exc: ValidationError) -> str:
    """pydantic's errors as one line: ``invalid training setting batch_size='16x': ...``."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err.get("loc", ())) or "?"
        msg = err.get("msg", "invalid").replace("Input should be", "should be")
        parts.append(f"{field}={err.get('input')!r}: {msg}")
    return "invalid training setting " + "; ".join(parts)


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
    except Exception as exc:  # parser errors of three libraries
        raise EdgecatError(f"cannot parse config file {path}: {first_line(exc)}") from exc
    if not isinstance(data, dict):
        raise EdgecatError(f"config file {path} must hold a mapping of settings")
    if isinstance(data.get("train"), dict):
        data = data["train"]
    return data
