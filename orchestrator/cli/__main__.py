"""`python -m orchestrator.cli`: the same as `dpserve`."""

from orchestrator.cli import app

app()
