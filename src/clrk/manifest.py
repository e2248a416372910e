"""The TaskAgent manifest: what an agent runs and how its events are scheduled.

A manifest is YAML in the Kubernetes style (``apiVersion``, ``kind``, ``metadata``, ``spec``).
Validation happens here, once, so that the runtime can trust every field it reads. An invalid
manifest raises :class:`~clrk.errors.ManifestError` naming the dotted field path and the
reason (``spec.maxConcurrent: must be >= 1``), because "validation error" alone leaves an
operator guessing which of forty lines is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import jmespath
import jmespath.exceptions
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from clrk.errors import ManifestError

API_VERSION = "clrk.dev/v1"
KIND = "TaskAgent"
# DNS-1123 label, as Kubernetes names: the name ends up in paths and headers.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

OnBusy = Literal["enqueue", "coalesce", "reject", "interrupt"]


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

    @field_validator("command")
    @classmethod
    def _no_empty_args(cls, value: list[str]) -> list[str]:
        if not value[0]:
            raise ValueError("the program name must not be empty")
        return value


class PodSpec(_Model):
    spec: Container


class Retries(_Model):
    max_retries: int = Field(default=3, ge=0, le=100, alias="max")
    backoff_seconds: float = Field(default=2.0, ge=0, le=3600)


class StateSpec(_Model):
    backend: Literal["sqlite"]


class Metadata(_Model):
    name: str = Field(pattern=NAME_PATTERN)


class TaskAgentSpec(_Model):
    template: PodSpec
    max_concurrent: int = Field(default=1, ge=1, le=1000)
    # Default: every event is its own partition (no ordering between events).
    partition_key: str = "id"
    on_busy: OnBusy = "enqueue"
    timeout_seconds: float = Field(default=120, gt=0, le=86400)
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
    dispatcher was started.
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
            raise ManifestError("<document>", f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError("<document>", "must be a mapping with apiVersion, kind, metadata, spec")
    try:
        agent = TaskAgent.model_validate(data)
    except ValidationError as exc:
        raise _to_manifest_error(exc) from exc
    return _resolve_working_dir(agent, base)


def _read(source: str | os.PathLike[str]) -> tuple[str, Path | None]:
    if isinstance(source, os.PathLike) or (
        "\n" not in source and source.endswith((".yaml", ".yml", ".json"))
    ):
        path = Path(source)
        try:
            return path.read_text(encoding="utf-8"), path
        except OSError as exc:
            raise ManifestError("<file>", f"cannot read {path}: {exc.strerror}") from exc
    return source, None


def _resolve_working_dir(agent: TaskAgent, base: Path) -> TaskAgent:
    container = agent.spec.template.spec
    if container.working_dir is None or os.path.isabs(container.working_dir):
        return agent
    resolved = str((base / container.working_dir).resolve())
    container = container.model_copy(update={"working_dir": resolved})
    template = agent.spec.template.model_copy(update={"spec": container})
    spec = agent.spec.model_copy(update={"template": template})
    return agent.model_copy(update={"spec": spec})


def _to_manifest_error(exc: ValidationError) -> ManifestError:
    """Report the first problem with its dotted path, in words an operator can act on."""
    error = exc.errors()[0]
    field = _dotted(error["loc"])
    ctx = error.get("ctx") or {}
    kind = error["type"]
    reasons = {
        "missing": "required",
        "extra_forbidden": "unknown field",
        "greater_than_equal": f"must be >= {ctx.get('ge')}",
        "greater_than": f"must be > {ctx.get('gt')}",
        "less_than_equal": f"must be <= {ctx.get('le')}",
        "too_short": "must not be empty",
        "literal_error": f"must be {ctx.get('expected')}",
        "string_pattern_mismatch": f"must match {ctx.get('pattern')}",
    }
    reason = reasons.get(kind)
    if reason is None:
        reason = str(error["msg"]).removeprefix("Value error, ")
        reason = reason[:1].lower() + reason[1:]
    if field == "metadata.name" and kind == "string_pattern_mismatch":
        reason = "must be lowercase letters, digits and '-' (at most 63), as a DNS label"
    return ManifestError(field or "<document>", reason)


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
