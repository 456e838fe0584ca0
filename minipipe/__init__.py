"""minipipe: a miniature diffusion-pipe that trains a tiny LoRA on the CPU.

It honours diffusion-pipe's command line, TOML keys, output layout and log lines, so the
orchestrator can drive it in tests exactly as it drives diffusion-pipe on a GPU.
"""
