"""Write the request's JSON Schema to docs/api-schema.json, or check that the file is current.

    python -m orchestrator.cli.schema            # (re)write the file
    python -m orchestrator.cli.schema --check    # exit 1 if the file differs

The file is generated from `orchestrator.request.TrainingRequest`, so the published schema cannot
drift from what the endpoint accepts; CI runs --check.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestrator.request import TrainingRequest

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "api-schema.json"


def render_schema() -> str:
    """The schema as the committed file holds it: sorted keys, indent 2, trailing newline."""
    schema = TrainingRequest.model_json_schema()
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.cli.schema")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file is not what would be written"
    )
    parser.add_argument("--path", type=Path, default=SCHEMA_PATH, help="schema file")
    args = parser.parse_args(argv)
    path: Path = args.path
    fresh = render_schema()
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != fresh:
            state = "is missing" if current is None else "is out of date"
            print(
                f"{path} {state}; run `python -m orchestrator.cli.schema` and commit it",
                file=sys.stderr,
            )
            return 1
        print(f"{path} is up to date")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(fresh, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
