"""The answer to a failed run: the exception and where it was raised, no worker paths."""

from __future__ import annotations

from stages.training.failure_text import scrub, summary

ROOTS = ["/opt/diffusion-pipe", "/runpod-volume/jobs/abc"]
TAIL = [
    "steps: 3 loss: 0.1000 iter time (s): 1.000 samples/sec: 1.000",
    "Traceback (most recent call last):",
    '  File "/opt/diffusion-pipe/train.py", line 990, in <module>',
    "    main()",
    '  File "/opt/venv/lib/python3.12/site-packages/deepspeed/runtime/pipe/engine.py", line 388,'
    " in train_batch",
    "    self._exec_schedule(sched)",
    '  File "/opt/diffusion-pipe/models/wan/attention.py", line 107, in flash_attention',
    "    assert FLASH_ATTN_2_AVAILABLE",
    "           ^^^^^^^^^^^^^^^^^^^^^^",
    "AssertionError",
    '[2026-12-01 10:00:00,000] [ERROR] [launch.py:341:sigkill_handler] ["/opt/venv/bin/python",'
    ' "-u", "train.py", "--config", "/runpod-volume/jobs/abc/config/main.toml"] exits with'
    " return code = 1",
]


def test_the_answer_is_the_exception_and_the_frame_that_raised_it() -> None:
    lines = summary(TAIL, ROOTS)
    assert lines[0] == "AssertionError"
    assert "at models/wan/attention.py:107 in flash_attention" in lines
    assert "  assert FLASH_ATTN_2_AVAILABLE" in lines
    assert not any("steps:" in line for line in lines)
    text = "\n".join(lines)
    assert "/opt/" not in text
    assert "/runpod-volume" not in text
    assert "config/main.toml" in text  # relative to the job, which the user can place


def test_the_last_of_chained_tracebacks_is_the_one_shown() -> None:
    tail = [
        "Traceback (most recent call last):",
        '  File "/opt/diffusion-pipe/utils/cache.py", line 10, in get',
        "KeyError: 'x'",
        "",
        "During handling of the above exception, another exception occurred:",
        "",
        "Traceback (most recent call last):",
        '  File "/opt/diffusion-pipe/utils/cache.py", line 12, in get',
        "RuntimeError: cache is corrupt",
    ]
    assert summary(tail, ROOTS) == ["RuntimeError: cache is corrupt", "at utils/cache.py:12 in get"]


def test_without_a_traceback_the_last_lines_that_are_not_progress() -> None:
    tail = [f"steps: {i} loss: 0.5 iter time (s): 0.1 samples/sec: 1" for i in range(30)]
    tail += ["Processed dataset was empty", "exits with return code = 1"]
    assert summary(tail) == ["Processed dataset was empty", "exits with return code = 1"]


def test_paths_outside_the_roots_keep_only_what_a_reader_can_place() -> None:
    assert scrub("open /home/worker/.cache/x/model.pth failed") == "open model.pth failed"
    assert scrub("in /usr/lib/python3/site-packages/torch/nn/x.py") == "in torch/nn/x.py"
    assert len(scrub("x" * 1000)) == 300
