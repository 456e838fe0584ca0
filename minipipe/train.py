"""Training loop, saves, checkpoints and resume, after diffusion-pipe's train.py and saver.py."""

from __future__ import annotations

import argparse
import io
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from minipipe.config import ConfigError, TrainConfig, load_config
from minipipe.data import Batch, BatchOrder, load_items
from minipipe.model import LORA_TARGETS, TinyModel, load_tiny_model, tokenize

SEED = 42
# Seconds to sleep per step: lets tests and local demos act mid-run (kill, `save_quit`) as they
# would against a GPU run whose steps take seconds.
STEP_SLEEP_ENV = "MINIPIPE_STEP_SLEEP"
# Seconds of start-up before the run folder exists (diffusion-pipe caches the dataset and loads
# the model first), so that tests can stop a run in that window.
STARTUP_SLEEP_ENV = "MINIPIPE_STARTUP_SLEEP"
# `epochN`/`stepN`: SIGKILL this process during that save, after `tmp/` was made.
DIE_IN_SAVE_ENV = "MINIPIPE_DIE_IN_SAVE"
# Set: an exception while caching text embeddings, whose traceback is printed while the trainer
# goes on waiting for the cache, as diffusion-pipe does (it never exits).
HANG_IN_CACHING_ENV = "MINIPIPE_HANG_IN_CACHING"
LAYER_FILE = "layer_00-model_states.pt"
STATES_FILE = "mp_rank_00_model_states.pt"


def log(line: str) -> None:
    print(line, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="minipipe", description="diffusion-pipe on CPU, tiny")
    parser.add_argument("--config", required=True, help="absolute path to the main TOML")
    parser.add_argument("--resume_from_checkpoint", nargs="?", const=True, default=None)
    # Accepted for command-line compatibility with diffusion-pipe/deepspeed; no effect here.
    parser.add_argument("--local_rank", type=int, default=-1)
    parser.add_argument("--deepspeed", action="store_true")
    parser.add_argument("--master_port", type=int, default=29500)
    parser.add_argument("--trust_cache", action="store_true")
    parser.add_argument("--regenerate_cache", action="store_true")
    return parser.parse_args(argv)


def _noise_schedule(steps: int) -> torch.Tensor:
    betas = torch.linspace(1e-4, 0.02, steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0).float()  # alpha-bar per timestep


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        # peft pulls in transformers (seconds); import only once the config is known good.
        from peft import LoraConfig, inject_adapter_in_model  # noqa: PLC0415

        self.cfg = cfg
        self.run_dir = cfg.output_dir  # set by main once the run folder exists, as there
        torch.manual_seed(SEED)
        self.model: TinyModel = load_tiny_model(cfg.model_path, cfg.model_dtype)
        self.model.requires_grad_(False)
        # alpha = rank always, as diffusion-pipe forces.
        self.lora_config = LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.rank,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(LORA_TARGETS),
        )
        inject_adapter_in_model(self.lora_config, self.model.diffusion_model)
        for name, param in self.model.diffusion_model.named_parameters():
            if "lora_" in name:
                param.data = param.data.to(cfg.adapter_dtype)
                param.requires_grad_(True)
        if cfg.init_from_existing is not None:
            self._init_from(cfg.init_from_existing)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        trainable = sum(p.numel() for p in self.params)
        total = sum(p.numel() for p in self.model.diffusion_model.parameters())
        log(
            f"trainable params: {trainable:,d} || all params: {total:,d} || "
            f"trainable%: {100 * trainable / total:.4f}"
        )
        if cfg.optimizer_type.lower() != "adamw":
            log(f"minipipe: optimizer type {cfg.optimizer_type!r} runs as torch.optim.AdamW")
        self.optimizer = torch.optim.AdamW(self.params, **cfg.optimizer_kwargs)
        self.alpha_bar = _noise_schedule(self.model.cfg.num_train_timesteps)
        self.order = BatchOrder(
            load_items(cfg.dataset, log),
            cfg.micro_batch_size,
            cfg.gradient_accumulation_steps,
            SEED,
            log,
        )
        total_steps = cfg.epochs * self.order.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: self._lr_factor(s, total_steps)
        )
        self.text_cache: dict[str, torch.Tensor] = {}
        self.last_checkpoint: float | None = None  # for checkpoint_every_n_minutes
        log(f"Global batch size = {cfg.global_batch_size}")

    def _lr_factor(self, step: int, total_steps: int) -> float:
        factor = 1.0
        if self.cfg.warmup_steps > 0:
            factor = min(1.0, (step + 1) / self.cfg.warmup_steps)
        if self.cfg.lr_scheduler == "linear":
            factor *= max(0.0, 1.0 - step / max(1, total_steps))
        return factor

    def _encode(self, captions: Sequence[str]) -> torch.Tensor:
        # The frozen text encoder runs once per caption, like diffusion-pipe's embedding cache.
        for caption in captions:
            if caption not in self.text_cache:
                ids = tokenize(caption, self.model.cfg.max_tokens)[None]
                with torch.no_grad():
                    self.text_cache[caption] = self.model.text_encoder(ids)[0]
        return torch.stack([self.text_cache[c] for c in captions])

    def train_step(self, batch: Batch, step: int) -> float:
        """One optimizer step over the global batch; noise seeded by step so resume is exact."""
        gen = torch.Generator().manual_seed(SEED * 7919 + step)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in batch.micro_batches:
            x0 = torch.stack([item.pixels for item in micro])
            context = self._encode([item.caption for item in micro])
            noise = torch.randn(x0.shape, generator=gen)
            t = torch.randint(0, len(self.alpha_bar), (x0.shape[0],), generator=gen)
            ab = self.alpha_bar[t][:, None, None, None]
            xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
            pred = self.model.diffusion_model(xt, t, context)
            loss = F.mse_loss(pred.float(), noise) / len(batch.micro_batches)
            loss.backward()  # type: ignore[no-untyped-call]
            total += float(loss.item())
        if self.cfg.gradient_clipping > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.gradient_clipping)
        self.optimizer.step()
        self.scheduler.step()
        return total

    def _init_from(self, folder: Path) -> None:
        """diffusion-pipe's init_from_existing: a folder holding exactly one .safetensors."""
        files = sorted(folder.glob("*.safetensors"))
        if len(files) != 1:
            raise ValueError(
                f"init_from_existing: {folder} must hold exactly one .safetensors, "
                f"found {len(files)}"
            )
        log(f"Initializing LoRA weights from {files[0]}")
        self.load_lora_state_dict(load_file(str(files[0])))

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """Trainable weights named as diffusion-pipe saves them (no `.default`, ComfyUI prefix)."""
        return {
            "diffusion_model." + name.replace(".default", ""): param.detach().clone()
            for name, param in self.model.diffusion_model.named_parameters()
            if param.requires_grad
        }

    def load_lora_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = dict(self.model.diffusion_model.named_parameters())
        for key, value in state.items():
            name = key.removeprefix("diffusion_model.")
            name = name.replace(".lora_A.", ".lora_A.default.").replace(
                ".lora_B.", ".lora_B.default."
            )
            if name not in own:
                raise ValueError(f"checkpoint tensor {key} matches no LoRA parameter")
            own[name].data.copy_(value)

    def save_model(self, name: str) -> None:
        """`<run_dir>/<name>/` as diffusion-pipe's saver.save_adapter writes it: `tmp/` made with
        `exist_ok=False` (a leftover from a killed save makes this raise FileExistsError, as
        there), the state dict staged in it, the adapter files written in place, then `tmp/`
        removed. A folder that still holds `tmp/` is an unfinished save."""
        log(f"Saving model to directory {name}")
        folder = self.run_dir / name
        tmp = folder / "tmp"
        os.makedirs(tmp, exist_ok=False)
        state = self.lora_state_dict()
        if self.cfg.save_dtype is not None:
            state = {k: v.to(self.cfg.save_dtype) for k, v in state.items()}
        torch.save(state, tmp / "state_dict_0.bin")
        if os.environ.get(DIE_IN_SAVE_ENV) == name:  # a worker killed mid-save, on request
            os.kill(os.getpid(), signal.SIGKILL)
        state = torch.load(tmp / "state_dict_0.bin", weights_only=True)
        self.lora_config.save_pretrained(str(folder))
        save_file(state, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
        shutil.copy(self.cfg.path, folder)
        shutil.rmtree(tmp)

    def save_checkpoint(self, step: int, epoch: int, position: int, examples: int) -> None:
        """`global_step<step>/` written under a temporary name, renamed, then `latest`."""
        tag = f"global_step{step}"
        self.last_checkpoint = time.monotonic()
        final = self.run_dir / tag
        tmp = self.run_dir / f".{tag}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        log(f"[Rank 0] Saving model checkpoint: {final / STATES_FILE}")
        torch.save(self.lora_state_dict(), tmp / LAYER_FILE)
        states = {
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(),
            "global_steps": step,
            "client_state": {
                "step": step,
                "examples": examples,
                "custom_loader": {"epoch": epoch, "position": position},
            },
        }
        torch.save(states, tmp / STATES_FILE)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        latest_tmp = self.run_dir / ".latest.tmp"
        latest_tmp.write_text(tag, encoding="utf-8")
        os.replace(latest_tmp, self.run_dir / "latest")

    def load_checkpoint(self) -> tuple[int, int, int, int]:
        """Returns (last step, epoch, position in epoch, examples) from `latest`."""
        latest = self.run_dir / "latest"
        if not latest.is_file():
            raise FileNotFoundError(f"Unable to find latest file at {latest}")
        folder = self.run_dir / latest.read_text(encoding="utf-8").strip()
        self.load_lora_state_dict(torch.load(folder / LAYER_FILE, weights_only=True))
        states: dict[str, Any] = torch.load(folder / STATES_FILE, weights_only=True)
        self.optimizer.load_state_dict(states["optimizer"])
        self.scheduler.load_state_dict(states["lr_scheduler"])
        client = states["client_state"]
        loader = client["custom_loader"]
        return (
            int(client["step"]),
            int(loader["epoch"]),
            int(loader["position"]),
            int(client["examples"]),
        )

    def _process_step(
        self, step: int, epoch: int, position: int, examples: int, checkpointed: bool
    ) -> tuple[bool, bool, bool]:
        """The user's signal files, step saves and the minutes timer, as diffusion-pipe's
        saver.process_step. Returns (checkpointed, saved, quit)."""
        cfg = self.cfg
        manual_save = manual_quit = saved = False
        if (self.run_dir / "save").is_file():
            manual_save = True
            (self.run_dir / "save").unlink()
        elif (self.run_dir / "save_quit").is_file():
            manual_save = manual_quit = True
            (self.run_dir / "save_quit").unlink()
        if cfg.save_every_n_steps and step % cfg.save_every_n_steps == 0:
            self.save_model(f"step{step}")
            saved = True
        timed = False
        if cfg.checkpoint_every_n_minutes is not None:
            now = time.monotonic()
            if self.last_checkpoint is None:
                self.last_checkpoint = now  # the timer starts at the first check, as there
            elif now - self.last_checkpoint >= cfg.checkpoint_every_n_minutes * 60:
                timed = True
        checkpointed_now = False
        if (timed or manual_save) and not checkpointed:
            self.save_checkpoint(step, epoch, position, examples)
            checkpointed_now = True
        return checkpointed_now, saved, manual_quit

    def run(self, resume: bool) -> int:
        """diffusion-pipe's loop (train.py): the end of the last epoch is checked before
        `max_steps`, and the run's last save is whichever ended it. Resumed from the final
        checkpoint (its loader state is the epoch after the last), it trains one more epoch,
        as diffusion-pipe does."""
        cfg = self.cfg
        per_epoch = self.order.steps_per_epoch
        step, epoch, position, examples = 1, 1, 0, 0
        if resume:
            last_step, epoch, position, examples = self.load_checkpoint()
            step = last_step + 1
            log(f"Resuming training from checkpoint. Resuming at epoch: {epoch}, step: {step}")
        batches = self.order.epoch_batches(epoch)
        step_sleep = float(os.environ.get(STEP_SLEEP_ENV, "0"))
        while True:
            time.sleep(step_sleep)
            start = time.perf_counter()
            batch = batches[position]
            loss = self.train_step(batch, step)
            position += 1
            examples += batch.size
            elapsed = time.perf_counter() - start
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at step {step}")
            log(
                f"steps: {step} loss: {loss:0.4f} iter time (s): {elapsed:0.3f} "
                f"samples/sec: {batch.size / elapsed:0.3f}"
            )
            checkpointed = saved = False
            if position == per_epoch:  # saver.process_epoch: the epoch just finished
                if cfg.checkpoint_every_n_epochs and epoch % cfg.checkpoint_every_n_epochs == 0:
                    self.save_checkpoint(step, epoch + 1, 0, examples)
                    checkpointed = True
                if cfg.save_every_n_epochs and epoch % cfg.save_every_n_epochs == 0:
                    self.save_model(f"epoch{epoch}")
                    saved = True
                if epoch + 1 > cfg.epochs:
                    final, epoch, position = f"epoch{epoch}", epoch + 1, 0
                    break
                epoch, position = epoch + 1, 0
                batches = self.order.epoch_batches(epoch)
                log(f"Started new epoch: {epoch}")
            checkpointed, saved, quit_now = self._process_step(
                step, epoch, position, examples, checkpointed
            )
            if quit_now:
                log("Manually quitting")
                return 0
            if cfg.max_steps and step >= cfg.max_steps:
                final = f"step{step}"
                break
            step += 1
        if not checkpointed:
            self.save_checkpoint(step, epoch, position, examples)
        if not saved:
            self.save_model(final)
        log("TRAINING COMPLETE!")
        return 0


def _most_recent_run_dir(output_dir: Path) -> Path:
    entries = sorted(output_dir.glob("*"))
    if not entries:
        raise FileNotFoundError(f"no run folder to resume in {output_dir}")
    return entries[-1]


def main(argv: Sequence[str] | None = None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):  # one flushed line per log line
        sys.stdout.reconfigure(line_buffering=True)
    args = parse_args(argv)
    config_path = Path(args.config).resolve()
    try:
        cfg, warnings = load_config(config_path)
    except ConfigError as exc:
        print(f"minipipe: config error: {exc}", file=sys.stderr, flush=True)
        return 1
    for warning in warnings:
        log(warning)
    if len(cfg.dataset.resolutions) > 3:
        log("WARNING: more than 3 resolutions; diffusion-pipe refuses to train (exit 0)")
        return 0
    _cache(float(os.environ.get(STARTUP_SLEEP_ENV, "0")))
    trainer = Trainer(cfg)
    # diffusion-pipe makes the run folder only after caching and loading the model (train.py).
    resume = args.resume_from_checkpoint
    if resume is None:
        resume = cfg.resume_from_checkpoint
    if resume:
        run_dir = (
            _most_recent_run_dir(cfg.output_dir) if resume is True else cfg.output_dir / str(resume)
        )
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        run_dir = cfg.output_dir / datetime.now(UTC).strftime("%Y%m%d_%H-%M-%S")
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cfg.path, run_dir / cfg.path.name)
        shutil.copy2(cfg.dataset.path, run_dir / cfg.dataset.path.name)
    trainer.run_dir = run_dir
    return trainer.run(resume=bool(resume))


def _cache(seconds: float) -> None:
    """The caching phase: `seconds` long; on request it fails the way diffusion-pipe's does."""
    time.sleep(seconds)
    if os.environ.get(HANG_IN_CACHING_ENV):

        def encode() -> None:
            raise RuntimeError("text encoder failed while caching embeddings")

        worker = threading.Thread(target=encode, name="cache-text-embeddings")
        worker.start()  # its traceback is printed; nothing ever fills the cache
        worker.join()
        threading.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
