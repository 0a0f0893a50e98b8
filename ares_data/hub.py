"""Push a store version to the Hugging Face Hub as a dataset repo, and pull it back.

Repo layout (one commit per push; the Hub tag `v<N>` marks the commit holding exactly `NAME@v<N>`):

    README.md                                  the dataset card (data_cards/<kind>.md), YAML `configs`
    data/<config>/train-0000i-of-0000n.parquet the rows, sharded by size (Parquet, viewer-friendly)
    ares/<config>/manifest.json                the store manifest + `content_fingerprint`
    assets/<config>-scores.png                 score histogram + per-position means (scores configs)

`<config>` is the dataset kind (`scores`, `rationales`, `problems`, `dpo-text`, ...); the pushed dataset is
the default config. `--with-parents` adds every ancestor (problems -> rationales -> scores) as further
configs, so `load_dataset(repo, "problems", revision="v3")` gets the problems the scores were made from.

Fingerprints: the store fingerprint hashes the Arrow file bytes, which do not survive Arrow -> Parquet ->
Arrow. So a push also records `content_fingerprint`: sha256 over the kind and, column by column, the values
in row order as canonical JSON (sorted keys; binary values as their sha256), whatever the chunking. `pull`
recomputes it over the downloaded Parquet before publishing and over the published Arrow after, and refuses
data that does not match.

Re-running a failed push uploads only what the Hub does not have: files whose remote sha256 (LFS) or git
oid already match are left out of the commit, and LFS objects the Hub already stores are not sent again.
The token comes from HF_TOKEN or the huggingface_hub login and is never written to any file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from . import export as _export  # noqa: F401 - registers the export kinds
from .cards import HUB, SPLIT, CardConfig, render_card
from .errors import AresError, UsageError
from .stats import compute, plot, read_table
from .store import Store, Version

MAX_SHARD_BYTES = 500 * 1024**2
_REPO_RE = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*)(?:@(?P<rev>[\w.\-/]+))?$")
_RESERVED = {"name", "kind", "version", "fingerprint", "build_key", "parents", "command", "params", "rows",
             "counts", "files", "columns", "tool_version", "created_at"}


class HubError(AresError):
    """The Hub could not be reached, refused the token, or answered with an error."""


@dataclass
class PushResult:
    repo: str
    url: str
    tag: str
    commit: str | None
    configs: dict[str, str]
    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or HUB).rstrip("/")


def get_token() -> str:
    token = os.environ.get("HF_TOKEN")
    if not token:
        from huggingface_hub import get_token as hf_token

        token = hf_token()
    if not token:
        raise HubError("no Hugging Face token found",
                       hint="export HF_TOKEN=hf_... or run `hf auth login` (ares never writes the token)")
    return token


def parse_repo(spec: str) -> tuple[str, str | None]:
    m = _REPO_RE.match(spec.strip())
    if not m:
        raise UsageError(f"invalid Hub repo '{spec}'", hint="write OWNER/NAME, optionally @REVISION (@v3)")
    return m.group("repo"), m.group("rev")


@contextlib.contextmanager
def hub_errors(action: str, repo: str) -> Iterator[None]:
    """Turn huggingface_hub / network exceptions into one clear HubError; no progress bars meanwhile
    (library code never prints: the CLI shows its own status)."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    were_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    except RevisionNotFoundError as e:
        raise HubError(f"{action}: {repo} has no such revision ({_first_line(e)})") from None
    except RepositoryNotFoundError:
        raise HubError(f"{action}: repo {repo} not found at {endpoint()} (or the token cannot see it)") \
            from None
    except HfHubHTTPError as e:
        code = e.response.status_code if e.response is not None else None
        resume = ": files already on the Hub are not uploaded again" if action == "push" else ""
        hint = "check HF_TOKEN (a write token is needed to push)" if code in (401, 403) else \
            f"re-run the same command{resume}"
        raise HubError(f"{action} failed: the Hub answered {code} ({_first_line(e)})", hint=hint) from None
    except AresError:
        raise
    except ValueError as e:  # the client validates README.md with the Hub before uploading anything
        if not str(e).startswith("Invalid metadata in README.md"):
            raise
        raise HubError(f"{action} failed: the Hub refused the dataset card: {' '.join(str(e).split())}",
                       hint="--license takes a Hub license id (cc-by-4.0, mit, apache-2.0, other)") from None
    except Exception as e:  # noqa: BLE001 - network errors of the client's HTTP stack, LFS upload errors
        if not _is_network(e):
            raise
        cause = e.__cause__ or e
        resume = ": completed uploads are kept" if action == "push" else ""
        raise HubError(f"{action} failed: cannot talk to the Hub at {endpoint()}: {_first_line(cause)}",
                       hint=f"check the network / HF_ENDPOINT and re-run{resume}") from None
    finally:
        if not were_disabled:
            enable_progress_bars()


def _is_network(e: BaseException) -> bool:
    """A transport-level failure: connection refused/reset, timeout, or an upload that failed with one."""
    for exc in (e, e.__cause__):
        if exc is None:
            continue
        if isinstance(exc, (OSError, TimeoutError)) or any(
                c.__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2")
                for c in type(exc).__mro__):
            return True
    return isinstance(e, RuntimeError) and "upload" in str(e).lower()


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _api(token: str | None) -> Any:
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise HubError("huggingface_hub is in offline mode (HF_HUB_OFFLINE is set)",
                       hint="unset HF_HUB_OFFLINE to push or pull")

    return HfApi(endpoint=endpoint(), token=token)


# ---- content fingerprint -------------------------------------------------------------------------
def _canonical(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def _has_binary(t: pa.DataType) -> bool:
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return True
    if pa.types.is_struct(t):
        return any(_has_binary(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _has_binary(t.value_type)
    return False


def _slices(column: pa.ChunkedArray, max_bytes: int = 32 * 1024**2) -> Iterator[pa.Array]:
    """The column's non-empty pieces of at most about `max_bytes` (zero-copy slices of its chunks)."""
    for chunk in column.chunks:
        if len(chunk) == 0:
            continue
        rows = max(1, int(max_bytes * len(chunk) // max(1, chunk.nbytes)))
        for start in range(0, len(chunk), rows):
            yield chunk.slice(start, rows)


def content_fingerprint(kind: str, table: pa.Table) -> str:
    """sha256 over the kind and, column by column, the values in row order as canonical JSON (binary
    values as their sha256). Independent of chunking and file format: the same for Arrow and Parquet.
    Values are converted a bounded slice at a time, so a memory-mapped table is hashed in bounded memory."""
    h = hashlib.sha256(f"ares-content-v1\n{kind}\n".encode())
    for name in table.column_names:
        column = table.column(name)
        binary = _has_binary(column.type)
        h.update(json.dumps(name).encode() + b":[")
        first = True
        for piece in _slices(column):
            values = piece.to_pylist()
            text = json.dumps(_canonical(values) if binary else values, sort_keys=True, separators=(",", ":"))
            h.update((b"" if first else b",") + text[1:-1].encode())
            first = False
        h.update(b"]\n")
    return h.hexdigest()


# ---- building the folder -------------------------------------------------------------------------
def plan_configs(store: Store, version: Version, with_parents: bool) -> list[CardConfig]:
    configs = [CardConfig(version.kind, version, default=True)]
    if not with_parents:
        return configs
    queue, seen = list(version.manifest.get("parents", [])), {version.ref}
    while queue:
        parent = store.resolve(queue.pop(0)["ref"])
        if parent.ref in seen:
            continue
        seen.add(parent.ref)
        name = parent.kind if parent.kind not in {c.name for c in configs} else f"{parent.kind}-{parent.name}"
        configs.append(CardConfig(name, parent))
        queue.extend(parent.manifest.get("parents", []))
    return configs


def write_shards(table: pa.Table, folder: Path, max_shard_bytes: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    n = max(1, -(-table.nbytes // max_shard_bytes)) if table.num_rows else 1
    per = max(1, -(-table.num_rows // n))
    has_binary = any(pa.types.is_struct(f.type) or pa.types.is_list(f.type) and "image" in f.name
                     for f in table.schema)
    paths = []
    for i in range(n):
        path = folder / f"{SPLIT}-{i:05d}-of-{n:05d}.parquet"
        pq.write_table(table.slice(i * per, per), path, row_group_size=100 if has_binary else 10_000,
                       compression="zstd")
        paths.append(path)
    return paths


def build_folder(store: Store, configs: list[CardConfig], out: Path, *, repo: str, tag: str,
                 license: str = "other", max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
    """Write everything a push uploads into `out` (deterministic: same version -> same bytes)."""
    main_stats, image = None, None
    for cfg in configs:
        table = read_table(cfg.version)
        write_shards(table, out / "data" / cfg.name, max_shard_bytes)
        fingerprint = content_fingerprint(cfg.version.kind, table)
        manifest = {**cfg.version.manifest, "content_fingerprint": fingerprint,
                    "hub": {"config": cfg.name, "data_files": cfg.data_files, "default": cfg.default}}
        (out / "ares" / cfg.name).mkdir(parents=True, exist_ok=True)
        (out / "ares" / cfg.name / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True,
                                                                         default=str))
        if cfg.default:
            main_stats = compute(store, cfg.version)
            if "histogram" in main_stats:
                plot(main_stats, out / "assets" / f"{cfg.name}-scores.png")
                image = f"{endpoint()}/datasets/{repo}/resolve/{tag}/assets/{cfg.name}-scores.png"
    main = next(c for c in configs if c.default)
    card = render_card(store, main.version, configs=configs, repo=repo, tag=tag, license=license,
                       stats=main_stats, image=image, endpoint=endpoint())
    (out / "README.md").write_text(card, encoding="utf-8")


# ---- push ----------------------------------------------------------------------------------------
def _local_oid(path: Path, lfs: bool) -> str:
    from huggingface_hub.utils.sha import git_hash

    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest() if lfs else git_hash(data)


def _remote_files(api: Any, repo: str) -> dict[str, tuple[str, bool]]:
    from huggingface_hub.hf_api import RepoFile

    out = {}
    for f in api.list_repo_tree(repo, repo_type="dataset", recursive=True):
        if isinstance(f, RepoFile):
            out[f.path] = (f.lfs.sha256, True) if f.lfs else (f.blob_id, False)
    return out


def plan_operations(folder: Path, remote: dict[str, tuple[str, bool]],
                    configs: list[CardConfig]) -> tuple[list[Any], list[str], list[str]]:
    """Commit operations for what differs from the remote; (operations, unchanged, deleted)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    ops, unchanged, local = [], [], set()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        local.add(rel)
        have = remote.get(rel)
        if have is not None and have[0] == _local_oid(path, have[1]):
            unchanged.append(rel)
        else:
            ops.append(CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(path)))
    prefixes = tuple(f"{top}/{c.name}/" for c in configs for top in ("data", "ares"))
    deleted = [p for p in remote if p.startswith(prefixes) and p not in local]
    ops.extend(CommitOperationDelete(path_in_repo=p) for p in deleted)
    return ops, unchanged, deleted


def push(store: Store, ref: str, repo: str, *, private: bool = False, with_parents: bool = False,
         license: str = "other", max_shard_bytes: int = MAX_SHARD_BYTES) -> PushResult:
    version = store.resolve(ref)
    repo, rev = parse_repo(repo)
    if rev:
        raise UsageError(f"push to '{repo}' without @{rev}: the tag is the version (v{version.version})")
    token = get_token()
    tag = f"v{version.version}"
    configs = plan_configs(store, version, with_parents)
    for cfg in configs:  # what leaves the store must be what its manifest says
        cfg.version.verify_fingerprint()
    api = _api(token)
    with tempfile.TemporaryDirectory(prefix="ares-push-") as tmp:
        folder = Path(tmp)
        build_folder(store, configs, folder, repo=repo, tag=tag, license=license,
                     max_shard_bytes=max_shard_bytes)
        with hub_errors("push", repo):
            url = str(api.create_repo(repo, repo_type="dataset", private=private or None, exist_ok=True))
            tags = {t.name: t.target_commit for t in api.list_repo_refs(repo, repo_type="dataset").tags}
            if tag in tags:  # pushed before: fine when it is the same content, refused otherwise
                _check_tagged(api, repo, tag, folder / "ares" / version.kind / "manifest.json")
                return PushResult(repo, url, tag, tags[tag], {c.name: c.version.ref for c in configs},
                                  unchanged=sorted(p.relative_to(folder).as_posix()
                                                   for p in folder.rglob("*") if p.is_file()))
            ops, unchanged, deleted = plan_operations(folder, _remote_files(api, repo), configs)
            commit = None
            if ops:
                info = api.create_commit(repo, operations=ops, repo_type="dataset",
                                         commit_message=f"ares-data push {version.ref}",
                                         commit_description=f"fingerprint {version.fingerprint}")
                commit = info.oid
            commit = commit or api.repo_info(repo, repo_type="dataset").sha
            api.create_tag(repo, tag=tag, revision=commit, repo_type="dataset", tag_message=f"ares {tag}")
    uploaded = [op.path_in_repo for op in ops if type(op).__name__ == "CommitOperationAdd"]
    return PushResult(repo, url, tag, commit, {c.name: c.version.ref for c in configs}, uploaded, unchanged,
                      deleted)


def _check_tagged(api: Any, repo: str, tag: str, manifest: Path) -> None:
    from huggingface_hub.utils.sha import git_hash

    rel = manifest.relative_to(manifest.parents[2]).as_posix()
    remote = {f.path: f.blob_id for f in api.get_paths_info(repo, [rel], repo_type="dataset", revision=tag)}
    if remote.get(rel) != git_hash(manifest.read_bytes()):
        raise HubError(f"tag {tag} already exists on {repo} and holds other content",
                       hint="versions are immutable: push to another repo, or delete the Hub tag first")
