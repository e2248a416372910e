"""TaskAgent manifests: valid ones load, invalid ones name the field and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from clrk.errors import ManifestError
from clrk.manifest import InvalidManifest, TaskAgent, load_manifest

VALID = """
apiVersion: clrk.dev/v1
kind: TaskAgent
metadata:
  name: slack-thread-agent
spec:
  template:
    spec:
      command: ["python", "-m", "clrk.agents.slack_thread"]
      env:
        - {name: DATABASE_URL, value: "sqlite:///x.db"}
  maxConcurrent: 4
  partitionKey: "data.event.channel"
  onBusy: coalesce
  timeoutSeconds: 120
  retries: {max: 3, backoffSeconds: 2}
  state: {backend: sqlite}
"""


def test_valid_manifest_loads_with_defaults() -> None:
    agent = load_manifest(VALID)
    assert isinstance(agent, TaskAgent)
    assert agent.name == "slack-thread-agent"
    assert agent.spec.max_concurrent == 4
    assert agent.spec.on_busy == "coalesce"
    assert agent.spec.retries.max_retries == 3
    assert agent.spec.state is not None and agent.spec.state.backend == "sqlite"
    assert agent.spec.network == "host" and agent.spec.mode == "async"
    assert agent.env == {"DATABASE_URL": "sqlite:///x.db"}


def test_round_trip_through_wire_form() -> None:
    agent = load_manifest(VALID)
    again = load_manifest(agent.to_dict())
    assert again == agent
    assert agent.to_dict()["spec"]["maxConcurrent"] == 4


@pytest.mark.parametrize(
    ("old", "new", "field", "reason"),
    [
        ("maxConcurrent: 4", "maxConcurrent: 0", "spec.maxConcurrent", "must be >= 1"),
        ("maxConcurrent: 4", "maxConcurent: 4", "spec.maxConcurent", "unknown field"),
        ("onBusy: coalesce", "onBusy: drop", "spec.onBusy", "must be"),
        ("clrk.dev/v1", "clrk.dev/v2", "apiVersion", "clrk.dev/v1"),
        ("kind: TaskAgent", "kind: Pod", "kind", "TaskAgent"),
        ("name: slack-thread-agent", "name: Bad_Name", "metadata.name", "DNS label"),
        ("name: DATABASE_URL", "name: 1BAD", "spec.template.spec.env[0].name", "must match"),
        ('"data.event.channel"', '"data.["', "spec.partitionKey", "JMESPath"),
        ("timeoutSeconds: 120", "timeoutSeconds: 0", "spec.timeoutSeconds", "must be > 0"),
        ("{max: 3,", "{max: -1,", "spec.retries.max", "must be >= 0"),
        ("{backend: sqlite}", "{backend: redis}", "spec.state.backend", "sqlite"),
        (
            '["python", "-m", "clrk.agents.slack_thread"]',
            "[]",
            "spec.template.spec.command",
            "empty",
        ),
        # Not coerced: `maxConcurrent: true` must not quietly mean 1, nor "4" mean 4.
        ("maxConcurrent: 4", "maxConcurrent: true", "spec.maxConcurrent", "integer, got true"),
        ("maxConcurrent: 4", 'maxConcurrent: "4"', "spec.maxConcurrent", 'integer, got "4"'),
        ("maxConcurrent: 4", "maxConcurrent: 2.5", "spec.maxConcurrent", "integer, got 2.5"),
        ("timeoutSeconds: 120", "timeoutSeconds: yes", "spec.timeoutSeconds", "number, got true"),
        ("timeoutSeconds: 120", 'timeoutSeconds: "9"', "spec.timeoutSeconds", 'number, got "9"'),
        ("{max: 3,", "{max: true,", "spec.retries.max", "integer, got true"),
        ("backoffSeconds: 2}", "backoffSeconds: false}", "spec.retries.backoffSeconds", "number"),
    ],
)
def test_invalid_manifest_names_field_and_reason(
    old: str, new: str, field: str, reason: str
) -> None:
    assert old in VALID
    with pytest.raises(ManifestError) as info:
        load_manifest(VALID.replace(old, new, 1))
    assert info.value.field == field
    assert reason in info.value.reason
    assert str(info.value).startswith(f"{field}: ")


def test_missing_field_is_reported_as_required() -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(
            VALID.replace("  maxConcurrent: 4\n", "").replace("  template:", "  templat:")
        )
    assert info.value.field in ("spec.template", "spec.templat")


@pytest.mark.parametrize("text", ["- a list", "a: [", "just text"])
def test_not_a_manifest_document(text: str) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(text)
    assert info.value.field == "<document>"


def test_relative_working_dir_resolves_against_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "agent"
    folder.mkdir()
    path = folder / "agent.yaml"
    path.write_text(VALID.replace("      env:", "      workingDir: .\n      env:"))
    agent = load_manifest(path)
    assert agent.spec.template.spec.working_dir == str(folder.resolve())
    assert load_manifest(str(path)).spec.template.spec.working_dir == str(folder.resolve())


def test_unreadable_file_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "missing.yaml")
    assert "cannot read" in info.value.reason


def test_example_echo_manifest_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "echo" / "agent.yaml"
    agent = load_manifest(example)
    assert agent.name == "echo"


def test_numbers_may_be_ints_or_floats_where_they_are_seconds() -> None:
    agent = load_manifest(
        VALID.replace("timeoutSeconds: 120", "timeoutSeconds: 1.5").replace(
            "backoffSeconds: 2}", "backoffSeconds: 0.25}"
        )
    )
    assert agent.spec.timeout_seconds == 1.5 and agent.spec.retries.backoff_seconds == 0.25
    assert load_manifest(VALID).spec.timeout_seconds == 120


def test_every_invalid_field_is_reported() -> None:
    text = (
        VALID.replace("name: DATABASE_URL", "name: 1BAD").replace("onBusy: coalesce", "onBusy: x")
        + "  network: nope\n"
    )
    with pytest.raises(InvalidManifest) as info:
        load_manifest(text)
    fields = [problem.field for problem in info.value.problems]
    assert fields == ["spec.template.spec.env[0].name", "spec.onBusy", "spec.network"]
    lines = str(info.value).splitlines()
    assert [line.split(":")[0] for line in lines] == fields
    assert info.value.field == fields[0]  # still usable as a plain ManifestError


def test_working_dir_must_exist_when_applied(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(VALID.replace("      env:", "      workingDir: ./missing\n      env:"))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.field == "spec.template.spec.workingDir"
    assert f"{tmp_path / 'missing'} does not exist" in info.value.reason
    (tmp_path / "missing").write_text("a file")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert "not a directory" in info.value.reason


def test_stored_manifest_with_a_since_removed_working_dir_still_loads(tmp_path: Path) -> None:
    folder = tmp_path / "agent"
    folder.mkdir()
    path = folder / "agent.yaml"
    path.write_text(VALID.replace("      env:", "      workingDir: .\n      env:"))
    stored = load_manifest(path).to_dict()
    path.unlink()
    folder.rmdir()
    # The inbox loads stored manifests as data: listing and deleting must keep working.
    assert load_manifest(stored).spec.template.spec.working_dir == str(folder.resolve())


def test_a_directory_is_not_a_manifest_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path)
    assert info.value.field == "<file>"
    assert "is a directory" in info.value.reason


def test_a_file_that_is_not_text_is_named(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.field == "<file>" and "is not UTF-8 text" in info.value.reason


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("a: [1,\nb: 2\n", "expected ',' or ']'"),
        ("a: 1\n---\nb: 2\n", "expected a single document in the stream"),
    ],
)
def test_yaml_errors_are_one_line_with_where(text: str, says: str) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(text)
    assert "\n" not in str(info.value)
    assert says in info.value.reason and "(line " in info.value.reason


def test_a_billion_laughs_is_refused_before_it_is_expanded() -> None:
    """Bug (found by a helper): `clrk up --manifest` on YAML aliases nested nine deep took
    8 GB and more, expanding them while validating."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = VALID + "\n".join(lines).replace("a0:", "x-a0:") + "\n"
    with pytest.raises(ManifestError) as info:
        load_manifest(text)
    assert info.value.field == "<document>" and "more than 10000 values" in info.value.reason


def test_deep_nesting_is_one_error_not_a_traceback() -> None:
    with pytest.raises(ManifestError, match="nested too deeply"):
        load_manifest("x: " + "[" * 5000 + "]" * 5000 + "\n")
