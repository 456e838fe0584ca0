"""The classifier reads the failure diffusion-pipe really prints without flash-attn.

diffusion-pipe 8f83dbf's models/wan/attention.py imports flash_attn inside `try/except
ModuleNotFoundError` and fails later at line 107, `assert FLASH_ATTN_2_AVAILABLE`: T2V at the first
step (models/wan/model.py:146, WanSelfAttention.forward), I2V already while caching latents
(models/wan/clip.py:79/191, the CLIP encoder). The tails below follow those files and lines.
"""

from __future__ import annotations

import pytest

from stages.training import log_lines as tl

DP = "/opt/diffusion-pipe"
SITE = "/opt/venv/lib/python3.12/site-packages"

T2V_FIRST_STEP = [
    "Traceback (most recent call last):",
    f'  File "{DP}/train.py", line 932, in <module>',
    "    loss = model_engine.train_batch().item()",
    "           ^^^^^^^^^^^^^^^^^^^^^^^^^^",
    f'  File "{SITE}/deepspeed/runtime/pipe/engine.py", line 390, in train_batch',
    "    self._exec_schedule(sched)",
    f'  File "{DP}/models/wan/wan.py", line 526, in forward',
    "    x = self.block(x, e0, seq_lens, grid_sizes, freqs, context, None)",
    "        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
    f'  File "{SITE}/torch/nn/modules/module.py", line 1775, in _wrapped_call_impl',
    "    return self._call_impl(*args, **kwargs)",
    f'  File "{DP}/models/wan/model.py", line 146, in forward',
    "    x = flash_attention(",
    "        ^^^^^^^^^^^^^^^^",
    f'  File "{DP}/models/wan/attention.py", line 107, in flash_attention',
    "    assert FLASH_ATTN_2_AVAILABLE",
    "AssertionError",
    "[2026-08-20 10:00:01,000] [INFO] [launch.py:351:main] Process 812 exits with return code = 1",
]

I2V_CACHING = [
    "Caching latents: 0%|          | 0/4 [00:00<?, ?it/s]",
    "Traceback (most recent call last):",
    f'  File "{SITE}/multiprocess/pool.py", line 125, in worker',
    "    result = (True, func(*args, **kwds))",
    f'  File "{DP}/models/wan/wan.py", line 309, in fn',
    "    clip_context = self.clip.visual(first_frame.to(p.device, p.dtype))",
    f'  File "{DP}/models/wan/clip.py", line 79, in forward',
    "    x = flash_attention(q, k, v, dropout_p=p, causal=self.causal, version=2)",
    f'  File "{DP}/models/wan/attention.py", line 107, in flash_attention',
    "    assert FLASH_ATTN_2_AVAILABLE",
    "AssertionError",
]

# The same failure where Python cannot show the source line (e.g. a .pyc-only install).
NO_SOURCE = [
    f'  File "{DP}/models/wan/model.py", line 176, in forward',
    f'  File "{DP}/models/wan/attention.py", line 107, in flash_attention',
    "AssertionError",
]

# A wheel built for another torch: found, but its extension does not load.
WRONG_TORCH = [
    f'  File "{SITE}/flash_attn/flash_attn_interface.py", line 15, in <module>',
    "    import flash_attn_2_cuda as flash_attn_gpu",
    f"ImportError: {SITE}/flash_attn_2_cuda.cpython-312-x86_64-linux-gnu.so: undefined symbol: "
    "_ZN3c104cuda9SetDeviceEa",
]


@pytest.mark.parametrize(
    "tail",
    [T2V_FIRST_STEP, I2V_CACHING, NO_SOURCE, WRONG_TORCH],
    ids=["t2v-first-step", "i2v-caching", "no-source-line", "wheel-for-another-torch"],
)
def test_the_real_flash_attn_failures_are_classified(tail: list[str]) -> None:
    failure = tl.classify_failure(1, False, tail)
    assert failure.reason == "flash_attn_missing"
    assert "FLASH_ATTN_WHEEL" in failure.advice


@pytest.mark.parametrize(
    "tail",
    [
        # Another assertion, elsewhere in Wan: not a flash-attn problem.
        [
            f'  File "{DP}/models/wan/wan.py", line 291, in __init__',
            "    assert self.model_type == 'i2v'",
            "AssertionError",
        ],
        # flash_attention's other assertion (a head dim over 256, a tensor off the GPU).
        [
            f'  File "{DP}/models/wan/attention.py", line 51, in flash_attention',
            "    assert q.device.type == 'cuda' and q.size(-1) <= 256",
            "AssertionError",
        ],
    ],
    ids=["other-assertion", "other-assertion-in-flash-attention"],
)
def test_other_failures_are_not_called_flash_attn(tail: list[str]) -> None:
    assert tl.classify_failure(1, False, tail).reason == "other"
