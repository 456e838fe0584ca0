"""The training stage (TRAINING): configs, the diffusion-pipe driver, its log, its run folder."""
