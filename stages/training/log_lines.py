"""Reading diffusion-pipe's console: log lines to facts, and a failed run to a reason.

The lines are diffusion-pipe's (and minipipe's, which prints the same ones); see the
reference's "Console output" section. Pure functions: no I/O. `parse_line` never raises: any
line can reach it (diffusion-pipe echoes the request's config, passthrough keys included).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Sequence
from dataclasses import dataclass

# Only numbers that int() and float() accept: a near miss ("loss: -") is no fact, and a
# 5000-digit "step" is none either (int() refuses more than 4300 digits).
_INT = r"\d{1,12}(?!\d)"
_FLOAT = r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)(?![\w.+-])"
_STEP = re.compile(
    rf"steps:\s*(?P<step>{_INT})\s+loss:\s*(?P<loss>{_FLOAT})\s+"
    rf"iter time \(s\):\s*(?P<iter>{_FLOAT})"
)
_EPOCH = re.compile(rf"Started new epoch:\s*(?P<epoch>{_INT})")
_SAVED = re.compile(rf"Saving model to directory\s+(?P<name>(?:epoch|step){_INT})")
_CHECKPOINT = re.compile(rf"Saving model checkpoint:\s*(?P<path>\S*?(?P<tag>global_step{_INT}))")
_RESUMED = re.compile(rf"Resuming at epoch:\s*(?P<epoch>{_INT}),\s*step:\s*(?P<step>{_INT})")
_BATCH = re.compile(rf"Global batch size = (?P<batch>{_INT})")
COMPLETE_MARKER = "TRAINING COMPLETE!"
TRACEBACK_START = "Traceback (most recent call last):"  # Python's, whoever raised


@dataclass(frozen=True)
class Step:
    step: int
    loss: float
    iter_time_s: float


@dataclass(frozen=True)
class EpochStarted:
    epoch: int


@dataclass(frozen=True)
class ModelSaved:
    name: str  # epochN or stepN

    @property
    def epoch(self) -> int | None:
        return int(self.name[5:]) if self.name.startswith("epoch") else None


@dataclass(frozen=True)
class CheckpointSaved:
    tag: str  # global_stepN

    @property
    def step(self) -> int:
        return int(self.tag.removeprefix("global_step"))


@dataclass(frozen=True)
class Resumed:
    epoch: int
    step: int


@dataclass(frozen=True)
class GlobalBatch:
    size: int


@dataclass(frozen=True)
class Finished:
    pass


LogFact = Step | EpochStarted | ModelSaved | CheckpointSaved | Resumed | GlobalBatch | Finished


def parse_line(line: str) -> LogFact | None:
    """The fact a console line states, if any; never raises."""
    try:
        return _parse(line)
    except (ValueError, OverflowError):  # the patterns admit none; a safety net, not a path
        return None


def _parse(line: str) -> LogFact | None:
    if COMPLETE_MARKER in line:
        return Finished()
    if m := _STEP.search(line):
        return Step(int(m["step"]), float(m["loss"]), float(m["iter"]))
    if m := _EPOCH.search(line):
        return EpochStarted(int(m["epoch"]))
    if m := _SAVED.search(line):
        return ModelSaved(m["name"])
    if m := _CHECKPOINT.search(line):
        return CheckpointSaved(m["tag"])
    if m := _RESUMED.search(line):
        return Resumed(int(m["epoch"]), int(m["step"]))
    if m := _BATCH.search(line):
        return GlobalBatch(int(m["batch"]))
    return None


@dataclass(frozen=True)
class Failure:
    reason: str  # a stable code: gpu_oom, host_oom, empty_dataset, ...
    advice: str


_RULES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "gpu_oom",
        re.compile(r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED"),
        "the GPU ran out of memory: lower batch_size, resolution or lora_rank, keep "
        "activation_checkpointing on, or use a GPU with more memory",
    ),
    (
        "empty_dataset",
        re.compile(r"Processed dataset was empty"),
        "no training item survived bucketing: every size bucket had fewer items than the "
        "global batch (batch_size x gradient_accumulation_steps); add media, raise the "
        "repeats or lower the batch",
    ),
    (
        "disk_full",
        re.compile(
            r"No space left on device|\[Errno 28\]|os error 28|Disk quota exceeded"
            r"|File too large|\[Errno 27\]|PytorchStreamWriter failed writing"
            # torch.save on a full disk: its zip writer only sees a short write
            r"|inline_container\.cc.*unexpected pos \d+ vs \d+"
        ),
        "the disk filled up (the trainer's saves, or train.log, could not be written): free "
        "space on the network volume (old jobs' output folders), use a larger volume, or save "
        "less often",
    ),
    (
        "flash_attn_missing",
        # diffusion-pipe's Wan code swallows the ImportError and fails later on a bare
        # `assert FLASH_ATTN_2_AVAILABLE` (models/wan/attention.py:107), so its traceback, not
        # "No module named", is what a worker without flash-attn prints; a wheel built for
        # another torch fails at import on an undefined symbol in flash_attn_2_cuda.
        re.compile(
            r"No module named '?flash_attn|flash_attn.*(?:not found|ImportError)"
            r"|ImportError.*flash_attn"
            r"|assert FLASH_ATTN_2_AVAILABLE"
            # the same without its source line (no .py to show): the frame, then the error
            r"|models/wan/attention\.py\", line \d+, in flash_attention\nAssertionError\s*$",
            re.M,
        ),
        "flash-attn is missing or broken in the worker image (diffusion-pipe's Wan models need "
        "it): rebuild the image with the Dockerfile's FLASH_ATTN_WHEEL build argument set to a "
        "wheel matching its torch; this is a deployment problem, not your request",
    ),
    (
        "missing_model_file",
        re.compile(
            r"(?:FileNotFoundError|No such file or directory).*(?:models?/|safetensors|\.pth)"
        ),
        "a base-model file is missing; the model download was incomplete, delete the model "
        "folder's .complete.json so the next job downloads it again",
    ),
)


_ADVICE = {reason: advice for reason, _, advice in _RULES}
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def classify_failure(
    exit_code: int | None,
    finished: bool,
    tail: Sequence[str],
    *,
    log_error: OSError | None = None,
    hung: bool = False,
) -> Failure:
    """Why a run that did not succeed failed, from its exit code and last lines; `log_error` is
    why train.log could not be written, if it could not (a full volume explains the rest);
    `hung`: the driver stopped a trainer that went silent after printing a traceback."""
    if log_error is not None and log_error.errno in _DISK_FULL:
        return Failure("disk_full", _ADVICE["disk_full"])
    text = "\n".join(tail)
    for reason, pattern, advice in _RULES:
        if pattern.search(text):
            return Failure(reason, advice)
    if hung:
        return Failure(
            "hung_after_error",
            "the trainer printed an error and then made no progress, so it was stopped "
            "(diffusion-pipe does not exit when, for example, caching text embeddings fails); "
            "the error is below",
        )
    if exit_code in (247, -9, 137):
        return Failure(
            "host_oom",
            f"the trainer was killed (exit {exit_code}), usually because the worker ran out of "
            "RAM; use a worker with more memory or lower caching_batch_size",
        )
    if exit_code == 0 and not finished:
        return Failure(
            "incomplete",
            "the trainer exited 0 without printing 'TRAINING COMPLETE!' (diffusion-pipe also "
            "exits 0 when it refuses a config, e.g. more than three resolutions)",
        )
    return Failure("other", f"the trainer failed with exit code {exit_code}")
