"""Fuzzed requests through the worker's validation path and through the whole handler.

Hypothesis builds valid, near-valid and garbage request bodies (wrong types, missing fields,
huge and unicode strings, nested junk, negative numbers, unknown model types, keys the service
owns passed through `training`), each with a canary in every secret field. Every body must end
in either a valid job or a FAILED response whose string error names a field, with no traceback
and no secret in anything the caller sees.

The bulk goes through `validate` (fast); a few hundred go through `handle` itself, where a
valid request's dataset URL is a loopback 404 so it fails at once in the dataset stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestrator.catalogue import ALL_MODEL_TYPES, CATALOGUE
from orchestrator.progress import ProgressReporter
from orchestrator.request import RequestError, TrainingRequest
from orchestrator.settings import Settings
from orchestrator.worker import WorkerOptions, handle, validate
from stages.dataset.limits import DownloadLimits
from stages.errors import ConfigError
from stages.training.owned_keys import OWNED_ADAPTER, OWNED_MODEL, OWNED_OPTIMIZER, OWNED_TOP_LEVEL
from tests.support.canary import CANARIES, find, scan, with_canaries
from tests.support.dataserver import DataServer
from tests.support.fakehub import FakeHub

VALIDATE_EXAMPLES = 1200
HANDLE_EXAMPLES = 300
PLACEHOLDER_URL = "http://127.0.0.1:9/missing.zip"  # replaced by the 404 server in handle()
# A field path as the errors print it: dotted names, [index], unicode-escaped user keys.
FIELD = re.compile(r"^[A-Za-z_][\w.\[\]\\-]*")
TOP_LEVEL = ("model_type", "dataset", "training", "api_keys", "output", "resume", "input")

# --- strategies --------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.text(alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x10FFFF), max_size=10),
    st.sampled_from(["", " ", "\x00", "\n", "../../etc/passwd", "${HOME}", "{0}", "%s", "***"]),
    st.builds(lambda n: "x" * n, st.integers(min_value=1_000, max_value=20_000)),
)
junk = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _int_or_none(lo: int, hi: int) -> st.SearchStrategy[int | None]:
    return st.none() | st.integers(min_value=lo, max_value=hi)


@st.composite
def valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A request the schema accepts (before the canaries are added)."""
    model_type = draw(st.sampled_from(list(ALL_MODEL_TYPES)))
    entry = CATALOGUE[model_type]
    dataset: dict[str, Any] = {"type": "precaptioned"}
    fields = [
        name
        for name, ok in (("images_url", entry.trains_images), ("videos_url", entry.trains_videos))
        if ok
    ]
    for name in draw(st.lists(st.sampled_from(fields), min_size=1, unique=True)):
        dataset[name] = PLACEHOLDER_URL
    if draw(st.booleans()):
        # Any printable text: control characters are refused (they would reach every caption).
        word = draw(
            st.text(st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1, max_size=20)
        ).strip()
        dataset["trigger_word"] = (word.splitlines() or ["ohwx"])[0].strip() or "ohwx"
    if draw(st.booleans()):
        dataset["image_repeats"] = draw(st.integers(1, 10_000))
    training: dict[str, Any] = {}
    options: dict[str, st.SearchStrategy[Any]] = {
        "epochs": _int_or_none(1, 1000),
        "learning_rate": st.floats(1e-8, 1.0),
        "batch_size": _int_or_none(1, 8),
        "gradient_accumulation_steps": _int_or_none(1, 8),
        "warmup_steps": _int_or_none(0, 1000),
        "lora_rank": _int_or_none(1, 128),
        "lora_dtype": st.sampled_from(["float32", "float16", "bfloat16"]),
        "resolution": _int_or_none(16, 2048),
        "save_every_n_epochs": _int_or_none(1, 100),
        "optimizer_type": st.sampled_from(["adamw_optimi", "adamw8bit", "Prodigy"]),
        "activation_checkpointing": st.sampled_from([True, False, "unsloth"]),
        "max_steps": st.integers(1, 10_000),  # a known passthrough key
        "model": st.just({"transformer_dtype": "float8"}),
        "adapter": st.just({"dropout": 0.05}),
    }
    for key in draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=5)):
        training[key] = draw(options[key])
    method = draw(st.sampled_from(["auto", "huggingface", "s3", "local"]))
    output: dict[str, Any] = {"method": method}
    if method == "huggingface" and draw(st.booleans()):
        output["huggingface"] = {"repo_id": "me/fuzz-lora", "private": draw(st.booleans())}
    if method == "local":
        output["local"] = {"path": "LOCAL_OUT"}  # replaced with a folder under tmp
    body: dict[str, Any] = {"model_type": model_type, "dataset": dataset, "output": output}
    if training:
        body["training"] = training
    return body


# Keys the service owns, anywhere a user can pass them through.
_UNSAFE: list[tuple[tuple[str, ...], str]] = [
    *((("training",), k) for k in OWNED_TOP_LEVEL),
    *((("training", "model"), k) for k in OWNED_MODEL),
    *((("training", "adapter"), k) for k in OWNED_ADAPTER),
    *((("training", "optimizer"), k) for k in OWNED_OPTIMIZER),
]
# Where a mutation may strike, and a few values that are wrong for each in an interesting way.
_TARGETS: list[tuple[str, ...]] = [
    ("model_type",),
    ("dataset",),
    ("dataset", "type"),
    ("dataset", "images_url"),
    ("dataset", "videos_url"),
    ("dataset", "trigger_word"),
    ("dataset", "image_repeats"),
    ("dataset", "video_repeats"),
    ("training",),
    ("training", "epochs"),
    ("training", "learning_rate"),
    ("training", "lora_rank"),
    ("training", "optimizer_betas"),
    ("training", "frame_buckets"),
    ("training", "video_clip_mode"),
    ("training", "activation_checkpointing"),
    ("training", "model"),
    ("api_keys",),
    ("api_keys", "huggingface_token"),
    ("api_keys", "gemini_api_key"),
    ("output",),
    ("output", "method"),
    ("output", "huggingface"),
    ("output", "huggingface", "token"),
    ("output", "huggingface", "repo_id"),
    ("output", "s3", "bucket"),
    ("output", "s3", "endpoint_url"),
    ("output", "local", "path"),
    ("resume",),
]
bad_values = st.one_of(
    junk,
    st.integers(max_value=-1),
    st.sampled_from(
        [
            "wan13b",
            "FLUX",
            "file:///etc/passwd",
            "ftp://h/x.zip",
            "javascript:alert(1)",
            "http://",
            "http://[::1",
            "hf://models/x",
            "hf://datasets/",
            "http://user:" + CANARIES["output.s3.secret_key"] + "@h/x.zip",
            "line\nbreak",
            "tok en",
            "\u202e\u0000\ufeff",
            [0.9],
            [0.9, 1.5],
            [0, 5000],
            "multiple_overlapping",
            float("inf"),
            float("nan"),
            2**64,
            "100",
            1.5,
            {"$ref": "#"},
        ]
    ),
)


def _set(body: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node: Any = body
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def _delete(body: dict[str, Any], path: tuple[str, ...]) -> None:
    node: Any = body
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(path[-1], None)


@st.composite
def near_valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body with one to three things wrong with it."""
    body = draw(valid_bodies())
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["set", "delete", "unsafe", "unknown", "secret"]))
        if kind == "set":
            _set(body, draw(st.sampled_from(_TARGETS)), draw(bad_values))
        elif kind == "delete":
            _delete(body, draw(st.sampled_from(_TARGETS)))
        elif kind == "unsafe":
            where, key = draw(st.sampled_from(_UNSAFE))
            _set(body, (*where, key), draw(st.sampled_from(["/tmp/evil", "../../x", 1, {}])))
        elif kind == "unknown":
            section = draw(st.sampled_from([(), ("dataset",), ("output",), ("api_keys",)]))
            name = draw(st.sampled_from(["epoch", "tokn", "images_ur", "typ", "x" * 300, "ü"]))
            _set(body, (*section, name), draw(junk))
        else:  # a credential under a passthrough key that is not a documented secret
            _set(body, ("training", "monitoring"), {"wandb_api_key": draw(junk)})
    return body


garbage_bodies = st.one_of(
    junk,
    st.dictionaries(st.sampled_from(TOP_LEVEL), junk, max_size=6),
    st.builds(lambda inner: {"input": inner}, junk),
)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, Any]:
    """(kind, body) with canaries in every secret field where the body has room for them."""
    kind = draw(st.sampled_from(["valid", "near", "near", "garbage"]))
    if kind == "garbage":
        raw = draw(garbage_bodies)
        if isinstance(raw, dict) and draw(st.booleans()):
            # A section that is not an object has no room for a canary: leave it as it is.
            with contextlib.suppress(AttributeError, TypeError):
                raw = with_canaries(raw)
        return kind, raw
    body = draw(valid_bodies() if kind == "valid" else near_valid_bodies())
    with contextlib.suppress(AttributeError, TypeError):
        body = with_canaries(body)
    if draw(st.integers(0, 9)) == 0:
        body = {"input": body, "id": "runpod-sends-this", "webhook": "http://x"}
    return kind, body


# --- checks -------------------------------------------------------------------------------------


def check_error(error: Any) -> None:
    """A FAILED response's error: a string, no traceback, no secret; a stage's error starts with
    the field it is about (a RequestError's paths are checked by `run_validate`)."""
    assert isinstance(error, str), error
    assert "Traceback" not in error
    assert 'File "' not in error
    assert find(error.encode("utf-8", "surrogateescape")) == [], error
    if error.startswith("invalid request"):
        problems = error.splitlines()[1:]
        assert problems, error
        assert all(line.startswith("  - ") for line in problems), error
    else:  # ConfigError or a stage failure: "<field>: message"
        assert FIELD.match(error), error
        assert ":" in error.split(" ", 1)[0], error


VALIDATE_SETTINGS = Settings(root=Path("/fuzz-root"))  # validation touches no folder


def run_validate(raw: Any) -> TrainingRequest | str:
    """The request, or the error string the handler would answer with; every problem of a
    refused request names the field it is about."""
    problems: list[tuple[str, str]] = []
    try:
        return validate(raw, VALIDATE_SETTINGS, "fuzz-job").request
    except RequestError as exc:
        problems, text = exc.problems, str(exc)
    except ConfigError as exc:
        problems, text = [(exc.field, exc.message)], str(exc)
    assert problems
    for path, _message in problems:
        assert path.strip(), problems
        assert f"{path}: " in text, (path, text)
    return text


def check_request(request: TrainingRequest) -> None:
    """A valid job never shows a secret in its masked form or its repr."""
    assert find(json.dumps(request.masked()).encode()) == []
    assert find(repr(request).encode()) == []


# --- tests --------------------------------------------------------------------------------------


def test_validate_fuzzed_bodies() -> None:
    seen = {"valid": 0, "near": 0, "garbage": 0}
    outcome = {"accepted": 0, "refused": 0}

    @settings(
        max_examples=VALIDATE_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(bodies())
    @example(("garbage", {"": None, " ": 1, "dataset": {"": 2}}))  # blank keys are still named
    def one(case: tuple[str, Any]) -> None:
        kind, raw = case
        seen[kind] += 1
        result = run_validate(copy.deepcopy(raw))
        if isinstance(result, str):
            outcome["refused"] += 1
            check_error(result)
            assert kind != "valid", result
        else:
            outcome["accepted"] += 1
            check_request(result)

    one()
    print(f"validate: {sum(seen.values())} bodies {seen} -> {outcome}")
    assert sum(seen.values()) >= 1000, seen
    assert min(seen.values()) > 0, seen
    assert outcome["accepted"] >= 100, outcome
    assert outcome["refused"] >= 300, outcome


@pytest.fixture
def servers() -> Iterator[tuple[DataServer, FakeHub]]:
    """Nothing served: every dataset URL is a 404. The fake Hub answers model downloads
    (unknown repo) and the UPDATES mirror of Hub output, so nothing leaves the machine."""
    with DataServer() as data, FakeHub() as hub:
        yield data, hub


def _point_at(body: Any, url: str, local_out: Path) -> Any:
    """The body with every placeholder URL swapped for `url` and the local output in tmp."""
    text = json.dumps(body)
    text = text.replace(PLACEHOLDER_URL, url).replace('"LOCAL_OUT"', json.dumps(str(local_out)))
    return json.loads(text)


def test_handle_fuzzed_bodies(
    tmp_path: Path,
    servers: tuple[DataServer, FakeHub],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, hub = servers
    # The reporter's 2 s pause before answering (for RunPod's late progress updates) is
    # irrelevant here and would make 300 jobs take ten minutes.
    original = ProgressReporter.quiet
    monkeypatch.setattr(ProgressReporter, "quiet", lambda self, gap_s=2.0: original(self, 0.0))
    root = tmp_path / "root"
    settings_ = Settings(
        root=root,
        hub_endpoint=hub.url,
        download_attempts=1,
        retry_wait_s=0,
        # A dataset host that never answers fails at once.
        download_limits=DownloadLimits(attempts=1, retry_wait_s=0),
    )
    options = WorkerOptions(settings=settings_, progress_every_s=0, mirror_close_s=10)
    ids = itertools.count()
    counts = {"ran": 0, "refused": 0, "dataset_404": 0}

    @settings(
        max_examples=HANDLE_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(bodies())
    @example(  # a valid job whose URL carries a secret and a host that does not resolve
        (
            "near",
            {
                "model_type": "flux",
                "dataset": {
                    "type": "precaptioned",
                    "images_url": "http://user:" + CANARIES["output.s3.secret_key"] + "@h/x.zip",
                },
                "api_keys": {"huggingface_token": CANARIES["api_keys.huggingface_token"]},
                "output": {"method": "local", "local": {"path": "LOCAL_OUT"}},
            },
        )
    )
    def one(case: tuple[str, Any]) -> None:
        _kind, raw = case
        raw = _point_at(raw, f"{data.url}/missing.zip", tmp_path / "out")
        job_id = f"fuzz-{next(ids)}"
        expected = run_validate(copy.deepcopy(raw))
        response = asyncio.run(handle({"id": job_id, "input": copy.deepcopy(raw)}, options))
        counts["ran"] += 1
        assert response["status"] == "failed", response
        assert set(response) == {"status", "error"}, response
        check_error(response["error"])
        assert scan([], [response]) == []
        if isinstance(expected, str):  # refused before anything ran: the same error
            counts["refused"] += 1
            assert response["error"] == expected
            assert not (root / "jobs" / job_id).exists()
        else:  # a valid job: it ran and failed on the dataset download, naming the field
            counts["dataset_404"] += 1
            # Most point at the 404 server; a drawn URL such as http://user:pw@h/x.zip fails
            # to connect instead. Either way the error names the field.
            assert re.match(r"dataset\.(images|videos)_url: ", response["error"]), response
            assert (root / "jobs" / job_id / "events.jsonl").is_file()

    one()
    with capsys.disabled():
        print(f"handle: {counts}")
    assert counts["ran"] >= 200, counts
    assert counts["dataset_404"] >= 30, counts
    assert counts["refused"] >= 100, counts
    # Nothing the jobs wrote, nothing they logged, holds a secret.
    captured = capsys.readouterr()
    assert scan([root], [captured.out, captured.err]) == []
