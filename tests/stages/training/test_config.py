"""diffusion-pipe config rendering: golden files, field mapping, passthrough, owned keys, traps."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from orchestrator.catalogue import ALL_MODEL_TYPES
from orchestrator.plan import trainer_spec
from orchestrator.request import TrainingRequest, parse_request
from stages.errors import ConfigError
from stages.training.config import JobPaths, RenderedConfigs, render, write_configs
from stages.training.traps import check_dataset, check_main
from tests.support.golden import GOLDEN_DIR, GOLDEN_PATHS, golden_texts, main

WAN_VIDEOS: dict[str, Any] = {
    "model_type": "wan14b_t2v",
    "dataset": {
        "type": "precaptioned",
        "images_url": "https://example.com/i.zip",
        "videos_url": "https://example.com/v.zip",
        "image_repeats": 3,
        "video_repeats": 7,
    },
}


def _request(body: dict[str, Any] | None = None, **training: Any) -> TrainingRequest:
    body = copy.deepcopy(body or WAN_VIDEOS)
    if training:
        body["training"] = training
    return parse_request(body)


def _render(request: TrainingRequest, paths: JobPaths, **counts: Any) -> RenderedConfigs:
    """The configs the job would render for `request`: its trainer spec, built as the pipeline
    builds it, then rendered."""
    return render(trainer_spec(request), paths, **counts)


def _bypass(request: TrainingRequest, **update: Any) -> TrainingRequest:
    """A request carrying values the request schema refuses, to prove the renderer refuses them
    too (model_copy skips validation)."""
    training = request.training.model_copy(update=update)
    return request.model_copy(update={"training": training})


# --- golden files ------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ALL_MODEL_TYPES)
@pytest.mark.parametrize("name", ["dataset.toml", "main.toml"])
def test_golden_file(model_type: str, name: str) -> None:
    # Regenerate with: python -m tests.support.golden --regen-golden (then review the diff).
    expected = (GOLDEN_DIR / model_type / name).read_text(encoding="utf-8")
    assert golden_texts(model_type)[name] == expected


def test_regen_writes_exactly_the_golden_files(tmp_path: Path) -> None:
    assert main(["--regen-golden", "--dir", str(tmp_path)]) == 0
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.toml"))
    committed = sorted(p.relative_to(GOLDEN_DIR) for p in GOLDEN_DIR.rglob("*.toml"))
    assert written == committed
    assert len(written) == 2 * len(ALL_MODEL_TYPES)
    for rel in written:
        assert (tmp_path / rel).read_bytes() == (GOLDEN_DIR / rel).read_bytes(), rel


@pytest.mark.parametrize("model_type", ALL_MODEL_TYPES)
def test_golden_main_points_at_the_job_and_models(model_type: str) -> None:
    main_toml = tomllib.loads((GOLDEN_DIR / model_type / "main.toml").read_text())
    assert main_toml["output_dir"] == "/work/job/output"
    assert main_toml["dataset"] == "/work/job/config/dataset.toml"
    assert main_toml["checkpoint_every_n_minutes"] == 20
    assert main_toml["adapter"]["type"] == "lora"
    assert "alpha" not in main_toml["adapter"]
    paths = [v for v in main_toml["model"].values() if isinstance(v, str) and "/" in v]
    assert paths
    assert all(p.startswith("/models/") for p in paths)


# --- mapping ----------------------------------------------------------------------------------


def test_seed_fields_map_to_their_diffusion_pipe_keys() -> None:
    req = _request(
        epochs=7,
        batch_size=3,
        gradient_accumulation_steps=2,
        gradient_clipping=0.5,
        warmup_steps=11,
        learning_rate=3e-5,
        lora_rank=16,
        lora_dtype="float32",
        save_every_n_epochs=5,
        checkpoint_every_n_minutes=15,
        save_dtype="float16",
        optimizer_type="adamw8bit",
        optimizer_betas=[0.8, 0.95],
        optimizer_weight_decay=0.1,
        optimizer_eps=1e-6,
        video_clip_mode="single_beginning",
        frame_buckets=[1, 17, 33],
        resolution=512,
        activation_checkpointing="unsloth",
        caching_batch_size=4,
        eval_every_n_epochs=2,
        eval_before_first_step=False,
    )
    configs = _render(req, GOLDEN_PATHS)
    m, d = configs.main, configs.dataset
    assert m["epochs"] == 7
    assert m["micro_batch_size_per_gpu"] == 3
    assert "batch_size" not in m
    assert m["gradient_accumulation_steps"] == 2
    assert m["gradient_clipping"] == 0.5
    assert m["warmup_steps"] == 11
    assert m["save_every_n_epochs"] == 5
    assert m["checkpoint_every_n_minutes"] == 15
    assert m["save_dtype"] == "float16"
    assert m["activation_checkpointing"] == "unsloth"
    assert m["caching_batch_size"] == 4
    assert m["eval_every_n_epochs"] == 2
    assert m["eval_before_first_step"] is False
    assert m["video_clip_mode"] == "single_beginning"  # a top-level key, not a dataset one
    assert m["adapter"] == {"type": "lora", "rank": 16, "dtype": "float32"}
    assert m["optimizer"] == {
        "type": "adamw8bit",
        "lr": 3e-5,
        "betas": [0.8, 0.95],
        "weight_decay": 0.1,
        "eps": 1e-6,
    }
    for seed_only in ("learning_rate", "lora_rank", "resolution", "frame_buckets"):
        assert seed_only not in m
    assert d["resolutions"] == [512]
    assert d["frame_buckets"] == [1, 17, 33]
    assert d["directory"] == [
        {"path": "/work/job/dataset/images", "num_repeats": 3},
        {"path": "/work/job/dataset/videos", "num_repeats": 7},
    ]


def test_only_the_media_the_model_trains_on() -> None:
    flux = parse_request(
        {
            "model_type": "flux",
            "dataset": {"type": "precaptioned", "images_url": "https://x/i.zip"},
            "api_keys": {"huggingface_token": "hf_abc"},
        }
    )
    configs = _render(flux, GOLDEN_PATHS)  # GOLDEN_PATHS has a videos dir too
    assert [d["path"] for d in configs.dataset["directory"]] == ["/work/job/dataset/images"]
    assert "frame_buckets" not in configs.dataset
    assert "video_clip_mode" not in configs.main

    i2v = parse_request(
        {"model_type": "wan14b_i2v", "dataset": {"type": "precaptioned", "videos_url": "https://x"}}
    )
    dirs = _render(i2v, GOLDEN_PATHS).dataset["directory"]
    assert [d["path"] for d in dirs] == ["/work/job/dataset/videos"]


def test_a_job_without_a_media_directory_is_refused() -> None:
    paths = JobPaths(Path("/c"), Path("/o"), Path("/m"), images_dir=None, videos_dir=Path("/v"))
    qwen = _request(
        {"model_type": "qwen", "dataset": {"type": "precaptioned", "images_url": "https://x"}}
    )
    with pytest.raises(ConfigError, match="needs a directory of images") as info:
        _render(qwen, paths)
    assert info.value.field == "dataset"


# --- passthrough and owned keys --------------------------------------------------------------


def test_passthrough_lands_in_the_right_table() -> None:
    req = _request(
        blocks_to_swap=8,
        lr_scheduler="cosine",
        monitoring={"enable_wandb": False},
        model={"transformer_dtype": "float8", "dtype": "float16"},
        adapter={"dropout": 0.05},
        optimizer={"stabilize": True},
    )
    configs = _render(req, GOLDEN_PATHS)
    m = tomllib.loads(configs.main_toml())
    assert m["blocks_to_swap"] == 8
    assert m["lr_scheduler"] == "cosine"
    assert m["monitoring"] == {"enable_wandb": False}
    assert m["model"]["transformer_dtype"] == "float8"
    assert m["model"]["dtype"] == "float16"  # template values may be overridden...
    assert m["model"]["ckpt_path"] == "/models/Wan/Wan2.1-T2V-14B"  # ...paths stay
    assert m["adapter"] == {"type": "lora", "rank": 32, "dtype": "bfloat16", "dropout": 0.05}
    assert m["optimizer"]["stabilize"] is True
    assert m["optimizer"]["lr"] == 2e-5
    for key in ("dropout", "stabilize", "transformer_dtype"):
        assert key not in m  # table keys never leak to the top level


@pytest.mark.parametrize(
    ("update", "field"),
    [
        ({"output_dir": "/tmp/elsewhere"}, "training.output_dir"),
        ({"dataset": "/etc/dataset.toml"}, "training.dataset"),
        ({"micro_batch_size_per_gpu": 4}, "training.micro_batch_size_per_gpu"),
        ({"resolutions": [256, 512]}, "training.resolutions"),
        ({"eval_datasets": ["/x.toml"]}, "training.eval_datasets"),
        ({"model": {"ckpt_path": "/tmp/evil"}}, "training.model.ckpt_path"),
        ({"model": {"type": "flux"}}, "training.model.type"),
        ({"adapter": {"rank": 4}}, "training.adapter.rank"),
        ({"adapter": {"alpha": 16}}, "training.adapter.alpha"),
        ({"optimizer": {"lr": 1.0}}, "training.optimizer.lr"),
    ],
)
def test_owned_keys_are_refused_by_the_renderer_too(update: dict[str, Any], field: str) -> None:
    req = _bypass(_request(), **update)
    with pytest.raises(ConfigError) as info:
        _render(req, GOLDEN_PATHS)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_values_cannot_inject_toml() -> None:
    nasty = 'x"\n[model]\ntype = "flux"\n#'
    req = _request(my_key=nasty, adapter={"note": "]]\n[[directory]]"})
    configs = _render(req, GOLDEN_PATHS)
    parsed = tomllib.loads(configs.main_toml())
    assert parsed["my_key"] == nasty
    assert parsed["model"]["type"] == "wan"
    assert parsed == configs.main


# --- traps -------------------------------------------------------------------------------------


def _rendered_main() -> dict[str, Any]:
    return _render(_request(), GOLDEN_PATHS).main


def test_no_save_key_is_refused() -> None:
    m = _rendered_main()
    check_main(m)
    del m["save_every_n_epochs"]
    with pytest.raises(ConfigError, match="save_every_n_steps") as info:
        check_main(m)
    assert info.value.field == "training.save_every_n_epochs"
    check_main({**m, "save_every_n_steps": 100})  # any one of the three will do


def test_alpha_in_adapter_is_refused() -> None:
    m = _rendered_main()
    m["adapter"]["alpha"] = 32
    with pytest.raises(ConfigError, match="equal to rank") as info:
        check_main(m)
    assert info.value.field == "training.adapter.alpha"


def test_eval_datasets_must_be_tables() -> None:
    m = _rendered_main()
    check_main({**m, "eval_datasets": [{"name": "val", "config": "/c/val.toml"}]})
    for bad in (["/c/val.toml"], "/c/val.toml", [{"config": "/c/val.toml"}]):
        with pytest.raises(ConfigError, match="list of tables") as info:
            check_main({**m, "eval_datasets": bad})
        assert info.value.field == "eval_datasets"


def test_more_than_three_resolutions_are_refused() -> None:
    d = _render(_request(), GOLDEN_PATHS).dataset
    check_dataset({**d, "resolutions": [512, 768, 1024]})
    with pytest.raises(ConfigError, match="4 resolutions") as info:
        check_dataset({**d, "resolutions": [256, 512, 768, 1024]})
    assert info.value.field == "training.resolution"
    d["directory"][0]["resolutions"] = [1, 2, 3, 4]  # a per-directory override counts too
    with pytest.raises(ConfigError):
        check_dataset(d)


def test_the_trainer_never_gets_a_clip_mode_diffusion_pipe_lacks() -> None:
    # multiple_overlapping is cut by the service; diffusion-pipe gets single_beginning
    rendered = _render(_request(video_clip_mode="multiple_overlapping"), GOLDEN_PATHS)
    assert rendered.main["video_clip_mode"] == "single_beginning"
    with pytest.raises(ConfigError, match="video_clip_mode") as info:
        check_main({**_rendered_main(), "video_clip_mode": "multiple_overlapping"})
    assert info.value.field == "training.video_clip_mode"
    assert "single_beginning, single_middle" in str(info.value)


def test_global_batch_larger_than_the_dataset_is_refused() -> None:
    req = _request(batch_size=2, gradient_accumulation_steps=4)  # global batch 8
    _render(req, GOLDEN_PATHS)  # sizes unknown: nothing to check
    _render(req, GOLDEN_PATHS, image_count=3, video_count=2)  # 3x3=9 and 2x7=14 items
    with pytest.raises(ConfigError) as info:
        _render(req, GOLDEN_PATHS, image_count=2, video_count=2)  # 2x3=6 images < 8
    assert info.value.field == "training.batch_size"
    assert "global batch 8" in str(info.value)
    assert "dataset.image_repeats" in str(info.value)
    with pytest.raises(ConfigError, match="video_repeats"):
        _render(req, GOLDEN_PATHS, image_count=10, video_count=1)  # 1x7=7 videos < 8
    with pytest.raises(ConfigError, match="2 GPUs"):
        _render(req, GOLDEN_PATHS, image_count=3, video_count=2, num_gpus=2)


def test_a_medium_the_dataset_lacks_gets_no_directory_and_no_batch_check() -> None:
    # Wan trains on images and videos; a videos-only dataset has no images folder, and
    # diffusion-pipe stops on a directory that does not exist ("Invalid path").
    req = _request(batch_size=2, gradient_accumulation_steps=4)
    paths = [d["path"] for d in _render(req, GOLDEN_PATHS).dataset["directory"]]
    assert paths == [str(GOLDEN_PATHS.images_dir), str(GOLDEN_PATHS.videos_dir)]  # not known yet
    videos_only = _render(req, GOLDEN_PATHS, image_count=0, video_count=2)
    assert [d["path"] for d in videos_only.dataset["directory"]] == [str(GOLDEN_PATHS.videos_dir)]
    images_only = _render(req, GOLDEN_PATHS, image_count=3, video_count=0)
    assert [d["path"] for d in images_only.dataset["directory"]] == [str(GOLDEN_PATHS.images_dir)]
    with pytest.raises(ConfigError, match="needs a directory"):
        _render(req, GOLDEN_PATHS, image_count=0, video_count=0)


def test_batch_check_ignores_media_the_model_does_not_train_on() -> None:
    flux = parse_request(
        {
            "model_type": "flux",
            "dataset": {"type": "precaptioned", "images_url": "https://x/i.zip"},
            "training": {"gradient_accumulation_steps": 4},
            "api_keys": {"huggingface_token": "hf_abc"},
        }
    )
    _render(flux, GOLDEN_PATHS, image_count=4, video_count=0)
    with pytest.raises(ConfigError):
        _render(flux, GOLDEN_PATHS, image_count=3)


# --- writing -----------------------------------------------------------------------------------


def test_write_configs(tmp_path: Path) -> None:
    paths = JobPaths.for_job(tmp_path, "job-1")
    configs = _render(_request(), paths)
    dataset_file, main_file = write_configs(configs, paths.config_dir)
    assert dataset_file == tmp_path / "jobs" / "job-1" / "config" / "dataset.toml"
    assert main_file.name == "wan14b_t2v.toml"
    assert sorted(p.name for p in paths.config_dir.iterdir()) == ["dataset.toml", "wan14b_t2v.toml"]
    main_toml = tomllib.loads(main_file.read_text())
    assert main_toml == configs.main
    assert Path(main_toml["dataset"]) == dataset_file
    assert tomllib.loads(dataset_file.read_text()) == configs.dataset
    assert main_toml["output_dir"] == str(tmp_path / "jobs" / "job-1" / "output")
    assert main_toml["model"]["ckpt_path"] == str(tmp_path / "models" / "Wan" / "Wan2.1-T2V-14B")
