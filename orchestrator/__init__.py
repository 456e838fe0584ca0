"""The orchestrator: request schema, state machine, runner, catalogue, CLI."""
