"""The stages' errors: what a stage raises for the user, and the two ways a stage is stopped.

`StageFailed` and its kinds carry a message meant for the user, recorded as the job's ERROR as
is (secrets scrubbed by the raiser). `JobInterrupted` and `JobCancelled` are not failures: the
runner records INTERRUPTED (resumable) or CANCELLED (the latest LoRA is still published).
"""

from __future__ import annotations

from events.errors import ServiceError


class StageFailed(ServiceError):
    """A stage's error meant for the user: its message is recorded and returned as is."""


class PublishDeferred(StageFailed):
    """The destination takes no upload before `retry_at` (epoch seconds), later than the
    publish may wait: the LoRA stays at `lora_path` and a later delivery publishes it. Not a
    failure of the job: the runner records INTERRUPTED."""

    def __init__(self, message: str, *, retry_at: float, repo_id: str, lora_path: str) -> None:
        super().__init__(message)
        self.retry_at, self.repo_id, self.lora_path = retry_at, repo_id, lora_path


class DownloadFailed(StageFailed):
    """A dataset could not be fetched; the message says what the user can do about it."""


class ArchiveRefused(StageFailed):
    """An archive that is hostile, damaged or over a limit; nothing was written."""


class ConfigError(ServiceError, ValueError):
    """A config diffusion-pipe would reject or mis-run; `field` is the request path to fix."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class CaptionError(ServiceError):
    """A captioning failure meant for the user; the message names the file and never a key."""


class GeminiKeyRefused(CaptionError):
    """Gemini refused the API key (invalid, expired or blocked)."""


class GeminiBlocked(CaptionError):
    """Gemini refused to caption one or more videos (safety or policy block)."""

    def __init__(self, blocked: dict[str, str]) -> None:
        self.blocked = dict(blocked)
        listed = ", ".join(f"{name} ({reason})" for name, reason in sorted(blocked.items()))
        super().__init__(
            f"Gemini blocked captioning of {len(blocked)} video(s): {listed}. Remove them from "
            "the dataset or caption them yourself (dataset.type precaptioned)."
        )


class DownloadCancelled(ServiceError):
    """A model download stopped because its job ended (failed, cancelled, interrupted)."""


class HostError(ServiceError):
    """A temporary file host refused or failed an upload (the next host is tried)."""


class JobStopped(ServiceError):
    """The job was asked to stop; not a failure."""


class JobInterrupted(JobStopped):
    """The worker is being stopped (SIGTERM, preemption): record INTERRUPTED, resume later."""


class JobCancelled(JobStopped):
    """The client cancelled the job: record CANCELLED."""
