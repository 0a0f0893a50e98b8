"""A fake Hugging Face Hub on loopback, speaking the HTTP endpoints `huggingface_hub` uses to upload
and download a dataset repo, so push/pull run the real client with no network.

    with FakeHub(token="hf_test") as hub:      # point HF_ENDPOINT (or HfApi(endpoint=...)) at hub.url
        ...
        hub.repos["me/data"].files("v3")       # {path: bytes} at a revision
        hub.lfs_uploads                        # sha256 of every LFS object PUT, in order
        hub.fail["commit"] = 1                 # the next commit answers 500

Endpoints: repo create, preupload (LFS vs regular + remote oid), LFS batch + basic PUT upload, ndjson commit
(file / lfsFile / deletedFile / deletedFolder), tag create, refs, repo info (+ /revision/R), tree
(recursive), paths-info, and HEAD/GET `resolve` with the X-Repo-Commit / ETag / X-Linked-* headers.
Xet is not implemented: the client must run with `huggingface_hub.constants.HF_HUB_DISABLE_XET = True`.
`/api/validate-yaml` (which the client calls before a commit with a README.md) refuses what
`card_metadata_errors` finds, an unknown `license` id among it, as the real Hub does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

LFS_EXT = (".parquet", ".arrow", ".png", ".jpg", ".bin", ".safetensors")

# A subset of the Hub's license ids (the real list is longer): enough to refuse what the Hub refuses in tests.
HUB_LICENSES = {"apache-2.0", "mit", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0",
                "cc0-1.0", "odc-by", "odbl", "openrail", "gpl-3.0", "other", "unknown"}


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Blob:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def entry(self, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "path": path, "size": len(self.data),
                               "oid": git_sha1(self.data)}
        if self.lfs:
            out["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": 134}
        return out


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, Blob]
    parent: str | None


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        oid = self.branches.get(rev) or self.tags.get(rev) or (rev if rev in self.commits else None)
        return self.commits.get(oid) if oid else None

    def files(self, rev: str = "main") -> dict[str, bytes]:
        commit = self.resolve(rev)
        return {p: b.data for p, b in commit.files.items()} if commit else {}

    def commit(self, message: str, files: dict[str, Blob], branch: str = "main") -> Commit:
        c = Commit(uuid.uuid4().hex + uuid.uuid4().hex[:8], message, files, self.branches.get(branch))
        self.commits[c.oid] = c
        self.branches[branch] = c.oid
        return c


def card_metadata_errors(readme: str) -> list[str]:
    """What the fake Hub rejects in a README's YAML block (a subset of the real Hub's checks)."""
    import yaml

    m = re.match(r"---\n(.*?)\n---\n", readme, re.S)
    if not m:
        return []
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as e:
        return [f"YAML does not parse: {e}"]
    errors = []
    if not isinstance(meta, dict):
        return ["metadata must be a mapping"]
    for i, cfg in enumerate(meta.get("configs") or []):
        if not isinstance(cfg, dict) or "config_name" not in cfg or "data_files" not in cfg:
            errors.append(f"configs[{i}] needs config_name and data_files")
    for key in ("license", "task_categories", "tags", "size_categories"):
        if key in meta and not isinstance(meta[key], (str, list)):
            errors.append(f"'{key}' must be a string or a list")
    licenses = meta.get("license")
    if any(lic not in HUB_LICENSES for lic in (licenses if isinstance(licenses, list) else [licenses])
           if isinstance(lic, str)):
        errors.append('"license" does not match any of the allowed types')
    return errors


class FakeHub:
    """The server; state lives on this object and is safe to read from the test thread."""

    def __init__(self, token: str | None = "hf_fake_token") -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.lfs_uploads: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.fail: dict[str, int] = {}
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def should_fail(self, name: str) -> bool:
        with self.lock:
            if self.fail.get(name, 0) > 0:
                self.fail[name] -= 1
                return True
        return False


_ROUTES = [
    ("POST", r"/api/repos/create", "create"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("POST", r"/api/(?P<t>\w+)s/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)", "preupload"),
    ("POST", r"/(?:(?P<t>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_put"),
    ("POST", r"/api/(?P<t>\w+)s/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", "commit"),
    ("POST", r"/api/(?P<t>\w+)s/(?P<repo>[^/]+/[^/]+)/tag/(?P<rev>[^/]+)", "tag"),
    ("GET", r"/api/(?P<t>\w+)s/(?P<repo>[^/]+/[^/]+)/refs", "refs"),
    ("GET", r"/api/(?P<t>\w+)s/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
    ("POST", r"/api/(?P<t>\w+)s/(?P<repo>[^/]+/[^/]+)/paths-info/(?P<rev>[^/]+)", "paths_info"),
    ("GET", r"/api/(?P<t>\w+)s/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?", "info"),
    ("GET|HEAD", r"/(?:(?P<t>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)",
     "resolve"),
]


class _Handler(BaseHTTPRequestHandler):
    server_hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    # ---- plumbing ------------------------------------------------------------------------------
    def _route(self, method: str) -> None:
        hub = self.server_hub
        parsed = urlparse(self.path)
        self.query = parse_qs(parsed.query)
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        hub.requests.append((method, parsed.path))
        for methods, pattern, name in _ROUTES:
            m = re.fullmatch(pattern, parsed.path)
            if m and method in methods.split("|"):
                if hub.should_fail(name):
                    return self._send(500, {"error": f"simulated failure in {name}"})
                args = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
                return getattr(self, f"h_{name}")(**args)
        self._send(404, {"error": f"no route {method} {parsed.path}"})

    def _send(self, code: int, body: Any = None, headers: dict[str, str] | None = None,
              raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        self.send_response(code)
        ctype = "application/octet-stream" if raw is not None else "application/json"
        self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _authorized(self) -> bool:
        token = self.server_hub.token
        if token is None or self.headers.get("Authorization") == f"Bearer {token}":
            return True
        self._send(401, {"error": "Invalid credentials in Authorization header"})
        return False

    def _repo(self, repo: str, rev: str | None = None) -> tuple[Repo | None, Commit | None]:
        r = self.server_hub.repos.get(repo)
        if r is None:
            self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return None, None
        if r.private and self.headers.get("Authorization") != f"Bearer {self.server_hub.token}":
            self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return None, None
        commit = r.resolve(rev or "main")
        if commit is None:
            self._send(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"})
            return r, None
        return r, commit

    # ---- handlers ------------------------------------------------------------------------------
    def h_create(self) -> None:
        if not self._authorized():
            return
        p = json.loads(self.body)
        repo_id = f"{p.get('organization') or 'user'}/{p['name']}"
        url = f"{self.server_hub.url}/datasets/{repo_id}"
        with self.server_hub.lock:
            if repo_id in self.server_hub.repos:
                return self._send(409, {"error": "You already created this dataset repo", "url": url})
            private = p.get("visibility") == "private" or bool(p.get("private"))
            repo = Repo(repo_id, p.get("type") or "model", private)
            repo.commit("initial commit", {".gitattributes": Blob(b"*.parquet filter=lfs\n", False)})
            self.server_hub.repos[repo_id] = repo
        self._send(200, {"url": url, "name": repo_id})

    def h_validate_yaml(self) -> None:
        errors = [{"message": m} for m in card_metadata_errors(json.loads(self.body)["content"])]
        self._send(400 if errors else 200, {"errors": errors, "warnings": []})

    def h_preupload(self, t: str, repo: str, rev: str) -> None:
        r, commit = self._repo(repo, rev)
        if commit is None or not self._authorized():
            return
        files = []
        for f in json.loads(self.body)["files"]:
            sample = base64.b64decode(f["sample"])
            lfs = f["path"].endswith(LFS_EXT) or b"\0" in sample
            old = commit.files.get(f["path"])
            oid = (old.sha256 if old.lfs else git_sha1(old.data)) if old else None
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        self._send(200, {"files": files, "commitOid": commit.oid})

    def h_lfs_batch(self, repo: str, t: str | None = None) -> None:
        if not self._authorized():
            return
        objects = []
        for obj in json.loads(self.body)["objects"]:
            out = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.server_hub.lfs:
                out["actions"] = {"upload": {"href": f"{self.server_hub.url}/lfs-upload/{obj['oid']}"}}
            objects.append(out)
        self._send(200, {"transfer": "basic", "objects": objects})

    def h_lfs_put(self, oid: str) -> None:
        if hashlib.sha256(self.body).hexdigest() != oid:
            return self._send(400, {"error": "sha256 mismatch"})
        with self.server_hub.lock:
            self.server_hub.lfs[oid] = self.body
            self.server_hub.lfs_uploads.append(oid)
        self._send(200, {})

    def h_commit(self, t: str, repo: str, rev: str) -> None:
        r, commit = self._repo(repo, rev)
        if commit is None or not self._authorized():
            return
        files = dict(commit.files)
        header: dict[str, Any] = {}
        for line in self.body.splitlines():
            item = json.loads(line)
            key, v = item["key"], item["value"]
            if key == "header":
                header = v
            elif key == "file":
                files[v["path"]] = Blob(base64.b64decode(v["content"]), False)
            elif key == "lfsFile":
                data = self.server_hub.lfs.get(v["oid"])
                if data is None:
                    return self._send(422, {"error": f"LFS object {v['oid']} was never uploaded"})
                files[v["path"]] = Blob(data, True)
            elif key in ("deletedFile", "deletedFolder"):
                prefix = v["path"].rstrip("/")
                for p in [p for p in files if p == prefix or p.startswith(prefix + "/")]:
                    del files[p]
        with self.server_hub.lock:
            new = r.commit(header.get("summary", ""), files, branch=rev)
        self._send(200, {"success": True, "commitOid": new.oid, "pullRequestUrl": None,
                         "commitUrl": f"{self.server_hub.url}/datasets/{repo}/commit/{new.oid}"})

    def h_tag(self, t: str, repo: str, rev: str) -> None:
        r, commit = self._repo(repo, rev)
        if commit is None or not self._authorized():
            return
        tag = json.loads(self.body)["tag"]
        with self.server_hub.lock:
            if tag in r.tags:
                return self._send(409, {"error": f"Tag {tag} already exists"})
            r.tags[tag] = commit.oid
        self._send(200, {})

    def h_refs(self, t: str, repo: str) -> None:
        r, _ = self._repo(repo)
        if r is None:
            return
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": o} for n, o in r.branches.items()]
        tags = [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": o} for n, o in r.tags.items()]
        self._send(200, {"branches": branches, "tags": tags, "converts": []})

    def h_tree(self, t: str, repo: str, rev: str, path: str = "") -> None:
        _, commit = self._repo(repo, rev)
        if commit is None:
            return
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = path.rstrip("/") + "/" if path else ""
        entries, dirs = [], set()
        for p, blob in sorted(commit.files.items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):]
            if "/" in rest and not recursive:
                dirs.add(prefix + rest.split("/")[0])
                continue
            parts = p.split("/")
            ancestors = ("/".join(parts[:i]) for i in range(1, len(parts)))
            dirs.update(d for d in ancestors if d.startswith(prefix))
            entries.append(blob.entry(p))
        folders = [{"type": "directory", "path": d, "oid": git_sha1(d.encode())} for d in sorted(dirs)]
        self._send(200, folders + entries)

    def h_paths_info(self, t: str, repo: str, rev: str) -> None:
        _, commit = self._repo(repo, rev)
        if commit is None:
            return
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            paths = json.loads(self.body)["paths"]
        else:
            paths = parse_qs(self.body.decode()).get("paths", [])
        self._send(200, [commit.files[p].entry(p) for p in paths if p in commit.files])

    def h_info(self, t: str, repo: str, rev: str | None = None) -> None:
        r, commit = self._repo(repo, rev)
        if commit is None:
            return
        siblings = [{"rfilename": p} for p in sorted(commit.files)]
        self._send(200, {"id": repo, "sha": commit.oid, "private": r.private, "siblings": siblings,
                         "tags": [], "lastModified": "2026-01-01T00:00:00.000Z"})

    def h_resolve(self, repo: str, rev: str, path: str, t: str | None = None) -> None:
        _, commit = self._repo(repo, rev)
        if commit is None:
            return
        blob = commit.files.get(path)
        if blob is None:
            return self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound",
                                                                   "X-Repo-Commit": commit.oid})
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{git_sha1(blob.data)}"'}
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(len(blob.data))})
        self._send(200, headers=headers, raw=blob.data)
