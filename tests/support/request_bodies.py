"""Request bodies for the fuzz tests: valid ones drawn from the schema's ranges, near-valid ones
(one field broken), and the placeholders a test fills with its own folders and ports."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from orchestrator.catalogue import ALL_MODEL_TYPES, CATALOGUE
from stages.training.owned_keys import OWNED_ADAPTER, OWNED_MODEL, OWNED_OPTIMIZER, OWNED_TOP_LEVEL
from tests.support.canary import CANARIES

PLACEHOLDER_URL = "http://127.0.0.1:9/missing.zip"  # replaced by the 404 server in handle()
# A field path as the errors print it: dotted names, [index], unicode-escaped user keys.
FIELD = re.compile(r"^[A-Za-z_][\w.\[\]\\-]*")
TOP_LEVEL = ("model_type", "dataset", "training", "api_keys", "output", "resume_from", "input")

# Placeholders in hostile values, filled per test with its own folders and the data server's
# port (`Site.fill`).
ROOT, OUT, TMP, PORT = "@ROOT@", "@OUT@", "@TMP@", "@PORT@"
LOCAL_OUT = "LOCAL_OUT"  # a valid body's output folder: the site's output root
# A relative destination: it would resolve under the current directory, where it must never
# appear.
REL = f"fuzz-rel-{uuid.uuid4().hex[:8]}"
JOB_PREFIX = "fuzz-"  # every job id here starts with it: no folder outside root may

# --- strategies --------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.text(alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x10FFFF), max_size=10),
    st.sampled_from(["", " ", "\x00", "\n", "../../etc/passwd", "${HOME}", "{0}", "%s", "***"]),
    st.builds(lambda n: "x" * n, st.integers(min_value=1_000, max_value=20_000)),
)
junk = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _int_or_none(lo: int, hi: int) -> st.SearchStrategy[int | None]:
    return st.none() | st.integers(min_value=lo, max_value=hi)


@st.composite
def valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A request the schema accepts (before the canaries are added)."""
    model_type = draw(st.sampled_from(list(ALL_MODEL_TYPES)))
    entry = CATALOGUE[model_type]
    dataset: dict[str, Any] = {"type": "precaptioned"}
    fields = [
        name
        for name, ok in (("images_url", entry.trains_images), ("videos_url", entry.trains_videos))
        if ok
    ]
    for name in draw(st.lists(st.sampled_from(fields), min_size=1, unique=True)):
        dataset[name] = PLACEHOLDER_URL
    if draw(st.booleans()):
        # Any printable text: control characters are refused (they would reach every caption).
        word = draw(
            st.text(st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1, max_size=20)
        ).strip()
        dataset["trigger_word"] = (word.splitlines() or ["ohwx"])[0].strip() or "ohwx"
    if draw(st.booleans()):
        dataset["image_repeats"] = draw(st.integers(1, 10_000))
    training: dict[str, Any] = {}
    options: dict[str, st.SearchStrategy[Any]] = {
        "epochs": _int_or_none(1, 1000),
        "learning_rate": st.floats(1e-8, 1.0),
        "batch_size": _int_or_none(1, 8),
        "gradient_accumulation_steps": _int_or_none(1, 8),
        "warmup_steps": _int_or_none(0, 1000),
        "lora_rank": _int_or_none(1, 128),
        "lora_dtype": st.sampled_from(["float32", "float16", "bfloat16"]),
        "resolution": _int_or_none(16, 2048),
        "save_every_n_epochs": _int_or_none(1, 100),
        "optimizer_type": st.sampled_from(["adamw_optimi", "adamw8bit", "Prodigy"]),
        "activation_checkpointing": st.sampled_from([True, False, "unsloth"]),
        "max_steps": st.integers(1, 10_000),  # a known passthrough key
        "model": st.just({"transformer_dtype": "float8"}),
        "adapter": st.just({"dropout": 0.05}),
    }
    for key in draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=5)):
        training[key] = draw(options[key])
    method = draw(st.sampled_from(["auto", "huggingface", "s3", "local"]))
    output: dict[str, Any] = {"method": method}
    if method == "huggingface" and draw(st.booleans()):
        output["huggingface"] = {"repo_id": "me/fuzz-lora", "private": draw(st.booleans())}
    if method == "local":
        output["local"] = {"path": LOCAL_OUT}  # replaced with the site's output root
    body: dict[str, Any] = {"model_type": model_type, "dataset": dataset, "output": output}
    if training:
        body["training"] = training
    return body


# Keys the service owns, anywhere a user can pass them through.
_UNSAFE: list[tuple[tuple[str, ...], str]] = [
    *((("training",), k) for k in OWNED_TOP_LEVEL),
    *((("training", "model"), k) for k in OWNED_MODEL),
    *((("training", "adapter"), k) for k in OWNED_ADAPTER),
    *((("training", "optimizer"), k) for k in OWNED_OPTIMIZER),
]
# Where a mutation may strike, and a few values that are wrong for each in an interesting way.
_TARGETS: list[tuple[str, ...]] = [
    ("model_type",),
    ("dataset",),
    ("dataset", "type"),
    ("dataset", "images_url"),
    ("dataset", "videos_url"),
    ("dataset", "trigger_word"),
    ("dataset", "image_repeats"),
    ("dataset", "video_repeats"),
    ("training",),
    ("training", "epochs"),
    ("training", "learning_rate"),
    ("training", "lora_rank"),
    ("training", "optimizer_betas"),
    ("training", "frame_buckets"),
    ("training", "video_clip_mode"),
    ("training", "activation_checkpointing"),
    ("training", "model"),
    ("api_keys",),
    ("api_keys", "huggingface_token"),
    ("api_keys", "gemini_api_key"),
    ("output",),
    ("output", "method"),
    ("output", "huggingface"),
    ("output", "huggingface", "token"),
    ("output", "huggingface", "repo_id"),
    ("output", "s3", "bucket"),
    ("output", "s3", "endpoint_url"),
    ("output", "local", "path"),
    ("resume_from",),
    ("resume_from_lora",),
]
bad_values = st.one_of(
    junk,
    st.integers(max_value=-1),
    st.sampled_from(
        [
            "wan13b",
            "FLUX",
            "file:///etc/passwd",
            "ftp://h/x.zip",
            "javascript:alert(1)",
            "http://",
            "http://[::1",
            "hf://models/x",
            "hf://datasets/",
            "http://user:" + CANARIES["output.s3.secret_key"] + "@h/x.zip",
            "line\nbreak",
            "tok en",
            "\u202e\u0000\ufeff",
            [0.9],
            [0.9, 1.5],
            [0, 5000],
            "multiple_overlapping",
            float("inf"),
            float("nan"),
            2**64,
            "100",
            1.5,
            {"$ref": "#"},
        ]
    ),
)


def set_at(body: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node: Any = body
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def get_at(body: Any, path: tuple[str, ...]) -> Any:
    node = body
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def delete_at(body: dict[str, Any], path: tuple[str, ...]) -> None:
    node: Any = body
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(path[-1], None)


@st.composite
def near_valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body with one to three things wrong with it."""
    body = draw(valid_bodies())
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["set", "delete", "unsafe", "unknown", "secret"]))
        if kind == "set":
            set_at(body, draw(st.sampled_from(_TARGETS)), draw(bad_values))
        elif kind == "delete":
            delete_at(body, draw(st.sampled_from(_TARGETS)))
        elif kind == "unsafe":
            where, key = draw(st.sampled_from(_UNSAFE))
            set_at(body, (*where, key), draw(st.sampled_from(["/tmp/evil", "../../x", 1, {}])))
        elif kind == "unknown":
            section = draw(st.sampled_from([(), ("dataset",), ("output",), ("api_keys",)]))
            name = draw(st.sampled_from(["epoch", "tokn", "images_ur", "typ", "x" * 300, "ü"]))
            set_at(body, (*section, name), draw(junk))
        else:  # a credential under a passthrough key that is not a documented secret
            set_at(body, ("training", "monitoring"), {"wandb_api_key": draw(junk)})
    return body


garbage_bodies = st.one_of(
    junk,
    st.dictionaries(st.sampled_from(TOP_LEVEL), junk, max_size=6),
    st.builds(lambda inner: {"input": inner}, junk),
)


def rebuild(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """A copy of a JSON-like value with `leaf` applied to every scalar, at any depth (an
    explicit stack: hostile bodies nest 20,000 deep; copy.deepcopy stops at about 500)."""

    def fresh(item: Any) -> Any:
        if isinstance(item, dict):
            return {}
        if isinstance(item, list):
            return []
        return leaf(item)

    top = fresh(value)
    stack = [(value, top)] if isinstance(value, dict | list) else []
    while stack:
        source, target = stack.pop()
        pairs = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in pairs:
            new = fresh(item)
            if isinstance(target, dict):
                target[key] = new
            else:
                target.append(new)
            if isinstance(item, dict | list):
                stack.append((item, new))
    return top


def copy_body(raw: Any) -> Any:
    return rebuild(raw, lambda v: v)
