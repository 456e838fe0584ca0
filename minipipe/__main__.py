"""`python -m minipipe --config <main.toml> [--resume_from_checkpoint [NAME]]`."""

import sys

from minipipe.train import main

sys.exit(main())
