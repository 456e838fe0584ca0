"""The keys the config renderer writes itself, each with the reason a request may not set it.

A user value for one of these would point diffusion-pipe at the wrong files or fight a
documented field. The request schema refuses them (`orchestrator.request.passthrough`) and the
renderer refuses them again (`stages.training.config`), so no path can reach the TOML.
"""

from __future__ import annotations

from collections.abc import Mapping

_SERVICE = "is set by the service"
_RESUME_HINT = (
    "a stopped job resumes from its checkpoint when delivered again (POST /retry/{id}); "
    'to continue it under a new id send the top-level "resume_from": "<job id>"'
)
OWNED_TOP_LEVEL: Mapping[str, str] = {
    "output_dir": f"{_SERVICE} (each job has its own output folder)",
    "dataset": f"{_SERVICE} (it writes the dataset config from the dataset section)",
    "eval_datasets": f"{_SERVICE} (it writes the dataset config from the dataset section)",
    "resume_from_checkpoint": f"{_SERVICE}; {_RESUME_HINT}",
    "micro_batch_size_per_gpu": "use training.batch_size",
    "resolutions": "use training.resolution",
}
_WEIGHTS = f"{_SERVICE} (it downloads the model's weights)"
OWNED_MODEL: Mapping[str, str] = {
    "type": f"{_SERVICE} from model_type",
    **{
        key: _WEIGHTS
        for key in (
            "diffusers_path",
            "ckpt_path",
            "checkpoint_path",
            "transformer_path",
            "single_file_path",
            "diffusion_model",
            "vae",
            "vae_path",
            "text_encoders",
            "text_encoder",
            "text_encoder_path",
            "llm_path",
            "clip_path",
            "t5_path",
            "llama3_path",
            "byt5_path",
            "audio_vae",
            "merge_adapters",
        )
    },
}
OWNED_ADAPTER: Mapping[str, str] = {
    "type": f"{_SERVICE} (LoRA)",
    "rank": "use training.lora_rank",
    "dtype": "use training.lora_dtype",
    "alpha": "diffusion-pipe always sets alpha equal to rank",
    "init_from_existing": f"{_SERVICE}; it would name a folder on the worker",
    "fuse_adapters": f"{_SERVICE}; it would name files on the worker",
}
OWNED_OPTIMIZER: Mapping[str, str] = {
    "type": "use training.optimizer_type",
    "lr": "use training.learning_rate",
    "betas": "use training.optimizer_betas",
    "weight_decay": "use training.optimizer_weight_decay",
    "eps": "use training.optimizer_eps",
}
OWNED_TABLES: Mapping[str, Mapping[str, str]] = {
    "model": OWNED_MODEL,
    "adapter": OWNED_ADAPTER,
    "optimizer": OWNED_OPTIMIZER,
}
TABLES: tuple[str, ...] = ("model", "adapter", "optimizer")
