"""Publish to S3: boto3 against moto's standalone S3 server on 127.0.0.1 (real HTTP), with a
loopback proxy in front of it when a test needs a part to fail on the wire."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

import boto3
import httpx
import pytest

from stages.errors import StageFailed
from stages.publish.annotate import descriptive_name
from stages.publish.s3 import MiB, S3Tuning
from stages.publish.stage import PublishOptions, publish
from tests.support.family_loras import raw_safetensors
from tests.support.publish_job import CANARY, JOB_ID, assert_no_canary, make_job, published_copy
from tests.support.s3_proxy import BUCKET, FailFirstPart, s3_output


def write_big(path: Path, mib: int) -> None:
    """A safetensors file of `mib` MiB of data whose blocks all differ."""
    block = os.urandom(MiB)
    path.write_bytes(
        raw_safetensors(b"".join(i.to_bytes(8, "big") + block[8:] for i in range(mib)))
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_sha256(url: str) -> str:
    digest = hashlib.sha256()
    with httpx.stream("GET", url, timeout=60) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes(MiB):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.slow
def test_200mb_multipart_and_presigned_download(
    moto_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO)
    inputs = make_job(tmp_path, s3_output(moto_url), size=32)
    write_big(inputs.lora_path, 200)
    result = publish(inputs, PublishOptions())
    published = published_copy(inputs)  # the trained file, its metadata added
    expected = file_sha256(published)
    # Our process's logs during publish (moto's werkzeug lines are the server's, not ours).
    logs = "\n".join(r.getMessage() for r in caplog.records if r.name != "werkzeug")
    captured = capsys.readouterr()
    prefix = f"runs/{JOB_ID}/"
    assert result["details"]["prefix"] == prefix
    out = result["output"]
    assert out["download_method"] == "s3"
    assert out["expires_in_days"] == 7
    assert out["repo_url"] == f"s3://{BUCKET}/{prefix}"
    assert "X-Amz-Expires=604800" in out["download_url"]
    assert fetch_sha256(out["download_url"]) == expected
    client = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    head = client.head_object(Bucket=BUCKET, Key=prefix + "adapter_model.safetensors")
    assert head["ContentLength"] == published.stat().st_size > 200 * MiB
    assert head["ETag"].strip('"').endswith("-13")  # 200 MiB in 16 MiB parts
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
    comfy = f"comfyui/{descriptive_name(inputs)}"  # copied on S3's side, not sent again
    assert client.head_object(Bucket=BUCKET, Key=prefix + comfy)["ContentLength"] == (
        published.stat().st_size
    )
    assert {o["Key"][len(prefix) :] for o in listed} == {
        "adapter_model.safetensors",
        comfy,
        "adapter_config.json",
        "config/qwen.toml",
        "config/dataset.toml",
    }
    toml = client.get_object(Bucket=BUCKET, Key=prefix + "config/qwen.toml")["Body"].read()
    # A SigV4 presigned URL carries the access key *id* in X-Amz-Credential by design; apart
    # from there, no secret (the secret key above all) appears in the response or the logs.
    public = re.sub(r"X-Amz-Credential=[^&\"]*", "X-Amz-Credential=", json.dumps(result))
    assert_no_canary(public, toml, logs, captured.out, captured.err)
    assert CANARY["s3_secret"] not in json.dumps(result)


def test_part_500_is_retried(moto_url: str, tmp_path: Path) -> None:
    proxy = FailFirstPart(moto_url)
    try:
        inputs = make_job(tmp_path, s3_output(proxy.url), size=32)
        write_big(inputs.lora_path, 12)
        tuning = S3Tuning(part_size=5 * MiB, threshold=5 * MiB, concurrency=3)
        result = publish(inputs, PublishOptions(s3_tuning=tuning))
        expected = file_sha256(published_copy(inputs))
    finally:
        proxy.close()
    assert proxy.failed == 1
    assert proxy.parts == 4  # three parts, one of them sent twice
    assert fetch_sha256(result["output"]["download_url"].replace(proxy.url, moto_url)) == expected


def test_missing_bucket_names_bucket_and_code(
    moto_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    inputs = make_job(tmp_path, s3_output(moto_url, bucket="no-such-bucket"))
    sleeps: list[float] = []
    with pytest.raises(StageFailed) as err:
        publish(inputs, PublishOptions(sleep=sleeps.append))
    message = str(err.value)
    assert "'no-such-bucket'" in message
    assert "NoSuchBucket" in message
    assert sleeps == []  # not retried: another try cannot create the bucket
    assert_no_canary(message, caplog.text)


@pytest.mark.parametrize("endpoint", ["http://169.254.169.254", "http://10.1.2.3:9000"])
def test_an_s3_endpoint_on_a_private_network_is_refused_before_any_request(
    tmp_path: Path, endpoint: str
) -> None:
    """At publish time too (the request was validated by another worker, or before this rule):
    the metadata service and private ranges are never contacted."""
    inputs = make_job(tmp_path, s3_output(endpoint))
    with pytest.raises(StageFailed) as info:
        publish(inputs, PublishOptions(sleep=lambda s: None))
    assert str(info.value).startswith("output.s3.endpoint_url: ")
    assert "S3 endpoints must be public" in str(info.value)
    assert_no_canary(str(info.value))
