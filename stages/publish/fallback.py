"""`output.method: auto`: Hugging Face when a token is configured, else (or when it fails) the
first temporary file host that takes the LoRA: litterbox → transfer.sh → file.io.

Each host is a real client for that service's public upload API, with its size limit checked
before any byte is sent. The LoRA streams from disk (multipart or PUT with a Content-Length),
never read whole into memory. Base URLs are injectable so tests point them at loopback fakes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import structlog

from stages.errors import HostError
from stages.publish.common import Published, PublishInputs, RetryPolicy, fail, published_lora
from stages.publish.hub import publish_hf

log = structlog.get_logger(__name__)

GB = 1000**3
_TIMEOUT = httpx.Timeout(connect=15.0, read=600.0, write=600.0, pool=15.0)


@dataclass(frozen=True)
class FileHost:
    name: str
    url: str
    max_bytes: int
    expires_in_days: float
    note: str

    def upload(self, client: httpx.Client, path: Path) -> str:
        size = path.stat().st_size
        if size > self.max_bytes:
            raise HostError(f"{size} bytes is over its {self.max_bytes // GB} GB limit")
        with path.open("rb") as fh:
            try:
                response = self._send(client, path.name, fh, size)
            except httpx.HTTPError as err:
                raise HostError(f"{type(err).__name__}: {err}") from None
        if response.status_code >= 400:
            raise HostError(f"HTTP {response.status_code}: {response.text.strip()[:200]}")
        url = self._link(response)
        if not url.startswith(("https://", "http://")):
            raise HostError(f"unexpected answer: {response.text.strip()[:200]!r}")
        return url

    def _send(self, client: httpx.Client, name: str, fh: IO[bytes], size: int) -> httpx.Response:
        raise NotImplementedError

    def _link(self, response: httpx.Response) -> str:
        return response.text.strip()


class Litterbox(FileHost):
    """catbox.moe's temporary host: multipart POST, `time=72h`, plain-text URL back."""

    def _send(self, client: httpx.Client, name: str, fh: IO[bytes], size: int) -> httpx.Response:
        return client.post(
            self.url,
            data={"reqtype": "fileupload", "time": "72h"},
            files={"fileToUpload": (name, fh, "application/octet-stream")},
        )


class TransferSh(FileHost):
    """transfer.sh: `PUT <base>/<name>` with the raw bytes, plain-text URL back."""

    def _send(self, client: httpx.Client, name: str, fh: IO[bytes], size: int) -> httpx.Response:
        def chunks() -> Iterator[bytes]:
            while chunk := fh.read(1 << 20):
                yield chunk

        # An explicit Content-Length keeps httpx from chunked encoding, which some hosts refuse.
        return client.put(
            f"{self.url.rstrip('/')}/{name}",
            content=chunks(),
            headers={"Content-Length": str(size), "Max-Days": str(int(self.expires_in_days))},
        )


class FileIo(FileHost):
    """file.io: multipart POST of `file`, JSON `{"success", "link", "expires"}` back."""

    def _send(self, client: httpx.Client, name: str, fh: IO[bytes], size: int) -> httpx.Response:
        return client.post(self.url, files={"file": (name, fh, "application/octet-stream")})

    def _link(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            raise HostError(f"not JSON: {response.text.strip()[:200]!r}") from None
        if not isinstance(body, dict) or not body.get("success"):
            raise HostError(f"refused: {str(body)[:200]}")
        return str(body.get("link") or "")


@dataclass(frozen=True)
class HostUrls:
    litterbox: str = "https://litterbox.catbox.moe/resources/internals/api.php"
    transfer_sh: str = "https://transfer.sh"
    file_io: str = "https://file.io"

    def hosts(self) -> list[FileHost]:
        return [
            Litterbox(
                "litterbox",
                self.litterbox,
                max_bytes=1 * GB,
                expires_in_days=3,
                note="Temporary link from litterbox.catbox.moe; it expires after 72 hours",
            ),
            TransferSh(
                "transfer.sh",
                self.transfer_sh,
                max_bytes=10 * GB,
                expires_in_days=14,
                note="Temporary link from transfer.sh; it expires after 14 days",
            ),
            FileIo(
                "file.io",
                self.file_io,
                max_bytes=2 * GB,
                expires_in_days=14,
                note="Temporary link from file.io; it expires after 14 days or after the "
                "first download, whichever comes first",
            ),
        ]


@dataclass
class AutoOptions:
    hub_endpoint: str
    hosts: HostUrls = field(default_factory=HostUrls)
    hf_policy: RetryPolicy | None = None
    sleep: Callable[[float], None] = time.sleep


def publish_auto(inputs: PublishInputs, options: AutoOptions) -> Published:
    """Try each destination in order; the first that works wins. Fails listing every reason."""
    tried: list[dict[str, str]] = []
    if inputs.destination.huggingface is not None:
        try:
            published = publish_hf(
                inputs, endpoint=options.hub_endpoint, policy=options.hf_policy, sleep=options.sleep
            )
            return _with_attempts(published, tried)
        except Exception as err:
            tried.append({"method": "huggingface", "error": inputs.scrub(str(err))})
            log.warning("auto publish: hugging face failed", error=tried[-1]["error"])
    lora = published_lora(inputs)
    with httpx.Client(timeout=_TIMEOUT, follow_redirects=True) as client:
        for host in options.hosts.hosts():
            try:
                url = host.upload(client, lora)
            except HostError as err:
                tried.append({"method": host.name, "error": inputs.scrub(str(err))})
                log.warning("auto publish: host failed", host=host.name, error=tried[-1]["error"])
                continue
            log.info("auto publish: uploaded", host=host.name)
            published = Published(
                method=host.name,
                download_url=url,
                safetensors_url=url,
                repo_url=url,
                files=[lora.name],
                expires_in_days=host.expires_in_days,
                note=host.note,
            )
            return _with_attempts(published, tried)
    reasons = "; ".join(f"{t['method']}: {t['error']}" for t in tried)
    raise fail(
        inputs,
        f"no destination took the LoRA ({reasons}). It is still on the volume at "
        f"{inputs.lora_path}",
    )


def _with_attempts(published: Published, tried: list[dict[str, str]]) -> Published:
    if not tried:
        return published
    failed = ", ".join(t["method"] for t in tried)
    return Published(
        method=published.method,
        download_url=published.download_url,
        safetensors_url=published.safetensors_url,
        repo_url=published.repo_url,
        files=published.files,
        expires_in_days=published.expires_in_days,
        note=f"{published.note} ({failed} failed first)",
        details={**published.details, "failed": tried},
    )
