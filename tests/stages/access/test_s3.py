"""The S3 output check: boto3 (the publish stage's client) against moto's S3 server on 127.0.0.1,
with moto's IAM checks switched on for the refusals a real store gives (a wrong key, a wrong
secret, a policy that does not cover the prefix)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import httpx
import pytest
from pydantic import SecretStr

from stages.access.inputs import Bounds, S3Target
from stages.access.retry import Transient
from stages.access.s3 import check_s3
from stages.addresses import AddressPolicy
from stages.errors import StageFailed
from stages.publish.inputs import S3Destination

JOB = "job-s3"
BUCKET = "loras"


@dataclass(frozen=True)
class Store:
    url: str
    key: str  # an IAM user's key pair allowed to write under runs/ only
    secret: str


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    admin = {
        "endpoint_url": url,
        "region_name": "us-east-1",
        "aws_access_key_id": "admin",
        "aws_secret_access_key": "admin",
    }
    boto3.client("s3", **admin).create_bucket(Bucket=BUCKET)  # type: ignore[call-overload]
    iam = boto3.client("iam", **admin)  # type: ignore[call-overload]
    iam.create_user(UserName="trainer")
    pair = iam.create_access_key(UserName="trainer")["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "s3:PutObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListBucketMultipartUploads",
                ],
                "Resource": [f"arn:aws:s3:::{BUCKET}/runs/*", f"arn:aws:s3:::{BUCKET}"],
            }
        ],
    }
    iam.put_user_policy(UserName="trainer", PolicyName="runs", PolicyDocument=json.dumps(policy))
    try:
        yield Store(url, pair["AccessKeyId"], pair["SecretAccessKey"])
    finally:
        server.stop()


@pytest.fixture
def iam(store: Store) -> Iterator[None]:
    """moto checks signatures and policies, as a real store does, for one test (the setting is
    the process's: every moto server in it, so it is switched off again at once)."""
    httpx.post(f"{store.url}/moto-api/reset-auth", content=b"0").raise_for_status()
    try:
        yield
    finally:
        httpx.post(f"{store.url}/moto-api/reset-auth", content=b"inf").raise_for_status()


def _target(store: Store, **kw: str) -> S3Target:
    spec = {
        "bucket": BUCKET,
        "access_key": store.key,
        "secret_key": store.secret,
        "endpoint_url": store.url,
        "region": "us-east-1",
        "key_prefix": "runs/",
        **kw,
    }
    return S3Target(
        spec=S3Destination(
            bucket=spec["bucket"],
            access_key=SecretStr(spec["access_key"]),
            secret_key=SecretStr(spec["secret_key"]),
            endpoint_url=spec["endpoint_url"],
            region=spec["region"],
            key_prefix=spec["key_prefix"],
        ),
        job_id=JOB,
    )


def _uploads(store: Store) -> list[str]:
    client = boto3.client(
        "s3",
        endpoint_url=store.url,
        region_name="us-east-1",
        aws_access_key_id=store.key,
        aws_secret_access_key=store.secret,
    )
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]


@pytest.mark.usefixtures("iam")
def test_credentials_that_can_write_the_prefix_pass_and_leave_nothing(store: Store) -> None:
    got = check_s3(_target(store), Bounds())
    assert got.facts == {"bucket": BUCKET, "prefix": f"runs/{JOB}/"}
    assert got.warnings == []
    assert _uploads(store) == []  # the test upload was aborted


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"key_prefix": "elsewhere"}, "output.s3.access_key", "AccessDenied"),
        ({"access_key": "AKIANOTAKEY000000000"}, "output.s3.access_key", "InvalidAccessKeyId"),
        ({"secret_key": "not-the-secret"}, "output.s3.secret_key", "SignatureDoesNotMatch"),
    ],
)
@pytest.mark.usefixtures("iam")
def test_a_refusal_fails_naming_the_field(
    store: Store, change: dict[str, str], field: str, code: str
) -> None:
    with pytest.raises(StageFailed) as info:
        check_s3(_target(store, **change), Bounds())
    message = str(info.value)
    assert message.startswith(f"{field}: cannot write to s3://{BUCKET}/"), message
    assert f"({code})" in message
    assert store.secret not in message
    assert "not-the-secret" not in message


def test_a_missing_bucket_names_the_bucket(moto_url: str) -> None:
    """moto without IAM checks (the shared fixture): the store's own NoSuchBucket."""
    target = _target(Store(moto_url, "x", "y"), bucket="no-such-bucket")
    with pytest.raises(StageFailed, match=r"^output\.s3\.bucket: .*\(NoSuchBucket\)"):
        check_s3(target, Bounds())


def test_an_endpoint_that_does_not_answer_is_transient() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(Transient, match="S3 did not answer"):
        check_s3(_target(Store(closed, "x", "y")), Bounds(attempts=1))


def test_the_endpoint_is_held_to_the_address_policy(store: Store) -> None:
    target = _target(store)
    refused = S3Target(target.spec, JOB, addresses=AddressPolicy(allow_loopback=False))
    with pytest.raises(StageFailed, match=r"^output\.s3\.endpoint_url: .*private or reserved"):
        check_s3(refused, Bounds())
