"""The schema of ``edgecat.json``, checked whenever a bundle is opened.

Bundles are copied between machines and may come from someone else, so the manifest is treated as
untrusted input: types, required keys and the format version are checked before anything acts on
it, and an artifact's ``file`` must be a plain relative name inside the bundle (no ``..``, no
absolute path, no backslash), so no entry can make edgecat read or write outside the folder.
Unknown keys are kept (newer edgecat versions only ever add fields), so older and newer bundles of
the same format version both open.
"""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

FORMAT = "edgecat-bundle"
FORMAT_VERSION = 1

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, StringConstraints(min_length=1)]


def check_file_name(value: str) -> str:
    """A relative, normalised path inside the bundle ("model.onnx", "engines/x.engine"); else ValueError."""
    if not value or "\x00" in value or "\\" in value:
        raise ValueError("must be a plain file name inside the bundle (no backslash, not empty)")
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).drive or value.startswith("~"):
        raise ValueError(f"'{value}' is an absolute path; artifact files must be inside the bundle")
    parts = value.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"'{value}' leaves the bundle folder or is not normalised (no '..', '.', '//')")
    return value


class _Open(BaseModel):
    """Strict types for the keys edgecat reads; any other key is kept as it is."""

    model_config = ConfigDict(extra="allow", strict=True)


class InputSpec(_Open):
    shape: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=3, max_length=3)]
    name: Name = "image"
    layout: Literal["NHWC"] = "NHWC"
    dtype: str = "float32"
    range: Annotated[list[float], Field(min_length=2, max_length=2)] = [0.0, 255.0]
    color: Literal["RGB"] = "RGB"
    preprocessing: str = ""


class OutputSpec(_Open):
    name: Name = "probabilities"
    activation: str | None = None
    shape: list[Annotated[int, Field(gt=0)]] | None = None


class Artifact(_Open):
    file: str
    sha256: Sha256
    bytes: Annotated[int, Field(ge=0)] | None = None
    precision: str | None = None
    format: str | None = None

    @field_validator("file")
    @classmethod
    def _inside(cls, value: str) -> str:
        return check_file_name(value)


class Manifest(_Open):
    format: Literal["edgecat-bundle"]
    format_version: Annotated[int, Field(ge=1, le=FORMAT_VERSION)]
    name: Name | None = None
    backbone: str | None = None
    status: str | None = None
    input: InputSpec
    output: OutputSpec | None = None
    classes: Annotated[list[Name], Field(min_length=1)]
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    artifacts: dict[Name, Artifact]
    config: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    data: dict[str, Any] = {}
    versions: dict[str, Any] = {}


def first_problem(manifest: Any) -> str | None:
    """None when ``manifest`` is valid, else one line naming the first bad field."""
    try:
        Manifest.model_validate(manifest)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        err = errors[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"field '{field}': {msg}{more}"
    return None
