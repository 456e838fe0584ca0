"""S3 publish speed against boto3's defaults, on moto's S3 server over loopback HTTP.

Our publish (the whole S3 method: 16 MiB parts, 10 threads, the config files, a HEAD check of
each object and a presigned URL) against a bare `upload_file` of the same 512 MB file with
boto3's default TransferConfig (8 MiB parts, 10 threads). Same server, same run, alternating.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

from bench.table import Result, secs
from orchestrator.plan import publish_spec
from orchestrator.request import parse_request
from stages.publish.common import PublishInputs
from stages.publish.stage import PublishOptions, publish

SIZE_MB = 512
ROUNDS = 3
BUCKET = "bench"
JOB = "bench-job"


def _job(root: Path, endpoint: str) -> PublishInputs:
    request = parse_request(
        {
            "model_type": "qwen",
            "dataset": {"type": "precaptioned", "images_url": "https://data.example/i.zip"},
            "output": {
                "method": "s3",
                "s3": {
                    "endpoint_url": endpoint,
                    "bucket": BUCKET,
                    "region": "us-east-1",
                    "access_key": "benchaccess",
                    "secret_key": "benchsecret",
                },
            },
        }
    )
    save = root / "jobs" / JOB / "output" / "20250101_00-00-00" / "epoch1"
    save.mkdir(parents=True)
    block = os.urandom(1 << 20)
    with (save / "adapter_model.safetensors").open("wb") as fh:
        for i in range(SIZE_MB):
            fh.write(i.to_bytes(8, "big") + block[8:])
    training = {"lora": "output/20250101_00-00-00/epoch1/adapter_model.safetensors"}
    return PublishInputs(JOB, root / "jobs" / JOB, publish_spec(request), training)


def run() -> list[Result]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="benchaccess",
        aws_secret_access_key="benchsecret",
    )
    client.create_bucket(Bucket=BUCKET)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            inputs = _job(Path(tmp), endpoint)
            ours_s: list[float] = []
            bare_s: list[float] = []
            for _ in range(ROUNDS):
                start = time.perf_counter()
                publish(inputs, PublishOptions())
                ours_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                client.upload_file(str(inputs.lora_path), BUCKET, "bare/adapter_model.safetensors")
                bare_s.append(time.perf_counter() - start)
                for key in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
                    client.delete_object(Bucket=BUCKET, Key=key["Key"])  # free moto's memory
    finally:
        server.stop()
    ours, bare = statistics.median(ours_s), statistics.median(bare_s)
    return [
        Result(
            f"S3 upload {SIZE_MB} MB to moto",
            secs(ours),
            f"boto3 upload_file defaults {secs(bare)}",
            ours / bare,
            1.0,
        )
    ]


def main() -> None:
    for r in run():
        print(r)


if __name__ == "__main__":
    main()
