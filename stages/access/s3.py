"""S3 output: the credentials can write under `<key_prefix>/<job_id>/` in the bucket.

A multipart upload is started there and aborted at once: it needs the same right as the upload
(s3:PutObject), leaves no object behind and needs no delete right. The client is the publish
stage's (`stages.publish.s3.make_client`: the same endpoint, region, addressing and signature),
with the endpoint held to the worker's address policy on every request, as publishing does.
botocore's standard retries cover the transient failures (connection errors, 5xx, throttling).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from stages.access.inputs import Bounds, S3Target
from stages.access.retry import Checked, Transient
from stages.addresses import check_host
from stages.errors import StageFailed
from stages.publish.s3 import error_code, make_client, object_prefix

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ENDPOINT = "output.s3.endpoint_url"
# The request field each definite refusal points at.
_FIELD = {
    "NoSuchBucket": "output.s3.bucket",
    "InvalidBucketName": "output.s3.bucket",
    "InvalidAccessKeyId": "output.s3.access_key",
    "SignatureDoesNotMatch": "output.s3.secret_key",
    "AccessDenied": "output.s3.access_key",
    "AllAccessDisabled": "output.s3.access_key",
    "InvalidToken": "output.s3.access_key",
    "ExpiredToken": "output.s3.access_key",
    "AuthorizationHeaderMalformed": "output.s3.region",
    "PermanentRedirect": "output.s3.region",
    "IllegalLocationConstraintException": "output.s3.region",
}
_WHY = {
    "NoSuchBucket": "the bucket does not exist",
    "InvalidBucketName": "the bucket name is not valid",
    "InvalidAccessKeyId": "the store does not know this access key",
    "SignatureDoesNotMatch": "the secret key does not match the access key",
    "AccessDenied": "these credentials may not write there (allow s3:PutObject on the prefix)",
    "AllAccessDisabled": "all access to the bucket is disabled",
    "InvalidToken": "the credentials are not valid",
    "ExpiredToken": "the credentials have expired",
    "AuthorizationHeaderMalformed": "the region does not match the bucket's",
    "PermanentRedirect": "the bucket is in another region",
    "IllegalLocationConstraintException": "the bucket is in another region",
}
_TRANSIENT_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling"}
)


def _status(err: ClientError) -> int:
    meta: Any = err.response.get("ResponseMetadata") or {}
    return int(meta.get("HTTPStatusCode") or 0)


def _client(target: S3Target, bounds: Bounds) -> S3Client:
    tuning = replace(target.tuning, request_attempts=max(1, bounds.attempts))
    client = make_client(target.spec, tuning)
    if target.spec.endpoint_url:
        policy = target.addresses

        def before_send(request: Any, **_: Any) -> None:
            check_host(str(request.url), ENDPOINT, policy, what="S3 endpoints")

        client.meta.events.register("before-send.s3", before_send)
    return client


def check_s3(target: S3Target, bounds: Bounds) -> Checked:
    spec = target.spec
    bucket = str(spec.bucket)
    prefix = object_prefix(spec.key_prefix or "", target.job_id)
    where = f"s3://{bucket}/{prefix}"
    key = f"{prefix}.access-check-{uuid.uuid4().hex[:12]}"
    client = _client(target, bounds)
    try:
        started = client.create_multipart_upload(Bucket=bucket, Key=key)
    except ClientError as err:
        code, status = error_code(err), _status(err)
        if code in _TRANSIENT_CODES or status >= 500 or status in (408, 429):
            raise Transient(f"S3 answered {code} (HTTP {status})") from None
        field = _FIELD.get(code, "output.s3")
        why = _WHY.get(code, "the store refused a test upload")
        raise StageFailed(f"{field}: cannot write to {where}: {why} ({code})") from None
    except BotoCoreError as err:  # connection refused, timeouts, a name that does not resolve
        raise Transient(f"S3 did not answer ({type(err).__name__})") from None
    checked = Checked(facts={"bucket": bucket, "prefix": prefix})
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=started["UploadId"])
    except (ClientError, BotoCoreError) as err:
        checked.warnings.append(
            f"output.s3: the empty test upload {key} in bucket {bucket!r} could not be aborted "
            f"({error_code(err)}); it holds no data, and a lifecycle rule for incomplete "
            "multipart uploads removes it"
        )
    return checked
