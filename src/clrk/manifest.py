"""The TaskAgent manifest: what an agent runs and how its events are scheduled.

A manifest is YAML in the Kubernetes style (``apiVersion``, ``kind``, ``metadata``, ``spec``).
Validation happens here, once, so that the runtime can trust every field it reads. An invalid
manifest raises :class:`~clrk.errors.ManifestError` naming the dotted field path and the
reason (``spec.maxConcurrent: must be >= 1``), because "validation error" alone leaves an
operator guessing which of forty lines is wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import jmespath
import jmespath.exceptions
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel

from clrk.errors import ManifestError

API_VERSION = "clrk.dev/v1"
KIND = "TaskAgent"
# DNS-1123 label, as Kubernetes names: the name ends up in paths and headers.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

OnBusy = Literal["enqueue", "coalesce", "reject", "interrupt"]
# Values a manifest may hold, aliases expanded; a real one holds a few dozen.
MAX_VALUES = 10_000
# Validation context key: the directory a relative ``workingDir`` is resolved against, and
# whether that directory must exist (true when a user's file or text is loaded).
_BASE = "base"
_CHECK_DIRS = "check_dirs"


class InvalidManifest(ManifestError):
    """Every problem found in one manifest; ``field``/``reason`` are the first one's.

    Reporting only the first error sends an operator round the apply-fix loop once per
    mistake; ``problems`` lets the CLI print them all, one line each.
    """

    def __init__(self, problems: list[ManifestError]) -> None:
        self.problems = tuple(problems)
        super().__init__(problems[0].field, problems[0].reason)
        self.args = ("\n".join(str(problem) for problem in self.problems),)


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors (typos)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class EnvVar(_Model):
    name: str = Field(pattern=ENV_NAME_PATTERN)
    value: str


class Container(_Model):
    command: list[str] = Field(min_length=1)
    env: list[EnvVar] = Field(default_factory=list)
    # Read-only inside the sandbox and the run's working directory (default: the fresh /tmp).
    working_dir: str | None = None

    @field_validator("working_dir")
    @classmethod
    def _resolve_dir(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Make ``workingDir`` absolute and, for a user's manifest, check it is there.

        A missing directory found only at run time dead-letters the run with a reason that
        blames the program; at apply time it is one line naming this field. Stored
        manifests are not re-checked: they must still load to be listed or deleted.
        """
        if value is None:
            return None
        context = info.context or {}
        if os.path.isabs(value):
            path = Path(value)
        else:
            path = (Path(context.get(_BASE) or Path.cwd()) / value).resolve()
        if context.get(_CHECK_DIRS):
            if not path.exists():
                raise ValueError(f"directory {path} does not exist")
            if not path.is_dir():
                raise ValueError(f"{path} is not a directory")
        return str(path)

    @field_validator("command")
    @classmethod
    def _no_empty_args(cls, value: list[str]) -> list[str]:
        if not value[0]:
            raise ValueError("the program name must not be empty")
        return value


class PodSpec(_Model):
    spec: Container


class Retries(_Model):
    # Strict: YAML's `max: yes` or `max: "3"` is a mistake, not 1 or 3.
    max_retries: StrictInt = Field(default=3, ge=0, le=100, alias="max")
    backoff_seconds: float = Field(default=2.0, ge=0, le=3600, strict=True)


class StateSpec(_Model):
    backend: Literal["sqlite"]


class Metadata(_Model):
    name: str = Field(pattern=NAME_PATTERN)


class TaskAgentSpec(_Model):
    template: PodSpec
    # Strict: `maxConcurrent: true` must not quietly mean 1 (nor "4" mean 4).
    max_concurrent: StrictInt = Field(default=1, ge=1, le=1000)
    # Default: every event is its own partition (no ordering between events).
    partition_key: str = "id"
    on_busy: OnBusy = "enqueue"
    timeout_seconds: float = Field(default=120, gt=0, le=86400, strict=True)
    retries: Retries = Field(default_factory=Retries)
    state: StateSpec | None = None
    network: Literal["host", "none"] = "host"
    mode: Literal["async", "sync"] = "async"

    @field_validator("partition_key")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            jmespath.compile(value)
        except jmespath.exceptions.JMESPathError as exc:
            first_line = str(exc).splitlines()[0].rstrip(":")
            raise ValueError(f"not a JMESPath expression ({first_line})") from exc
        return value


class TaskAgent(_Model):
    api_version: Literal["clrk.dev/v1"]
    kind: Literal["TaskAgent"]
    metadata: Metadata
    spec: TaskAgentSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def env(self) -> dict[str, str]:
        return {var.name: var.value for var in self.spec.template.spec.env}

    def to_dict(self) -> dict[str, Any]:
        """The manifest as plain JSON-able data, in the wire (camelCase) spelling."""
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


def load_manifest(source: str | os.PathLike[str] | dict[str, Any]) -> TaskAgent:
    """Parse and validate a manifest from a path, YAML/JSON text, or already-parsed data.

    A relative ``workingDir`` is resolved against the manifest file's directory (or the
    current directory for text), so the stored manifest never depends on where the
    dispatcher was started. For a path or text (what a user applies) it must exist; parsed
    data (a stored manifest) is not re-checked. Raises :class:`InvalidManifest` naming
    every invalid field, or :class:`ManifestError` when there is no document to validate.
    """
    base = Path.cwd()
    if isinstance(source, dict):
        data: Any = source
    else:
        text, path = _read(source)
        if path is not None:
            base = path.parent.resolve()
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ManifestError("<document>", f"not valid YAML: {_yaml_problem(exc)}") from exc
        except RecursionError as exc:
            raise ManifestError("<document>", "nested too deeply to be a manifest") from exc
    if not isinstance(data, dict):
        raise ManifestError("<document>", "must be a mapping with apiVersion, kind, metadata, spec")
    try:
        too_big = _expanded_size(data) > MAX_VALUES
    except RecursionError as exc:
        raise ManifestError("<document>", "nested too deeply to be a manifest") from exc
    if too_big:
        # YAML aliases can make a few lines stand for billions of values ("billion laughs");
        # validating them would take all the memory there is.
        raise ManifestError("<document>", f"holds more than {MAX_VALUES} values once expanded")
    context = {_BASE: base, _CHECK_DIRS: not isinstance(source, dict)}
    try:
        return TaskAgent.model_validate(data, context=context)
    except ValidationError as exc:
        raise _to_manifest_error(exc) from exc


def _read(source: str | os.PathLike[str]) -> tuple[str, Path | None]:
    if isinstance(source, os.PathLike) or (
        "\n" not in source and source.endswith((".yaml", ".yml", ".json"))
    ):
        path = Path(source)
        if path.is_dir():
            raise ManifestError("<file>", f"{path} is a directory, not a manifest file")
        try:
            return path.read_text(encoding="utf-8"), path
        except UnicodeDecodeError as exc:
            raise ManifestError("<file>", f"{path} is not UTF-8 text ({exc.reason})") from exc
        except OSError as exc:
            raise ManifestError("<file>", f"cannot read {path}: {exc.strerror}") from exc
    return source, None


def _to_manifest_error(exc: ValidationError) -> InvalidManifest:
    """Every problem with its dotted path, in words an operator can act on."""
    problems: list[ManifestError] = []
    for error in exc.errors():
        problem = _problem(error)
        if all(str(problem) != str(seen) for seen in problems):
            problems.append(problem)
    return InvalidManifest(problems)


def _problem(error: Any) -> ManifestError:
    field = _dotted(error["loc"])
    ctx = error.get("ctx") or {}
    kind = error["type"]
    got = _show(error.get("input"))
    reasons = {
        "missing": "required",
        "extra_forbidden": "unknown field",
        "greater_than_equal": f"must be >= {ctx.get('ge')}",
        "greater_than": f"must be > {ctx.get('gt')}",
        "less_than_equal": f"must be <= {ctx.get('le')}",
        "too_short": "must not be empty",
        "literal_error": f"must be {ctx.get('expected')}",
        "string_pattern_mismatch": f"must match {ctx.get('pattern')}",
        "int_type": f"must be an integer, got {got}",
        "float_type": f"must be a number, got {got}",
        "string_type": f"must be a string, got {got}",
    }
    reason = reasons.get(kind)
    if reason is None:
        reason = str(error["msg"]).removeprefix("Value error, ")
        reason = reason[:1].lower() + reason[1:]
    if field == "metadata.name" and kind == "string_pattern_mismatch":
        reason = "must be lowercase letters, digits and '-' (at most 63), as a DNS label"
    return ManifestError(field or "<document>", reason)


def _expanded_size(data: Any) -> int:
    """How many values ``data`` holds with every shared (aliased) part counted each time."""
    sizes: dict[int, int] = {}

    def size(value: Any) -> int:
        if not isinstance(value, dict | list):
            return 1
        known = sizes.get(id(value))
        if known is None:
            sizes[id(value)] = 1  # a cycle (an alias to its own parent) counts once
            children = value.values() if isinstance(value, dict) else value
            known = sizes[id(value)] = 1 + sum(size(child) for child in children)
        return known

    return size(data)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: what is wrong, and where."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = ", ".join(part for part in (exc.context, exc.problem) if part) or "syntax error"
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def _show(value: Any) -> str:
    """A value as it would be written in the manifest: ``true``, ``"4"``, ``2.5``."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
