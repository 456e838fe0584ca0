"""The request schema: seed examples validate, bad requests name the field, secrets never leak."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.redact import Redactor, mask_url
from orchestrator.catalogue import ALL_MODEL_TYPES, get_model
from orchestrator.plan import trainer_spec
from orchestrator.request import RequestError, TrainingRequest, effective_training, parse_request
from stages.training.config import preflight
from tests.support.paths import EXAMPLES

EXAMPLES_DIR = EXAMPLES

# --- the seed README's examples, copied verbatim (the "input" objects) -------------------------

SEED_QUICK_START: dict[str, Any] = {
    "model_type": "qwen",
    "dataset": {"type": "precaptioned", "images_url": "https://your-storage.com/my_dataset.zip"},
    "training": {"epochs": 100, "lora_rank": 32, "save_every_n_epochs": 20},
    "output": {
        "method": "huggingface",
        "huggingface": {
            "token": "hf_YOUR_WRITE_TOKEN",
            "repo_id": "your-username/my-lora",
            "private": True,
        },
    },
}
SEED_QWEN_SIMPLEST: dict[str, Any] = {
    "model_type": "qwen",
    "dataset": {"type": "precaptioned", "images_url": "https://example.com/images.zip"},
    "output": {
        "method": "huggingface",
        "huggingface": {"token": "hf_xxx", "repo_id": "user/qwen-lora"},
    },
}
SEED_WAN_CUSTOM: dict[str, Any] = {
    "model_type": "wan14b_t2v",
    "dataset": {
        "type": "precaptioned",
        "videos_url": "https://example.com/videos.zip",
        "video_repeats": 10,
    },
    "training": {
        "epochs": 200,
        "learning_rate": 1e-5,
        "lora_rank": 64,
        "save_every_n_epochs": 25,
        "gradient_accumulation_steps": 8,
        "video_clip_mode": "multiple_overlapping",
        "frame_buckets": [1, 17, 33, 49],
    },
    "output": {
        "method": "huggingface",
        "huggingface": {"token": "hf_xxx", "repo_id": "user/wan-video-lora", "private": False},
    },
}
SEED_FLUX_AUTOCAPTION: dict[str, Any] = {
    "model_type": "flux",
    "dataset": {
        "type": "images",
        "images_url": "https://example.com/raw_images.zip",
        "trigger_word": "ohwx person",
    },
    "training": {"epochs": 80, "lora_rank": 32},
    "api_keys": {"huggingface_token": "hf_xxx_for_flux_download"},
    "output": {
        "method": "huggingface",
        "huggingface": {"token": "hf_xxx_for_upload", "repo_id": "user/flux-lora"},
    },
}
# The README's output snippets, each completed with the quick start's model and dataset.
SEED_S3_OUTPUT: dict[str, Any] = {
    "method": "s3",
    "s3": {
        "endpoint_url": "https://account.r2.cloudflarestorage.com",
        "bucket": "my-bucket",
        "region": "auto",
        "access_key": "YOUR_ACCESS_KEY",
        "secret_key": "YOUR_SECRET_KEY",
        "key_prefix": "lora-outputs",
    },
}
SEED_AUTO_OUTPUT: dict[str, Any] = {"method": "auto"}

SEED_EXAMPLES = {
    "quick-start": SEED_QUICK_START,
    "qwen-precaptioned": SEED_QWEN_SIMPLEST,
    "wan14b-t2v-custom": SEED_WAN_CUSTOM,
    "flux-autocaption": SEED_FLUX_AUTOCAPTION,
    "s3-output": {**SEED_QUICK_START, "output": SEED_S3_OUTPUT},
    "auto-output": {**SEED_QUICK_START, "output": SEED_AUTO_OUTPUT},
}


def _load_examples() -> dict[str, Any]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(EXAMPLES_DIR.glob("*.json"))}


@pytest.mark.parametrize("name", sorted(SEED_EXAMPLES))
def test_seed_example_validates_bare_and_wrapped(name: str) -> None:
    body = SEED_EXAMPLES[name]
    bare = parse_request(copy.deepcopy(body))
    wrapped = parse_request({"input": copy.deepcopy(body)})
    assert bare == wrapped
    assert bare.model_type == body["model_type"]


def test_every_seed_example_is_bundled_in_examples_dir() -> None:
    bundled = _load_examples()
    for name in ("quick-start", "qwen-precaptioned", "wan14b-t2v-custom", "flux-autocaption"):
        assert bundled[name] == {"input": SEED_EXAMPLES[name]}, name


@pytest.mark.parametrize("path", sorted(EXAMPLES_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_every_bundled_example_validates(path: Path) -> None:
    body = json.loads(path.read_text())
    assert set(body) == {"input"}  # RunPod body form
    parse_request(body)


def test_tiny_local_example() -> None:
    req = parse_request(_load_examples()["tiny-local"])
    assert req.model_type == "tiny"
    assert req.dataset.type == "precaptioned"
    assert req.dataset.images_url == "http://127.0.0.1:8765/dataset.zip"
    assert req.output.method == "local"
    assert req.output.local is not None
    assert req.output.local.path == "./outputs"
    assert effective_training(req)["epochs"] <= 5


def test_seed_example_values_are_kept() -> None:
    req = parse_request({"input": SEED_WAN_CUSTOM})
    assert req.dataset.video_repeats == 10
    assert req.dataset.image_repeats == 1
    assert req.training.learning_rate == 1e-5
    assert req.training.frame_buckets == [1, 17, 33, 49]
    assert req.output.huggingface is not None
    assert req.output.huggingface.private is False
    assert req.output.huggingface.token is not None
    assert req.output.huggingface.token.get_secret_value() == "hf_xxx"


def test_seed_wan_example_runs_as_written() -> None:
    # diffusion-pipe has multiple_overlapping disabled; the service cuts the clips itself
    # (stages.training.clips), so the seed README's own Wan example passes the preflight verbatim.
    req = parse_request({"input": SEED_WAN_CUSTOM})
    assert req.training.video_clip_mode == "multiple_overlapping"
    preflight(trainer_spec(req))


def test_schema_says_which_clip_modes_train() -> None:
    field = TrainingRequest.model_json_schema()["$defs"]["TrainingConfig"]["properties"][
        "video_clip_mode"
    ]
    for mode in ("single_beginning", "single_middle", "multiple_overlapping"):
        assert mode in field["description"]
    modes = ["single_beginning", "single_middle", "multiple_overlapping"]
    assert field["anyOf"][0]["enum"] == modes


def test_runpod_envelope_keys_besides_input_are_ignored() -> None:
    req = parse_request({"id": "abc", "webhook": "https://x", "input": SEED_QWEN_SIMPLEST})
    assert req.model_type == "qwen"


def test_null_sections_mean_defaults() -> None:
    body = {**SEED_QWEN_SIMPLEST, "training": None, "api_keys": None}
    req = parse_request(body)
    assert effective_training(req)["epochs"] == 80  # Qwen's template default


def test_optional_defaults() -> None:
    req = parse_request(
        {
            "model_type": "qwen",
            "dataset": {"type": "precaptioned", "images_url": "hf://datasets/u/d"},
        }
    )
    assert req.output.method == "auto"
    assert req.resume_from is None
    assert req.dataset.image_repeats == 1
    assert req.dataset.video_repeats == 5
    req = parse_request({**SEED_QWEN_SIMPLEST, "resume_from": "earlier-job"})
    assert req.resume_from == "earlier-job"


def test_tiny_is_accepted_but_not_advertised() -> None:
    with pytest.raises(RequestError) as info:
        parse_request({**SEED_QWEN_SIMPLEST, "model_type": "nope"})
    assert "tiny" not in str(info.value)
    assert parse_request({**SEED_QWEN_SIMPLEST, "model_type": "tiny"}).model_type == "tiny"


# --- bad requests: each names the exact field path ----------------------------------------------

DELETE = object()


def _req(base: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """A copy of `base` (default: the simplest seed example) with dotted-path changes; keys use
    "__" for "." since keyword names cannot hold dots."""
    body = copy.deepcopy(SEED_QWEN_SIMPLEST if base is None else base)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = body
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return body


WAN13_VIDEOS = _req(
    model_type="wan13",
    dataset={"type": "videos", "videos_url": "https://example.com/v.zip"},
    api_keys={"gemini_api_key": "gm_key"},
)
S3 = _req(output=copy.deepcopy(SEED_S3_OUTPUT))

BAD: list[tuple[str, Any, str, str]] = [
    # (id, request, expected path, message fragment)
    (
        "unknown-model",
        _req(model_type="fluxx"),
        "model_type",
        '"fluxx" is not implemented; use one of: flux, sdxl, wan13, wan14b_t2v, wan14b_i2v, '
        "qwen, z_image_turbo",
    ),
    ("missing-model", _req(model_type=DELETE), "model_type", "required"),
    ("model-not-string", _req(model_type=7), "model_type", "must be a string"),
    ("missing-dataset", _req(dataset=DELETE), "dataset", "required"),
    ("dataset-not-object", _req(dataset="x.zip"), "dataset", "must be a JSON object"),
    ("missing-dataset-type", _req(dataset__type=DELETE), "dataset.type", "required"),
    ("bad-dataset-type", _req(dataset__type="pictures"), "dataset.type", "'precaptioned'"),
    (
        "dataset-typo",
        _req(dataset__image_url="https://x/y.zip"),
        "dataset.image_url",
        "unknown field; did you mean images_url?",
    ),
    (
        "images-without-url",
        _req(dataset={"type": "images"}),
        "dataset.images_url",
        'required when dataset.type is "images"',
    ),
    (
        "videos-without-url",
        _req(WAN13_VIDEOS, dataset__videos_url=DELETE),
        "dataset.videos_url",
        'required when dataset.type is "videos"',
    ),
    (
        "precaptioned-without-urls",
        _req(dataset={"type": "precaptioned"}),
        "dataset.images_url",
        "precaptioned needs images_url or videos_url",
    ),
    (
        "both-without-urls",
        _req(dataset={"type": "both"}),
        "dataset.images_url",
        "both needs images_url or videos_url",
    ),
    (
        "videos-without-gemini",
        _req(WAN13_VIDEOS, api_keys=DELETE),
        "api_keys.gemini_api_key",
        'required to caption videos (dataset.type "videos" or "both" with videos_url)',
    ),
    (
        "both-with-videos-without-gemini",
        _req(
            WAN13_VIDEOS,
            dataset={"type": "both", "images_url": "https://x/i.zip", "videos_url": "https://x/v"},
            api_keys=DELETE,
        ),
        "api_keys.gemini_api_key",
        "required to caption videos",
    ),
    (
        "flux-without-token",
        _req(SEED_FLUX_AUTOCAPTION, api_keys=DELETE, output={"method": "auto"}),
        "api_keys.huggingface_token",
        "Flux is a gated model; give a Hugging Face token whose account accepted the FLUX.1-dev "
        "licence at https://huggingface.co/black-forest-labs/FLUX.1-dev",
    ),
    (
        "i2v-given-images-type",
        _req(model_type="wan14b_i2v", dataset={"type": "images", "images_url": "https://x/i"}),
        "dataset.type",
        "wan14b_i2v trains on videos only",
    ),
    (
        "i2v-given-images-url",
        _req(
            model_type="wan14b_i2v",
            dataset={
                "type": "precaptioned",
                "images_url": "https://x/i",
                "videos_url": "https://x/v",
            },
        ),
        "dataset.images_url",
        "wan14b_i2v trains on videos only",
    ),
    (
        "qwen-given-videos",
        _req(dataset__videos_url="https://x/v.zip"),
        "dataset.videos_url",
        "Qwen Image trains on images only",
    ),
    (
        "sdxl-given-videos-type",
        _req(model_type="sdxl", dataset={"type": "videos"}),
        "dataset.type",
        "SDXL trains on images only",
    ),
    (
        "hf-output-without-token",
        _req(output__huggingface__token=DELETE),
        "output.huggingface.token",
        'required when output.method is "huggingface"',
    ),
    (
        "hf-output-without-section",
        _req(output={"method": "huggingface"}),
        "output.huggingface.token",
        'required when output.method is "huggingface"',
    ),
    (
        "s3-without-bucket",
        _req(S3, output__s3__bucket=DELETE),
        "output.s3.bucket",
        'required when output.method is "s3"',
    ),
    (
        "s3-without-access-key",
        _req(S3, output__s3__access_key=DELETE),
        "output.s3.access_key",
        'required when output.method is "s3"',
    ),
    (
        "s3-without-secret-key",
        _req(S3, output__s3__secret_key=DELETE),
        "output.s3.secret_key",
        'required when output.method is "s3"',
    ),
    (
        "s3-endpoint-not-http",
        _req(S3, output__s3__endpoint_url="s3://bucket"),
        "output.s3.endpoint_url",
        'got "s3"',
    ),
    ("bad-output-method", _req(output__method="litterbox"), "output.method", "'local'"),
    (
        "output-typo",
        _req(output__huggingface__repo="u/r"),
        "output.huggingface.repo",
        "did you mean repo_id?",
    ),
    (
        "bad-repo-id",
        _req(output__huggingface__repo_id="a/b/c d"),
        "output.huggingface.repo_id",
        "owner/name",
    ),
    (
        "private-not-bool",
        _req(output__huggingface__private="yes"),
        "output.huggingface.private",
        "valid boolean",
    ),
    (
        "ftp-url",
        _req(dataset__images_url="ftp://example.com/x.zip"),
        "dataset.images_url",
        'only http(s) and hf://datasets/ URLs are accepted, got "ftp"',
    ),
    (
        "hf-model-url",
        _req(dataset__images_url="hf://models/u/m"),
        "dataset.images_url",
        "hf://datasets/",
    ),
    (
        "url-without-scheme",
        _req(dataset__images_url="example.com/x.zip"),
        "dataset.images_url",
        "only http(s) and hf://datasets/ URLs are accepted",
    ),
    ("url-without-host", _req(dataset__images_url="https:///x.zip"), "dataset.images_url", "host"),
    ("url-not-string", _req(dataset__images_url=5), "dataset.images_url", "valid string"),
    (
        "blank-trigger-word",
        _req(dataset__trigger_word="   "),
        "dataset.trigger_word",
        "must not be empty",
    ),
    (
        "multiline-trigger-word",
        _req(dataset__trigger_word="ohwx\nperson"),
        "dataset.trigger_word",
        "single line",
    ),
    (
        "zero-image-repeats",
        _req(dataset__image_repeats=0),
        "dataset.image_repeats",
        "greater than or equal to 1",
    ),
    (
        "string-video-repeats",
        _req(dataset__video_repeats="5"),
        "dataset.video_repeats",
        "valid integer",
    ),
    ("zero-epochs", _req(training={"epochs": 0}), "training.epochs", "greater than or equal to 1"),
    ("bool-epochs", _req(training={"epochs": True}), "training.epochs", "valid integer"),
    ("string-epochs", _req(training={"epochs": "100"}), "training.epochs", "valid integer"),
    (
        "zero-learning-rate",
        _req(training={"learning_rate": 0}),
        "training.learning_rate",
        "greater than 0",
    ),
    (
        "infinite-learning-rate",
        _req(training={"learning_rate": math.inf}),
        "training.learning_rate",
        "finite",
    ),
    (
        "huge-rank",
        _req(training={"lora_rank": 2048}),
        "training.lora_rank",
        "less than or equal to 1024",
    ),
    ("zero-rank", _req(training={"lora_rank": 0}), "training.lora_rank", "greater than or equal"),
    ("bad-lora-dtype", _req(training={"lora_dtype": "int8"}), "training.lora_dtype", "bfloat16"),
    ("bad-save-dtype", _req(training={"save_dtype": "fp8"}), "training.save_dtype", "float8"),
    (
        "one-beta",
        _req(training={"optimizer_betas": [0.9]}),
        "training.optimizer_betas",
        "at least 2",
    ),
    (
        "beta-of-one",
        _req(training={"optimizer_betas": [0.9, 1.0]}),
        "training.optimizer_betas[1]",
        "less than 1",
    ),
    (
        "negative-beta",
        _req(training={"optimizer_betas": [-0.1, 0.99]}),
        "training.optimizer_betas[0]",
        "greater than or equal to 0",
    ),
    (
        "empty-frame-buckets",
        _req(training={"frame_buckets": []}),
        "training.frame_buckets",
        "at least 1",
    ),
    (
        "zero-frame-bucket",
        _req(training={"frame_buckets": [1, 0]}),
        "training.frame_buckets[1]",
        "greater than or equal to 1",
    ),
    (
        "fractional-frame-bucket",
        _req(training={"frame_buckets": [1, 33.5]}),
        "training.frame_buckets[1]",
        "valid integer",
    ),
    (
        "bad-clip-mode",
        _req(training={"video_clip_mode": "all"}),
        "training.video_clip_mode",
        "single_middle",
    ),
    (
        "bad-activation-checkpointing",
        _req(training={"activation_checkpointing": "yes"}),
        "training.activation_checkpointing",
        'must be true, false or "unsloth"',
    ),
    (
        "negative-warmup",
        _req(training={"warmup_steps": -1}),
        "training.warmup_steps",
        "greater than or equal to 0",
    ),
    (
        "bad-optimizer-name",
        _req(training={"optimizer_type": "adam w"}),
        "training.optimizer_type",
        "must be an optimizer name",
    ),
    (
        "owned-output-dir",
        _req(training={"output_dir": "/tmp/x"}),
        "training.output_dir",
        '"output_dir" is set by the service',
    ),
    (
        "owned-dataset-path",
        _req(training={"dataset": "/tmp/dataset.toml"}),
        "training.dataset",
        '"dataset" is set by the service',
    ),
    (
        "owned-ckpt-path",
        _req(training={"model": {"ckpt_path": "/models/wan"}}),
        "training.model.ckpt_path",
        '"ckpt_path" is set by the service',
    ),
    (
        "owned-diffusers-path",
        _req(training={"model": {"diffusers_path": "/m"}}),
        "training.model.diffusers_path",
        '"diffusers_path" is set by the service',
    ),
    (
        "owned-model-type",
        _req(training={"model": {"type": "flux"}}),
        "training.model.type",
        '"type" is set by the service',
    ),
    (
        "owned-text-encoders",
        _req(training={"model": {"text_encoders": [{"path": "/x"}]}}),
        "training.model.text_encoders",
        "set by the service",
    ),
    (
        "adapter-alpha",
        _req(training={"adapter": {"alpha": 16}}),
        "training.adapter.alpha",
        "alpha equal to rank",
    ),
    (
        "adapter-rank-alias",
        _req(training={"adapter": {"rank": 16}}),
        "training.adapter.rank",
        "use training.lora_rank",
    ),
    (
        "optimizer-lr-alias",
        _req(training={"optimizer": {"lr": 1e-4}}),
        "training.optimizer.lr",
        "use training.learning_rate",
    ),
    (
        "resume-from-checkpoint",
        _req(training={"resume_from_checkpoint": True}),
        "training.resume_from_checkpoint",
        "POST /retry",
    ),
    (
        "micro-batch-alias",
        _req(training={"micro_batch_size_per_gpu": 2}),
        "training.micro_batch_size_per_gpu",
        "use training.batch_size",
    ),
    (
        "training-typo",
        _req(training={"learing_rate": 1e-4}),
        "training.learing_rate",
        "did you mean learning_rate?",
    ),
    (
        "training-key-of-dataset",
        _req(training={"image_repeats": 3}),
        "training.image_repeats",
        "belongs in dataset.image_repeats",
    ),
    (
        "passthrough-null",
        _req(training={"blocks_to_swap": None}),
        "training.blocks_to_swap",
        "null cannot be written",
    ),
    (
        "passthrough-nested-null",
        _req(training={"monitoring": {"wandb_run_name": None}}),
        "training.monitoring.wandb_run_name",
        "null cannot be written",
    ),
    (
        "passthrough-huge-int",
        _req(training={"max_steps": 2**70}),
        "training.max_steps",
        "64-bit",
    ),
    ("table-not-object", _req(training={"model": [1]}), "training.model", "must be a JSON object"),
    ("training-not-object", _req(training=[1]), "training", "must be a JSON object"),
    (
        "top-level-training-field",
        _req(epochs=10),
        "epochs",
        "unknown field; it belongs in training.epochs",
    ),
    ("top-level-typo", _req(trainig={}), "trainig", "did you mean training?"),
    ("api-keys-typo", _req(api_keys={"hf_token": "hf_abc"}), "api_keys.hf_token", "unknown field"),
    (
        "empty-gemini-key",
        _req(WAN13_VIDEOS, api_keys={"gemini_api_key": "  "}),
        "api_keys.gemini_api_key",
        "must not be empty",
    ),
    (
        "token-with-space",
        _req(output__huggingface__token="hf abc"),
        "output.huggingface.token",
        "whitespace",
    ),
    ("token-not-string", _req(output__huggingface__token=123), "output.huggingface.token", "valid"),
    ("resume-removed", _req(resume=True), "resume", "POST /retry"),
    ("resume-from-not-an-id", _req(resume_from="../x"), "resume_from", "must be a job id"),
    (
        "resume-from-lora-alone",
        _req(resume_from_lora=True),
        "resume_from_lora",
        "needs resume_from",
    ),
    (
        "resume-from-lora-not-bool",
        _req(resume_from="a", resume_from_lora="yes"),
        "resume_from_lora",
        "valid boolean",
    ),
]


@pytest.mark.parametrize(
    ("body", "path", "fragment"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_request_names_the_field(body: dict[str, Any], path: str, fragment: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request({"input": body})
    matching = [msg for p, msg in info.value.problems if p == path]
    assert matching, f"no problem at {path!r}: {info.value.problems}"
    assert any(fragment in msg for msg in matching), matching
    assert f"  - {path}: " in str(info.value)


def test_bad_request_ids_are_distinct_and_many() -> None:
    assert len({c[0] for c in BAD}) == len(BAD) >= 30


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [([], "got list"), (None, "got null"), ("x", "got str"), ({"input": 3}, "got int")],
)
def test_non_object_input(raw: Any, fragment: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(raw)
    assert info.value.problems[0][0] == "input"
    assert fragment in info.value.problems[0][1]


def test_flux_accepts_the_output_token_as_download_token() -> None:
    body = _req(SEED_FLUX_AUTOCAPTION, api_keys=DELETE)
    req = parse_request(body)
    token = req.hf_download_token()
    assert token is not None
    assert token.get_secret_value() == "hf_xxx_for_upload"
    req = parse_request(SEED_FLUX_AUTOCAPTION)
    token = req.hf_download_token()
    assert token is not None
    assert token.get_secret_value() == "hf_xxx_for_flux_download"


def test_precaptioned_videos_need_no_gemini_key() -> None:
    parse_request(_req(SEED_WAN_CUSTOM))


def test_i2v_trains_on_videos() -> None:
    parse_request(
        _req(
            model_type="wan14b_i2v",
            dataset={"type": "precaptioned", "videos_url": "https://x/v.zip"},
        )
    )


def test_collects_every_problem_in_one_error() -> None:
    body = {
        "model_type": "qwen",
        "dataset": {"type": "videos", "image_url": "x", "image_repeats": 0},
        "training": {"epochs": -1, "output_dir": "/x", "optimizer_betas": [2, 0.5]},
        "output": {"method": "s3", "s3": {"bucket": "b"}},
        "extra": 1,
    }
    with pytest.raises(RequestError) as info:
        parse_request({"input": body})
    paths = [p for p, _ in info.value.problems]
    expected = {
        "dataset.image_url",
        "dataset.image_repeats",
        "dataset.type",  # qwen trains on images only
        "training.epochs",
        "training.output_dir",
        "training.optimizer_betas[0]",
        "output.s3.access_key",
        "output.s3.secret_key",
        "extra",
    }
    assert expected <= set(paths)
    assert len(paths) == len(set(paths))
    text = str(info.value)
    lines = text.splitlines()
    assert lines[0] == f"invalid request ({len(paths)} problems):"
    assert len(lines) == len(paths) + 1
    assert all(line.startswith("  - ") for line in lines[1:])


def test_single_problem_wording() -> None:
    with pytest.raises(RequestError) as info:
        parse_request(_req(model_type="fluxx"))
    assert str(info.value).splitlines()[0] == "invalid request (1 problem):"
    assert isinstance(info.value, ValueError)


def test_direct_model_validate_also_enforces_the_rules() -> None:
    # Callers that skip parse_request still cannot build an inconsistent request.
    with pytest.raises(ValueError, match=r"required when dataset\.type"):
        TrainingRequest.model_validate(_req(dataset={"type": "images"}))
    with pytest.raises(ValueError, match="set by the service"):
        TrainingRequest.model_validate(_req(training={"output_dir": "/x"}))


# --- secrets ---------------------------------------------------------------------------------

HF_API = "hf_SECRETapiKEY0001aaaaaaaaaaaaa"
GEMINI = "AIzaSECRETgemini0002bbbbbbbbbbbbbbbbbbb"
HF_OUT = "hf_SECREToutput0003ccccccccccccc"
S3_ACCESS = "SECRETaccess0004"
S3_SECRET = "SECRETs3secret0005dddddd"
WANDB = "SECRETwandb0006eeee"
URL_SIG = "Signature=SECRETsig0007"
URL_PW = "SECRETpw0008"
ALL_SECRETS = [HF_API, GEMINI, HF_OUT, S3_ACCESS, S3_SECRET, WANDB, "SECRETsig0007", URL_PW]

SECRET_REQUEST: dict[str, Any] = {
    "model_type": "flux",
    "dataset": {
        "type": "images",
        "images_url": f"https://user:{URL_PW}@example.com/i.zip?{URL_SIG}",
    },
    "training": {"monitoring": {"enable_wandb": True, "wandb_api_key": WANDB}},
    "api_keys": {"huggingface_token": HF_API, "gemini_api_key": GEMINI},
    "output": {
        "method": "s3",
        "huggingface": {"token": HF_OUT},
        "s3": {"bucket": "b", "access_key": S3_ACCESS, "secret_key": S3_SECRET},
    },
}


def _assert_no_secret(text: str) -> None:
    for secret in ALL_SECRETS:
        assert secret not in text


def test_valid_request_never_shows_secrets() -> None:
    req = parse_request({"input": SECRET_REQUEST})
    _assert_no_secret(repr(req))
    _assert_no_secret(str(req))
    _assert_no_secret(repr(req.training))
    _assert_no_secret(repr(req.dataset))
    _assert_no_secret(json.dumps(req.masked()))
    _assert_no_secret(req.model_dump_json())
    masked = req.masked()
    assert masked["api_keys"] == {"huggingface_token": "***", "gemini_api_key": "***"}
    assert masked["output"]["s3"]["secret_key"] == "***"
    assert masked["output"]["s3"]["access_key"] == "***"
    assert masked["output"]["huggingface"]["token"] == "***"
    assert masked["training"]["monitoring"] == {"enable_wandb": True, "wandb_api_key": "***"}
    assert masked["dataset"]["images_url"] == "https://***@example.com/i.zip?***"


def test_secret_values_lists_every_secret() -> None:
    req = parse_request({"input": SECRET_REQUEST})
    values = req.secret_values()
    for secret in (HF_API, GEMINI, HF_OUT, S3_ACCESS, S3_SECRET, WANDB, URL_SIG, URL_PW):
        assert secret in values
    assert len(values) == len(set(values))


def test_effective_training_keeps_real_passthrough_values() -> None:
    # The TOML needs the real wandb key; only masked() hides it.
    req = parse_request({"input": SECRET_REQUEST})
    assert effective_training(req)["monitoring"]["wandb_api_key"] == WANDB


def test_bad_request_with_secrets_never_shows_them() -> None:
    body = copy.deepcopy(SECRET_REQUEST)
    body["model_type"] = HF_API  # a token pasted into the wrong field
    body["dataset"]["images_url"] = f"ftp://user:{URL_PW}@example.com/i.zip?{URL_SIG}"
    body["dataset"]["videos_url"] = f"gopher{URL_PW}://x"
    body["api_keys"]["extra_" + "key"] = GEMINI
    body["output"]["s3"]["secret_key"] = S3_SECRET + " x"  # inner whitespace: invalid
    body["output"]["huggingface"]["token"] = 12345
    body["training"]["epochs"] = S3_ACCESS
    body["training"]["model"] = {"ckpt_path": WANDB}
    with pytest.raises(RequestError) as info:
        parse_request({"input": body})
    err = info.value
    assert len(err.problems) >= 6
    for text in (str(err), repr(err), repr(err.problems), str(err.args)):
        _assert_no_secret(text)


def test_mask_url() -> None:
    assert mask_url("https://example.com/a.zip") == "https://example.com/a.zip"
    assert mask_url("https://u:p@h:8080/a?x=1#f") == "https://***@h:8080/a?***"
    assert mask_url("hf://datasets/u/d") == "hf://datasets/u/d"


# --- defaults and passthrough ---------------------------------------------------------------


def test_defaults_resolve_from_the_catalogue() -> None:
    req = parse_request({"input": SEED_QWEN_SIMPLEST})
    eff = effective_training(req)
    # Qwen's known-good template values (peers.md §1.3), not the seed's one-size 100 / 2e-5.
    assert eff["epochs"] == 80
    assert eff["learning_rate"] == 2e-4
    assert eff["save_every_n_epochs"] == 20
    assert eff["checkpoint_every_n_minutes"] == 20
    assert eff["lora_rank"] == 32
    assert eff["optimizer_betas"] == [0.9, 0.99]
    assert eff["frame_buckets"] == [1, 33]
    assert eff["activation_checkpointing"] is True
    assert eff["model"] == {}
    assert eff["adapter"] == {}
    assert eff["optimizer"] == {}
    assert req.masked()["training"] == eff
    # The request itself keeps "unset", so a later catalogue change still applies.
    assert req.training.epochs is None


def test_tiny_defaults_come_from_its_catalogue_entry() -> None:
    req = parse_request({**SEED_QWEN_SIMPLEST, "model_type": "tiny"})
    assert effective_training(req)["epochs"] == get_model("tiny").defaults["epochs"]
    assert effective_training(req)["resolution"] == 64


def test_user_values_override_and_null_means_default() -> None:
    req = parse_request(
        _req(training={"epochs": 90, "lora_rank": 16, "learning_rate": None, "resolution": 512})
    )
    eff = effective_training(req)
    assert (eff["epochs"], eff["lora_rank"], eff["resolution"]) == (90, 16, 512)
    assert eff["learning_rate"] == 2e-4
    assert eff["gradient_accumulation_steps"] == 1


def test_passthrough_keys_are_kept() -> None:
    training = {
        "blocks_to_swap": 8,
        "lr_scheduler": "cosine",
        "my_new_diffusion_pipe_key": [1, 2],
        "monitoring": {"enable_wandb": False},
        "model": {"transformer_dtype": "float8", "timestep_sample_method": "logit_normal"},
        "adapter": {"dropout": 0.05},
        "optimizer": {"stabilize": True},
        "activation_checkpointing": "unsloth",
    }
    req = parse_request(_req(training=training))
    eff = effective_training(req)
    assert eff["blocks_to_swap"] == 8
    assert eff["lr_scheduler"] == "cosine"
    assert eff["my_new_diffusion_pipe_key"] == [1, 2]
    assert eff["monitoring"] == {"enable_wandb": False}
    assert eff["model"] == training["model"]
    assert eff["adapter"] == {"dropout": 0.05}
    assert eff["optimizer"] == {"stabilize": True}
    assert eff["activation_checkpointing"] == "unsloth"
    assert eff["epochs"] == 80
    assert req.training.passthrough() == {
        "blocks_to_swap": 8,
        "lr_scheduler": "cosine",
        "my_new_diffusion_pipe_key": [1, 2],
        "monitoring": {"enable_wandb": False},
    }
    # Documented keys first, then passthrough, then the three tables.
    keys = list(eff)
    assert keys[-3:] == ["model", "adapter", "optimizer"]
    assert keys.index("eval_before_first_step") < keys.index("blocks_to_swap")


def test_known_keys_close_to_documented_ones_pass_through() -> None:
    # save_every_n_steps is a real diffusion-pipe key, not a typo of save_every_n_epochs.
    req = parse_request(_req(training={"save_every_n_steps": 500, "eval_every_n_steps": 50}))
    assert effective_training(req)["save_every_n_steps"] == 500


def test_effective_training_does_not_alias_the_request() -> None:
    req = parse_request(_req(training={"model": {"x": [1]}}))
    eff = effective_training(req)
    eff["model"]["x"].append(2)
    eff["frame_buckets"].append(99)
    assert req.training.model == {"x": [1]}
    assert effective_training(req)["frame_buckets"] == [1, 33]


def test_masked_is_json_ready_and_complete() -> None:
    req = parse_request({"input": SEED_WAN_CUSTOM})
    masked = req.masked()
    assert json.loads(json.dumps(masked)) == masked
    assert masked["model_type"] == "wan14b_t2v"
    assert masked["dataset"]["video_repeats"] == 10
    assert masked["training"]["epochs"] == 200
    assert masked["training"]["frame_buckets"] == [1, 17, 33, 49]
    assert masked["output"] == {
        "method": "huggingface",
        "huggingface": {"token": "***", "repo_id": "user/wan-video-lora", "private": False},
        "upload_epochs": "final",
    }
    assert masked["resume_from"] is None


@pytest.mark.parametrize("model_type", ALL_MODEL_TYPES)
def test_every_model_type_has_a_valid_minimal_request(model_type: str) -> None:
    entry = get_model(model_type)
    dataset = (
        {"type": "precaptioned", "images_url": "https://x/i.zip"}
        if entry.trains_images
        else {"type": "precaptioned", "videos_url": "https://x/v.zip"}
    )
    body: dict[str, Any] = {"model_type": model_type, "dataset": dataset}
    if entry.gated:
        body["api_keys"] = {"huggingface_token": "hf_abc"}
    req = parse_request(body)
    assert req.model == entry
    assert effective_training(req)["epochs"] == entry.defaults["epochs"]


# --- garbage never crashes -----------------------------------------------------------------

FIELD_NAMES = sorted(
    {
        "input",
        "model_type",
        "dataset",
        "training",
        "api_keys",
        "output",
        "resume_from",
        "type",
        "images_url",
        "videos_url",
        "trigger_word",
        "image_repeats",
        "video_repeats",
        "epochs",
        "learning_rate",
        "optimizer_betas",
        "frame_buckets",
        "activation_checkpointing",
        "model",
        "adapter",
        "optimizer",
        "monitoring",
        "method",
        "huggingface",
        "s3",
        "local",
        "token",
        "path",
        "bucket",
        "secret_key",
        "huggingface_token",
        "gemini_api_key",
        *ALL_MODEL_TYPES,
        "images",
        "videos",
        "both",
        "precaptioned",
        "auto",
    }
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(FIELD_NAMES)
    | st.sampled_from(["https://x/y.zip", "hf://datasets/a/b", "ftp://u:p@h/", "http://[::1"])
)
_keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=12)
json_ish = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=6),
    max_leaves=40,
)


def _check_outcome(raw: Any) -> None:
    try:
        req = parse_request(raw)
    except RequestError as err:
        error = err
    else:
        json.dumps(req.masked())
        effective_training(req)
        req.secret_values()
        return
    assert str(error).startswith("invalid request (")
    assert error.problems
    assert all(isinstance(p, str) and isinstance(m, str) for p, m in error.problems)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_ish)
def test_garbage_raises_only_request_error(raw: Any) -> None:
    _check_outcome(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(SEED_EXAMPLES)),
    st.lists(st.tuples(st.lists(_keys, min_size=1, max_size=3), json_ish), max_size=4),
)
def test_mutated_seed_examples_raise_only_request_error(
    name: str, edits: list[tuple[list[str], Any]]
) -> None:
    body: Any = copy.deepcopy(SEED_EXAMPLES[name])
    for path, value in edits:
        node = body
        for part in path[:-1]:
            if not isinstance(node, dict):
                break
            node = node.setdefault(part, {})
        if isinstance(node, dict):
            node[path[-1]] = value
    _check_outcome({"input": body})
    # parse_request and a direct model_validate agree on what is valid.
    try:
        parse_request({"input": body})
        ok = True
    except RequestError:
        ok = False
    try:
        TrainingRequest.model_validate(body)
        direct_ok = True
    except ValueError:
        direct_ok = False
    assert ok == direct_ok


def test_a_secret_pasted_into_another_field_is_masked_in_every_view() -> None:
    secret = "s3-secret-pasted-9f3a"
    req = parse_request(
        {
            "model_type": "flux",
            "dataset": {
                "type": "precaptioned",
                "images_url": "https://x/i.zip",
                "trigger_word": f"http://user:{secret}@h/x.zip",
            },
            "api_keys": {"huggingface_token": "hf_abc"},
            "output": {
                "method": "s3",
                "s3": {"bucket": "b", "access_key": "AKIAEXAMPLE", "secret_key": secret},
            },
        }
    )
    assert req.dataset.trigger_word == f"http://user:{secret}@h/x.zip"  # training still gets it
    for view in (json.dumps(req.masked()), repr(req), str(req)):
        assert secret not in view
        assert "http://user:***@h/x.zip" in view


# --- hostile values the schema used to let through ----------------------------------------------


def _problems(body: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(RequestError) as info:
        parse_request(body)
    return info.value.problems


@pytest.mark.parametrize(
    "url",
    [
        "https://a..b/x.zip",  # an empty label
        f"https://{'x' * 64}.example.com/x.zip",  # a label over 63 characters
        "https://xn--/x.zip",  # a malformed A-label
        "https://example.com:99999/x.zip",  # a port out of range
    ],
)
def test_a_malformed_host_is_refused_at_validation_naming_the_field(url: str) -> None:
    # They used to pass and fail later, in the HTTP client, as UnicodeError/IDNAError.
    assert [p[0] for p in _problems(_req(dataset__images_url=url))] == ["dataset.images_url"]
    s3 = {"bucket": "b", "access_key": "ak12", "secret_key": "sk12", "endpoint_url": url}
    body = _req(output={"method": "s3", "s3": s3})
    assert [p[0] for p in _problems(body)] == ["output.s3.endpoint_url"]


@pytest.mark.parametrize("word", ["ohwx\x00", "\x1b[31mohwx", "oh\twx", "ohwx\x7f"])
def test_the_trigger_word_refuses_control_characters(word: str) -> None:
    problems = _problems(_req(dataset__trigger_word=word))
    assert problems == [
        ("dataset.trigger_word", "must not contain control characters (tab, escape, NUL)")
    ]


@pytest.mark.parametrize(
    ("prefix", "why"),
    [
        ("runs/../other", '"." or ".."'),
        ("..", '"." or ".."'),
        ("runs\x00", "control characters"),
        ("runs\nx", "control characters"),
        ("/abs", 'start with "/"'),
    ],
)
def test_an_s3_key_prefix_follows_the_stores_rules(prefix: str, why: str) -> None:
    s3 = {"bucket": "b", "access_key": "ak12", "secret_key": "sk12", "key_prefix": prefix}
    [(path, message)] = _problems(_req(output={"method": "s3", "s3": s3}))
    assert path == "output.s3.key_prefix"
    assert why in message
    ok = {**s3, "key_prefix": "team/runs-2026"}
    assert parse_request(_req(output={"method": "s3", "s3": ok})).output.s3 is not None


@pytest.mark.parametrize("repo_id", ["me/a--b", "me/b..c", "me/lora.git", "me/lora.", "me/lora-"])
def test_a_hub_repo_id_follows_the_hubs_own_rule(repo_id: str) -> None:
    [(path, message)] = _problems(_req(output__huggingface__repo_id=repo_id))
    assert path == "output.huggingface.repo_id"
    assert message.startswith("is not a valid Hub repo id")


@pytest.mark.parametrize(
    ("training", "path", "why"),
    [
        ({"note": "x" * 70_000}, "training.note", "65536 characters"),
        ({"blocks": list(range(10_001))}, "training.blocks", "10000 entries"),
        ({"adapter": {"k" * 300: 1}}, "training.adapter", "at most 256 characters"),
        ({"k" * 300: 1}, "training", "at most 256 characters"),
        ({"monitoring": {"tags": ["t"] * 10_001}}, "training.monitoring.tags", "10000 entries"),
    ],
)
def test_passthrough_keys_and_values_are_bounded(
    training: dict[str, Any], path: str, why: str
) -> None:
    problems = _problems(_req(training=training))
    assert len(problems) == 1, problems
    assert problems[0][0] == path
    assert why in problems[0][1]


def test_a_secret_pasted_as_a_passthrough_key_is_masked() -> None:
    token = "hf_SECRETasKEY0001aaaaaaaaaaaaaa"
    req = parse_request(_req(output__huggingface__token=token, training={"monitoring": {token: 1}}))
    for view in (json.dumps(req.masked()), repr(req)):
        assert token not in view
    stored = Redactor(req.secret_values()).data(req.masked())
    assert token not in json.dumps(stored)
