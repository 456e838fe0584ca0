"""`dpserve`: the command line, one module per command (as huggingface_hub's `cli/`).

validate, events, models, plan, dataset check, watch, serve, submit; plus `python -m
orchestrator.cli.demo` (`make demo`) and `python -m orchestrator.cli.schema` (the JSON Schema).
"""

from __future__ import annotations

import typer

from orchestrator.cli import dataset, events, models, plan, serve, submit, validate, watch
from orchestrator.logs import configure_logging

app = typer.Typer(
    name="dpserve",
    help="diffusion-pipe-serverless: LoRA training as an API. Local tools.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _main() -> None:
    """diffusion-pipe-serverless command line."""
    configure_logging()


# The package's attributes stay the command modules; each module's function is its command.
app.command()(validate.validate)
app.command()(events.events)
app.command()(models.models)
app.command()(plan.plan)
app.add_typer(dataset.app, name="dataset")
app.command()(watch.watch)
app.command()(serve.serve)
app.command()(submit.submit)


if __name__ == "__main__":  # pragma: no cover
    app()
