"""The access stage (STARTING): every outside party the job will need answers, before the dataset
and the base model download (the prepare stage starts the latter), so that a bad destination
or key costs no GPU time.

What is checked, each in `stages.access.<name>` and all at once in threads: Hub output (the
token can write the repo, `hub`), S3 output (the credentials can write the prefix, `s3`), the
Gemini key when videos will be captioned (`gemini`), and each dataset URL (`dataset`; not when
the extracted dataset is already on the volume). A worker that cannot train the model at all
(flash-attn) refuses first, before contacting anything.

Only a definite refusal fails the job: one StageFailed naming each field to fix. A destination
that does not answer within the bounds is a warning (logged and in the result): publishing
tries again, hours later, with its own retries. A dataset that does not answer fails the job:
nothing can train without it. The stage runs on every delivery (a token may have been revoked
since), and its result (repo id, visibility, warnings) holds no secret.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from events.redact import scrub
from events.vocabulary import Status
from stages.access.dataset import check_source
from stages.access.gemini import check_gemini
from stages.access.hub import check_hub
from stages.access.inputs import AccessInputs, DatasetTarget
from stages.access.retry import Checked, Clock, Sleep, Transient
from stages.access.s3 import check_s3
from stages.contract import Stage, StageContext
from stages.dataset.folder import marker_matches
from stages.dataset.inputs import DatasetSource
from stages.errors import StageFailed
from stages.training.runtime import require_flash_attn

log = structlog.get_logger(__name__)

CheckFn = Callable[[], Checked]


@dataclass
class _Check:
    """One check running in its own daemon thread (a Hub call has no timeout: a hung one must
    not hold the job, nor the worker's exit)."""

    name: str  # hub | s3 | gemini | dataset.images_url ...
    fn: CheckFn
    required: bool  # the job cannot run without it (a dataset): not answering fails
    done: threading.Event
    outcome: Checked | BaseException | None = None

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"access-{self.name}", daemon=True).start()

    def _run(self) -> None:
        try:
            self.outcome = self.fn()
        except BaseException as exc:  # handed to the stage, which decides what it means
            self.outcome = exc
        finally:
            self.done.set()


class Access(Stage):
    name = "access"
    status = Status.STARTING

    def __init__(
        self,
        inputs: AccessInputs,
        *,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self.inputs = inputs
        self.sleep = sleep
        self.clock = clock

    def run(self, ctx: StageContext) -> dict[str, Any]:
        model = self.inputs.model
        if model is not None and model.needs_flash_attn:
            require_flash_attn(model.display_name)
        checks = self._checks(ctx)
        for check in checks:
            check.start()
        deadline = self.clock() + self.inputs.bounds.deadline_s
        for check in checks:
            check.done.wait(max(0.0, deadline - self.clock()))
        failures, warnings = [], []
        result: dict[str, Any] = {"checked": [c.name for c in checks]}
        for check in checks:
            problem, facts = self._judge(check)
            if isinstance(problem, StageFailed):
                failures.append(self._scrub(str(problem)))
                continue
            if problem is not None:
                warnings.append(problem)
            if facts is not None:
                result[check.name] = facts.facts
                warnings += [self._scrub(w) for w in facts.warnings]
        if failures:
            raise StageFailed("; ".join(failures))
        for warning in warnings:
            log.warning("access check", job_id=ctx.job_id, warning=warning)
        result["warnings"] = warnings
        return result

    def verify(self, ctx: StageContext, result: Mapping[str, Any]) -> bool:
        """Never done: every delivery checks again (a token may have been revoked since)."""
        return False

    # -- internals ---------------------------------------------------------------------------
    def _checks(self, ctx: StageContext) -> list[_Check]:
        inputs, bounds = self.inputs, self.inputs.bounds
        sleep, clock = self.sleep, self.clock
        found: list[tuple[str, CheckFn, bool]] = []
        if (hub := inputs.hub) is not None:
            found.append(("hub", lambda: check_hub(hub, bounds, sleep=sleep, clock=clock), False))
        if (s3 := inputs.s3) is not None:
            found.append(("s3", lambda: check_s3(s3, bounds), False))
        if (gemini := inputs.gemini) is not None:
            found.append(
                ("gemini", lambda: check_gemini(gemini, bounds, sleep=sleep, clock=clock), False)
            )
        dataset = inputs.dataset
        # Already extracted (an earlier delivery, or a job it continues): nothing to download.
        if dataset is not None and not marker_matches(ctx.job_dir / "dataset"):
            for source in dataset.sources:

                def probe(
                    source: DatasetSource = source, target: DatasetTarget = dataset
                ) -> Checked:
                    return Checked(check_source(source, target, bounds, sleep=sleep, clock=clock))

                found.append((f"dataset.{source.field}", probe, True))
        return [_Check(name, fn, required, threading.Event()) for name, fn, required in found]

    def _judge(self, check: _Check) -> tuple[StageFailed | str | None, Checked | None]:
        """(a failure or a warning, or None; what the check found, or None)."""
        outcome, field = check.outcome, _field(check.name)
        if isinstance(outcome, Checked):
            return None, outcome
        if isinstance(outcome, StageFailed):
            return outcome, None
        if not check.done.is_set():
            why = f"no answer within {self.inputs.bounds.deadline_s:.0f} s"
        elif isinstance(outcome, Transient):
            why = f"{self._scrub(str(outcome))}, after {self.inputs.bounds.attempts} tries"
        else:  # an error of the check itself: never a reason to fail the job
            log.warning("access check error", check=check.name, error=type(outcome).__name__)
            return f"{field}: could not be checked ({type(outcome).__name__})", None
        if check.required:
            return StageFailed(
                f"{field}: {why}; nothing can train without the dataset: check that the host "
                "is up and reachable from the worker"
            ), None
        later = "captioning" if check.name == "gemini" else "publishing"
        return f"{field}: not confirmed ({why}); {later} will try again", None

    def _scrub(self, text: str) -> str:
        return scrub(text, self.inputs.secrets) if self.inputs.secrets else text


def _field(check: str) -> str:
    return {
        "hub": "output.huggingface",
        "s3": "output.s3",
        "gemini": "api_keys.gemini_api_key",
    }.get(check, check)
