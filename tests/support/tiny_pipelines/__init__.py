"""Tiny random diffusers pipelines per model family with LoRAs as diffusion-pipe saves them
(`build`), and the runner that executes a model card's diffusers snippet against them
(`snippets`). This package imports nothing heavy itself: `snippets` runs in a subprocess that must
set up its environment before diffusers is imported."""
