"""The training request: the seed README's input JSON, validated, with the rules between fields.

- `schema`: the pydantic models (`TrainingRequest` and its sections); `training`: the training
  section; `fields`: the field types.
- `rules`: the rules between fields; `passthrough`: the rules over keys passed to diffusion-pipe.
- `secrets`: finding a request's secrets and showing it masked; `effective`: the training values
  a job will use.
- `parse`: `parse_request(raw)` -> `TrainingRequest`, or one `RequestError` listing every problem.
"""

from orchestrator.errors import RequestError
from orchestrator.request.effective import effective_training
from orchestrator.request.parse import parse_request
from orchestrator.request.schema import TrainingRequest

__all__ = ["RequestError", "TrainingRequest", "effective_training", "parse_request"]
