"""Hostile request values, one class per rule the service was hardened with, several values each:
where results may be copied, which hosts a URL may reach, what a host, a trigger word, an S3 key
prefix or a Hub repo id may look like, passthrough bounds, 5000-digit integers, deep nesting.
Each `Hostile` says which field its refusal must name and under which worker settings."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from hypothesis import strategies as st

from tests.support.canary import CANARIES, with_canaries
from tests.support.request_bodies import (
    OUT,
    PORT,
    REL,
    ROOT,
    TMP,
    copy_body,
    garbage_bodies,
    get_at,
    near_valid_bodies,
    set_at,
    valid_bodies,
)

# --- hostile values: one class per hardening rule, several values each --------------------------

BIG = 10**5000  # 5001 digits: str() of it raises ValueError (Python's 4300-digit limit)
LOCAL_PATH = ("output", "local", "path")
S3_ENDPOINT = ("output", "s3", "endpoint_url")
DATASET_URL = ("dataset", "<url>")  # whichever URL field the body has


def _deep_dict(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        node = {"a": node}
    return node


def _deep_list(depth: int) -> list[Any]:
    node: list[Any] = [1]
    for _ in range(depth):
        node = [node]
    return node


@dataclass(frozen=True, repr=False)
class Hostile:
    """One hostile value: where it goes, the field its refusal names, when it must be refused.

    `when`: "always" (any worker), "strict" (the strict worker: output roots set, loopback off),
    "never" (may pass; it must not leak, nor preempt the other values' checks when it passes).
    `host`: refused only where this name resolves (an unknown name is left to the connection,
    which cannot reach it either). `stage`: "schema" values are refused by the request's own
    validation, before the destination and address checks run (their refusals then do not
    happen); "destination" values by those checks; "passive" values by neither.
    """

    group: str
    label: str
    at: tuple[str, ...]
    value: Any
    field: str = ""  # default: the dotted `at`
    when: str = "always"
    stage: str = "schema"
    host: str | None = None
    says: str = ""  # a fragment the refusal's message for `field` must hold

    def __repr__(self) -> str:  # values may be 20,000 deep or have 5000 digits
        return f"Hostile({self.group}/{self.label})"

    @property
    def id(self) -> str:
        return f"{self.group}-{self.label}"

    def must_refuse(self, strict: bool) -> bool:
        if self.when == "never" or (self.when == "strict" and not strict):
            return False
        return self.host is None or _resolves(self.host)


_RESOLVED: dict[str, bool] = {}


def _resolves(host: str) -> bool:
    if host not in _RESOLVED:
        try:
            _RESOLVED[host] = bool(socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP))
        except (OSError, UnicodeError):
            _RESOLVED[host] = False
    return _RESOLVED[host]


def _local(label: str, value: str, when: str = "always") -> Hostile:
    return Hostile("local_path", label, LOCAL_PATH, value, when=when, stage="destination")


def _endpoint(label: str, value: str, when: str = "always", host: str | None = None) -> Hostile:
    return Hostile(
        "s3_endpoint", label, S3_ENDPOINT, value, when=when, stage="destination", host=host
    )


def _dataset_host(label: str, value: str, when: str = "always", host: str | None = None) -> Hostile:
    return Hostile(
        "dataset_host", label, DATASET_URL, value, when=when, stage="destination", host=host
    )


def _malformed(label: str, host: str) -> list[Hostile]:
    return [
        Hostile("malformed_host", f"dataset-{label}", DATASET_URL, f"http://{host}/hostile.zip"),
        Hostile("malformed_host", f"s3-{label}", S3_ENDPOINT, f"https://{host}/"),
    ]


def _at(group: str, label: str, at: tuple[str, ...], value: Any, **kw: Any) -> Hostile:
    return Hostile(group, label, at, value, **kw)


HOSTILE: tuple[Hostile, ...] = (
    # output.local.path: never inside the service's folder, only under the output roots, a folder.
    _local("root", ROOT),
    _local("root-jobs", f"{ROOT}/jobs"),
    _local("root-jobs-x-dotdot", f"{ROOT}/jobs/x/.."),
    _local("root-models", f"{ROOT}/models"),
    _local("dotdot-from-out-into-root", f"{OUT}/../root/jobs"),
    _local("double-slash-root", f"/{ROOT}//jobs/."),
    _local("symlink-to-jobs", f"{TMP}/link-to-jobs"),
    _local("symlink-chain-to-root", f"{TMP}/link-a"),
    _local("symlink-loop", f"{TMP}/loop-a/sub"),
    _local("relative", REL, "strict"),
    _local("relative-dotdot", f"./{REL}/../{REL}", "strict"),
    _local("home", "~", "strict"),
    _local("unknown-users-home", "~no-such-user-fuzz/x"),
    _local("etc", "/etc", "strict"),
    _local("filesystem-root", "/", "strict"),
    _local("proc-self-cwd", "/proc/self/cwd", "strict"),
    _local("dev-null", "/dev/null"),
    _local("under-a-file", f"{OUT}/a-file/sub"),
    _local("nul-byte", f"{OUT}/a\x00b"),
    _local("over-long-name", f"{OUT}/{'a' * 300}"),
    # output.s3.endpoint_url: the address policy (metadata, private, loopback in its spellings).
    _endpoint("metadata", "http://169.254.169.254/latest/meta-data/"),
    _endpoint("private-10", "http://10.0.0.7:9000"),
    _endpoint("private-192-168", "http://192.168.0.1/"),
    _endpoint("shared-100-64", "http://100.64.0.1/"),
    _endpoint("unique-local-v6", "http://[fd00::1]/"),
    _endpoint("link-local-v6-zone", "http://[fe80::1%251]/", host="fe80::1%251"),
    _endpoint("zero", f"http://0:{PORT}/"),
    _endpoint("mapped-metadata", "http://[::ffff:169.254.169.254]/"),
    _endpoint("mapped-loopback", f"http://[::ffff:127.0.0.1]:{PORT}/", "strict"),
    _endpoint("loopback-v6", f"http://[::1]:{PORT}/", "strict"),
    _endpoint("hex-ip", f"http://0x7f000001:{PORT}/", "strict"),
    _endpoint("decimal-ip", f"http://2130706433:{PORT}/", "strict"),
    _endpoint("octal-ip", f"http://0177.0.0.1:{PORT}/", "strict"),
    _endpoint("short-ip", f"http://127.1:{PORT}/", "strict"),
    _endpoint("localhost", f"http://localhost:{PORT}/", "strict", host="localhost"),
    _endpoint("localhost-dot", f"http://localhost.:{PORT}/", "strict", host="localhost."),
    # dataset URLs: the same policy; the loopback spellings point at the data server itself.
    _dataset_host("metadata", "http://169.254.169.254/hostile.zip"),
    _dataset_host("private-10", "http://10.1.2.3/hostile.zip"),
    _dataset_host("zero", f"http://0:{PORT}/hostile.zip"),
    _dataset_host("mapped-loopback", f"http://[::ffff:127.0.0.1]:{PORT}/hostile.zip", "strict"),
    _dataset_host("loopback-v6", f"http://[::1]:{PORT}/hostile.zip", "strict"),
    _dataset_host("hex-ip", f"http://0x7f000001:{PORT}/hostile.zip", "strict"),
    _dataset_host("decimal-ip", f"http://2130706433:{PORT}/hostile.zip", "strict"),
    _dataset_host("short-ip", f"http://127.1:{PORT}/hostile.zip", "strict"),
    _dataset_host(
        "localhost-dot", f"http://localhost.:{PORT}/hostile.zip", "strict", host="localhost."
    ),
    # Hosts the HTTP client would refuse late (IDNA, label lengths, ports), on both URL fields.
    *_malformed("empty-label", "a..b"),
    *_malformed("label-of-64", f"{'x' * 64}.example.com"),
    *_malformed("bare-xn--", "xn--"),
    *_malformed("bad-punycode", "xn--zz.com"),
    *_malformed("leading-hyphen", "-lead.example"),
    *_malformed("space", "exa mple.com"),
    *_malformed("name-over-253", "a." * 130 + "com"),
    *_malformed("port-99999", "example.com:99999"),
    *_malformed("port-0", "example.com:0"),
    # dataset.trigger_word: it reaches every caption.
    *(
        _at("trigger_word", label, ("dataset", "trigger_word"), word)
        for label, word in [
            ("nul", "ohwx\x00"),
            ("only-nul", "\x00"),
            ("esc", "\x1b[31mohwx\x1b[0m"),
            ("tab", "oh\twx"),
            ("del", "ohwx\x7f"),
            ("c1-csi", "oh\x9bwx"),
            ("next-line", "oh\x85wx"),
            ("line-separator", "oh\u2028wx"),
            ("carriage-return", "ohwx\rrm"),
        ]
    ),
    # output.s3.key_prefix: S3's rules.
    *(
        _at("key_prefix", label, ("output", "s3", "key_prefix"), prefix)
        for label, prefix in [
            ("dotdot-segment", "runs/../other"),
            ("only-dotdot", ".."),
            ("dot-segment", "runs/./x"),
            ("leading-dot", "./runs"),
            ("nul", "runs\x00"),
            ("newline", "runs\nx"),
            ("carriage-return", "runs\rx"),
            ("absolute", "/abs"),
            ("over-512-chars", "x" * 513),
            ("over-512-bytes", "\u00e9" * 300),
        ]
    ),
    # output.huggingface.repo_id: huggingface_hub's validate_repo_id.
    *(
        _at("repo_id", label, ("output", "huggingface", "repo_id"), repo)
        for label, repo in [
            ("double-hyphen", "me/a--b"),
            ("double-dot", "me/b..c"),
            ("dot-git", "me/lora.git"),
            ("trailing-dot", "me/lora."),
            ("trailing-hyphen", "me/lora-"),
            ("leading-hyphen", "-me/lora"),
            ("three-parts", "a/b/c"),
            ("dotdot-owner", "../x"),
            ("empty-name", "me/"),
            ("name-of-97", "x" * 97),
            ("space", "me/lo ra"),
            ("nul", "me/lora\x00"),
        ]
    ),
    # Passthrough keys and values: bounded before they reach the TOML, the log, the card.
    _at("passthrough", "key-of-300", ("training", "k" * 300), 1, field="training", says="256"),
    _at(
        "passthrough",
        "keys-10001",
        ("training",),
        {f"k{i}": 1 for i in range(10_001)},
        says="10000",
    ),
    _at("passthrough", "value-70k", ("training", "note"), "x" * 70_000, says="65536"),
    _at("passthrough", "list-10001", ("training", "blocks"), list(range(10_001)), says="10000"),
    _at("passthrough", "table-key-of-300", ("training", "adapter"), {"k" * 300: 1}, says="256"),
    _at(
        "passthrough",
        "table-value-70k",
        ("training", "model"),
        {"note": "x" * 70_000},
        field="training.model.note",
        says="65536",
    ),
    _at(
        "passthrough",
        "nested-list-10001",
        ("training", "monitoring"),
        {"tags": ["t"] * 10_001},
        field="training.monitoring.tags",
        says="10000",
    ),
    _at("passthrough", "nested-key-of-300", ("training", "monitoring"), {"k" * 300: 1}, says="256"),
    # A registered secret pasted as a passthrough key: masked wherever it shows, never refused
    # for it (api_keys has no such field, so that one is refused, naming a masked path).
    _at(
        "secret_as_key",
        "monitoring-key",
        ("training", "monitoring"),
        {CANARIES["api_keys.gemini_api_key"]: 1},
        when="never",
        stage="passive",
    ),
    _at(
        "secret_as_key",
        "top-level-key",
        ("training", CANARIES["output.s3.secret_key"]),
        "x",
        when="never",
        stage="passive",
    ),
    _at(
        "secret_as_key",
        "adapter-key",
        ("training", "adapter"),
        {CANARIES["api_keys.huggingface_token"]: 0.1},
        when="never",
        stage="passive",
    ),
    _at(
        "secret_as_key",
        "api-keys-key",
        ("api_keys", CANARIES["output.huggingface.token"]),
        "x",
        field="api_keys",
    ),
    # 5000-digit integers wherever a number, a string or a flag goes.
    *(
        _at("big_int", label, at, value, field=field)
        for label, at, value, field in [
            ("epochs", ("training", "epochs"), BIG, "training.epochs"),
            ("passthrough", ("training", "max_steps"), BIG, "training.max_steps"),
            ("negative-passthrough", ("training", "monitoring"), {"steps": -BIG}, ""),
            ("table", ("training", "model"), {"x": BIG}, "training.model.x"),
            ("repeats", ("dataset", "image_repeats"), BIG, "dataset.image_repeats"),
            ("betas", ("training", "optimizer_betas"), [BIG, 0.9], "training.optimizer_betas"),
            ("resume-from", ("resume_from",), BIG, "resume_from"),
            ("model-type", ("model_type",), BIG, "model_type"),
            ("local-path", LOCAL_PATH, BIG, "output.local.path"),
            ("token", ("api_keys", "gemini_api_key"), BIG, "api_keys.gemini_api_key"),
        ]
    ),
    # Nesting far past the recursion limit (the TOML keeps 8 levels).
    *(
        _at("deep_nesting", f"{label}-{depth}", at, make(depth), field=field)
        for depth in (1_500, 20_000)
        for label, at, make, field in [
            ("passthrough-dict", ("training", "monitoring"), _deep_dict, "training.monitoring"),
            ("passthrough-list", ("training", "xyz_custom"), _deep_list, "training.xyz_custom"),
            ("table", ("training", "model"), _deep_dict, "training.model"),
            ("unknown-top-level", ("zzz",), _deep_dict, "zzz"),
            ("string-field", ("dataset", "trigger_word"), _deep_list, "dataset.trigger_word"),
            ("section", ("api_keys",), _deep_dict, "api_keys"),
        ]
    ),
)
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(h.group for h in HOSTILE))
_BY_GROUP: Mapping[str, tuple[Hostile, ...]] = {
    g: tuple(h for h in HOSTILE if h.group == g) for g in GROUPS
}
_METHOD = {LOCAL_PATH: "local", S3_ENDPOINT: "s3"}  # a destination value needs its method


def apply_hostile(body: dict[str, Any], hostile: Hostile) -> tuple[tuple[str, ...], str, Any]:
    """Put a copy of `hostile`'s value into a valid body (a later value may write into it);
    (where it went, the field its refusal must name, the copy)."""
    at = hostile.at
    if at == DATASET_URL:
        dataset = body["dataset"]
        name = "images_url" if "images_url" in dataset else "videos_url"
        at = ("dataset", name)
    if hostile.stage == "destination" and at in _METHOD:
        output = body.setdefault("output", {})
        output["method"] = _METHOD[at]
        if at == S3_ENDPOINT:  # whatever else the body had: the endpoint is what is checked
            s3 = output.setdefault("s3", {})
            s3.setdefault("bucket", "fuzz-bucket")
            s3.setdefault("access_key", CANARIES["output.s3.access_key"])
            s3.setdefault("secret_key", CANARIES["output.s3.secret_key"])
    value = copy_body(hostile.value)
    set_at(body, at, value)
    return at, hostile.field or ".".join(at), value


class Applied(NamedTuple):
    """A hostile value as it ended up in a body."""

    hostile: Hostile
    field: str


def required_fields(applied: tuple[Applied, ...], strict: bool) -> set[str]:
    """The fields a refusal of the body must name. A value refused by the request's own
    validation stops the destination and address checks, so theirs are required only when no
    such value is in the body."""
    schema = [a for a in applied if a.hostile.stage == "schema"]
    counted = schema or [a for a in applied if a.hostile.stage == "destination"]
    return {a.field for a in counted if a.hostile.must_refuse(strict)}


@st.composite
def hostile_bodies(draw: st.DrawFn) -> tuple[dict[str, Any], tuple[Applied, ...]]:
    """A valid body (canaries in) with one or two hostile values of different classes. At most
    one needs an output method of its own (a local folder or an S3 endpoint)."""
    body = with_canaries(draw(valid_bodies()))
    groups = draw(
        st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2, unique=True).filter(
            lambda g: not {"local_path", "s3_endpoint"} <= set(g)
        )
    )
    placed: list[tuple[tuple[str, ...], Hostile, str, Any]] = []
    for group in groups:
        hostile = draw(st.sampled_from(_BY_GROUP[group]))
        at, field_, value = apply_hostile(body, hostile)
        placed.append((at, hostile, field_, value))
    # A later value may have replaced an earlier one (both on one URL, a whole section).
    applied = tuple(Applied(h, f) for at, h, f, v in placed if get_at(body, at) is v)
    return body, applied


class Drawn(NamedTuple):
    kind: str
    raw: Any
    applied: tuple[Applied, ...] = ()


@st.composite
def bodies(draw: st.DrawFn) -> Drawn:
    """A body of one kind, with canaries in every secret field where it has room for them."""
    kind = draw(st.sampled_from(["valid", "near", "near", "garbage", "hostile"]))
    if kind == "garbage":
        raw = draw(garbage_bodies)
        if isinstance(raw, dict) and draw(st.booleans()):
            # A section that is not an object has no room for a canary: leave it as it is.
            with contextlib.suppress(AttributeError, TypeError):
                raw = with_canaries(raw)
        return Drawn(kind, raw)
    applied: tuple[Applied, ...] = ()
    if kind == "hostile":
        body, applied = draw(hostile_bodies())
    else:
        body = draw(valid_bodies() if kind == "valid" else near_valid_bodies())
        with contextlib.suppress(AttributeError, TypeError):
            body = with_canaries(body)
    if draw(st.integers(0, 9)) == 0:
        body = {"input": body, "id": "runpod-sends-this", "webhook": "http://x"}
    return Drawn(kind, body, applied)
