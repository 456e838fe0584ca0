"""`dpserve` as a user runs it: timelines, audits, corrupt logs, request validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.support.paths import REPO

RECORDED = REPO / "examples" / "recorded-job"
runner = CliRunner()


def test_events_prints_a_readable_timeline() -> None:
    result = runner.invoke(app, ["events", str(RECORDED), "--verify"])
    assert result.exit_code == 0, result.output
    for text in ("INITIALIZED", "INTERRUPTED", "RESUMED", "COMPLETE", "verified"):
        assert text in result.output
    assert "status COMPLETE  attempt 2" in result.output


def test_events_json_round_trips_the_log() -> None:
    result = runner.invoke(app, ["events", str(RECORDED / "events.jsonl"), "--json", "--verify"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    stored = [json.loads(line) for line in (RECORDED / "events.jsonl").read_text().splitlines()]
    assert payload["events"] == stored
    assert payload["status"] == "COMPLETE"
    assert payload["audit"] == {"ok": True, "problems": []}


def test_a_corrupt_log_names_the_line(tmp_path: Path) -> None:
    lines = (RECORDED / "events.jsonl").read_text().splitlines(keepends=True)
    lines[4] = lines[4].replace("stage", "stagE", 1)
    (tmp_path / "events.jsonl").write_text("".join(lines))
    result = runner.invoke(app, ["events", str(tmp_path)])
    assert result.exit_code == 2
    assert "line 5" in result.output


def test_an_illegal_transition_fails_verify(tmp_path: Path) -> None:
    from events.store import EventStore  # noqa: PLC0415 - keeps the test self-contained

    log = EventStore.on_disk(tmp_path).open("bad")
    log.append(type="INITIALIZED", status="INITIALIZED", attempt=1, data={})
    log.append(type="COMPLETE", status="COMPLETE", attempt=1, data={})  # skipped every stage
    job = tmp_path / "jobs" / "bad"
    plain = runner.invoke(app, ["events", str(job)])
    assert plain.exit_code == 0  # the chain is intact; only --verify checks transitions
    checked = runner.invoke(app, ["events", str(job), "--verify"])
    assert checked.exit_code == 1
    assert "seq 2: COMPLETE is not allowed from INITIALIZED" in checked.output


def test_a_torn_tail_is_reported_and_ignored(tmp_path: Path) -> None:
    shutil.copy(RECORDED / "events.jsonl", tmp_path / "events.jsonl")
    with (tmp_path / "events.jsonl").open("a") as fh:
        fh.write('{"attempt":2,"data":{"mess')
    result = runner.invoke(app, ["events", str(tmp_path), "--verify"])
    assert result.exit_code == 0
    assert "torn last line" in result.output


def test_events_on_a_missing_path_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["events", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "no such file" in result.output


@pytest.mark.parametrize(
    "example", sorted((REPO / "examples").glob("*.json")), ids=lambda p: p.name
)
def test_validate_accepts_the_bundled_examples(example: Path) -> None:
    result = runner.invoke(app, ["validate", str(example)])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["model_type"]
    assert "hf_xxx" not in result.stdout  # tokens are masked even when they are placeholders


def test_validate_lists_every_problem_without_leaking_secrets(tmp_path: Path) -> None:
    secret = "hf_DoNotPrintThisTokenEver1234567"
    request = {
        "input": {
            "model_type": "wan14b_i2v",
            "dataset": {"type": "videos"},
            "output": {"method": "huggingface", "huggingface": {"token": secret}},
            "api_keys": {"gemini_api_key": "AIza-not-a-real-key-but-secret"},
        }
    }
    path = tmp_path / "req.json"
    path.write_text(json.dumps(request))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "dataset.videos_url" in result.output
    assert secret not in result.output
    assert "AIza-not-a-real-key-but-secret" not in result.output


def test_validate_refuses_a_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "req.json"
    path.write_text("{not json")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "not valid JSON" in result.output


@pytest.mark.parametrize(
    "text",
    [
        '{"model_type": "qwen", "training": {"epochs": ' + "9" * 5000 + "}}",  # int-string limit
        "[" * 5000 + "]" * 5000,  # deeper than the parser's recursion limit
    ],
)
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_hostile_json_gets_an_error_not_a_traceback(
    tmp_path: Path, text: str, command: str
) -> None:
    path = tmp_path / "req.json"
    path.write_text(text)
    result = runner.invoke(app, [command, str(path)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "not a JSON request this tool reads" in result.output
