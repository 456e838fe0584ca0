"""`python -m minipipe --config <main.toml> [--resume_from_checkpoint [NAME]]`: the launcher,
which runs `minipipe.train` as its child (see `minipipe.launcher`)."""

import sys

from minipipe.launcher import main

sys.exit(main())
