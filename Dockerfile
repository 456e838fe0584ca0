# The GPU worker for RunPod Serverless: diffusion-pipe at a pinned commit, this project's worker.
# Build: docker build -t <you>/diffusion-pipe-serverless:<version> .
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04

# Ubuntu 24.04's Python is 3.12, which diffusion-pipe needs (sqlite3 autocommit in utils/cache.py).
# RUNPOD_LOG_LEVEL: the SDK logs at DEBUG without it, and at DEBUG it prints every handler
# output and progress payload (presigned URLs) and, in local test mode, the whole input with
# its secrets. handler.py sets the same default for runs outside the image.
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    RUNPOD_LOG_LEVEL=INFO \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.12 python3.12-venv python3.12-dev git git-lfs ffmpeg build-essential \
        ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv

# torch first (diffusion-pipe's requirements do not list it); the README's tested pairing is
# torch 2.9 + CUDA 12.8 with flash-attn 2.8.3. docker/constraints.txt pins the same versions.
ARG TORCH_VERSION=2.9.1
ARG TORCHVISION_VERSION=0.24.1
RUN pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
        "torchaudio==${TORCH_VERSION}" \
        --index-url https://download.pytorch.org/whl/cu128

# Every later install resolves within the lock (`make constraints` writes it), so a rebuild
# gets the same packages; `make lint` checks each pip install below passes it.
COPY docker/constraints.txt /opt/constraints.txt

# diffusion-pipe, driven and never modified: the commit the orchestrator's contract was read from.
ARG DIFFUSION_PIPE_COMMIT=8f83dbf25d03219df705570ec03e62be04bc402f
RUN git clone https://github.com/tdrussell/diffusion-pipe /opt/diffusion-pipe \
    && git -C /opt/diffusion-pipe checkout "${DIFFUSION_PIPE_COMMIT}" \
    && git -C /opt/diffusion-pipe submodule update --init --recursive \
    && pip install -c /opt/constraints.txt -r /opt/diffusion-pipe/requirements.txt

# flash-attn (every Wan model needs it) from the official prebuilt wheel for torch 2.9 / CUDA 12 /
# Python 3.12 / cxx11 ABI; building it from source takes hours. pip checks the #sha256 (the
# release asset's digest). Override with another wheel URL (keep a #sha256= fragment) when
# TORCH_VERSION changes; an empty value builds without it, and Wan jobs are then refused at
# STARTING. The import check fails the build on a wheel built for another torch.
ARG FLASH_ATTN_WHEEL="https://github.com/Dao-AILab/flash-attention/releases/download/v2.8.3/flash_attn-2.8.3%2Bcu12torch2.9cxx11abiTRUE-cp312-cp312-linux_x86_64.whl#sha256=4e2f9e39313266b1544b68138b15b91ee6221eccf14f7902b7c6620351340810"
# hadolint ignore=DL3013
RUN if [ -n "${FLASH_ATTN_WHEEL}" ]; then pip install -c /opt/constraints.txt "${FLASH_ATTN_WHEEL}" \
        && python -c "import flash_attn; print('flash-attn', flash_attn.__version__)"; \
    else echo "flash-attn: FLASH_ATTN_WHEEL is empty; Wan jobs will be refused at STARTING"; fi

WORKDIR /app
COPY pyproject.toml README.md /app/
COPY handler.py /app/handler.py
# RunPod's local test mode: `docker run <image>` without RunPod's env runs this tiny job.
COPY test_input.json /app/test_input.json
COPY orchestrator /app/orchestrator
COPY events /app/events
COPY stages /app/stages
COPY minipipe /app/minipipe
COPY localpod /app/localpod
RUN pip install -c /opt/constraints.txt "/app[worker]"

# Models, datasets and Hub caches live on the network volume when one is mounted, so a second
# job (or a retried one) finds them; without a volume they live in the container.
# Nothing serves datasets on the worker's loopback: no URL of a request may reach it.
# `output.local.path` may only name a folder on the network volume (never the working folder).
ENV DPS_DIFFUSION_PIPE_DIR=/opt/diffusion-pipe \
    DPS_ALLOW_LOOPBACK=0 \
    DPS_LOCAL_OUTPUT_ROOTS=/runpod-volume \
    HF_HOME=/runpod-volume/huggingface \
    HF_HUB_DISABLE_TELEMETRY=1

CMD ["python", "-u", "/app/handler.py"]
