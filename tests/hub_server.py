"""A small in-process Hugging Face Hub for tests, and the ``local_hub`` pytest fixture.

The server speaks the subset of the Hub HTTP API that ``huggingface_hub`` 2, transformers, timm and
datasets use to push and pull repositories: repo creation (409 when it exists), whoami, repo info with
siblings, preupload (regular vs LFS), NDJSON commits, tree listing and paths-info, the LFS batch API with
PUT uploads, and ``resolve`` downloads (HEAD/GET, ranges) with ``X-Repo-Commit``/``ETag`` headers. Errors
carry the ``X-Error-Code`` header the client maps to its exceptions (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``).

It runs with uvicorn on ``127.0.0.1`` (a free port) in a background thread and keeps blobs under a
temporary folder. ``server.inject_error("commit")`` makes the next commit fail with a 500, to test that
interrupted pushes can be retried.

The ``local_hub`` fixture starts a server and points every client at it for the duration of one test:
``HF_HUB_OFFLINE=1`` blocks all HTTP (127.0.0.1 included) and ``HF_ENDPOINT`` is read once at import, so
the fixture patches the cached module constants (see :func:`patch_hub_clients`) and restores them after.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import parse_qs, unquote

import pytest
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

USER = "test-user"
TOKEN = "hf_local_test_token"
REPO_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_PLURALS = {"models": "model", "datasets": "dataset", "spaces": "space"}
# Uploaded as LFS whatever their content, like the Hub's default .gitattributes.
_LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.parquet", "*.arrow", "*.npy", "*.npz",
                 "*.h5", "*.onnx", "*.zip", "*.gz", "*.tar", "*.png", "*.jpg", "*.jpeg", "*.msgpack")
_REGULAR_MAX_SIZE = 10 * 1024 * 1024
_GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in _LFS_PATTERNS).encode()


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass(frozen=True)
class _Entry:
    """A file in a commit."""

    path: str
    sha256: str
    size: int
    lfs: bool
    git_oid: str  # git blob id (of the LFS pointer for LFS files)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid

    def to_json(self) -> dict:
        item = {"type": "file", "oid": self.git_oid, "size": self.size, "path": self.path}
        if self.lfs:
            item["lfs"] = {"oid": self.sha256, "size": self.size,
                           "pointerSize": len(_lfs_pointer(self.sha256, self.size))}
        return item


@dataclass
class _Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    files: dict[str, _Entry]


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, _Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> _Commit | None:
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}

    def response(self) -> Response:
        headers = {"X-Error-Message": self.message, **self.headers}
        if self.code:
            headers["X-Error-Code"] = self.code
        return JSONResponse({"error": self.message}, status_code=self.status, headers=headers)


class LocalHub:
    """In-memory Hub state (repos, commits) with blobs on disk, served over HTTP by :meth:`start`."""

    def __init__(self, storage_dir: str | Path):
        self.storage_dir = Path(storage_dir)
        self.blob_dir = self.storage_dir / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], _Repo] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) of every request
        self.unhandled: list[tuple[str, str]] = []  # requests no route matched (404)
        self._faults: list[tuple[str, int]] = []
        self._lock = threading.RLock()
        self._counter = 0
        self.endpoint: str | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(routes=[Route("/{path:path}", self._dispatch,
                                           methods=["GET", "HEAD", "POST", "PUT", "DELETE"])])

    # ------------------------------------------------------------------ test helpers
    def inject_error(self, kind: str = "commit", status: int = 500, times: int = 1) -> None:
        """Make the next ``times`` requests of ``kind`` fail with ``status``.

        kinds: commit, preupload, lfs_batch, lfs_upload, resolve, create_repo. The client retries 5xx on
        preupload, LFS and resolve calls by itself (with back-off); commits are not retried.
        """
        with self._lock:
            self._faults.extend([(kind, status)] * times)

    def list_files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> list[str]:
        return sorted(self._commit(repo_type, repo_id, revision).files)

    def read_file(self, repo_id: str, path: str, repo_type: str = "model", revision: str = "main") -> bytes:
        entry = self._commit(repo_type, repo_id, revision).files[path]
        return (self.blob_dir / entry.sha256).read_bytes()

    def stored_bytes(self) -> Iterator[bytes]:
        """Content of every blob the server ever received (committed or not)."""
        for path in sorted(self.blob_dir.iterdir()):
            yield path.read_bytes()

    def num_commits(self, repo_id: str, repo_type: str = "model") -> int:
        return len(self._repo(repo_type, repo_id).commits)

    # ------------------------------------------------------------------ server lifecycle
    def start(self) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("local Hub server did not start")
            time.sleep(0.01)
        self.endpoint = f"http://127.0.0.1:{port}"
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None

    # ------------------------------------------------------------------ storage
    def _repo(self, repo_type: str, repo_id: str, authorized: bool = True) -> _Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authorized):
            raise HubError(404 if repo is None else 401, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _commit(self, repo_type: str, repo_id: str, revision: str, authorized: bool = True) -> _Commit:
        commit = self._repo(repo_type, repo_id, authorized).resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _store_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_dir / sha
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return sha

    def _new_commit(self, repo: _Repo, branch: str, parent: str | None, title: str, message: str,
                    files: dict[str, _Entry]) -> _Commit:
        self._counter += 1
        oid = hashlib.sha1(f"{repo.repo_id}:{parent}:{self._counter}:{time.time_ns()}".encode()).hexdigest()
        commit = _Commit(oid, parent, title, message, _now(), files)
        repo.commits[oid] = commit
        repo.branches[branch] = oid
        return commit

    def _entry_for(self, path: str, data: bytes, lfs: bool) -> _Entry:
        sha = self._store_blob(data)
        git_oid = _git_oid(_lfs_pointer(sha, len(data)) if lfs else data)
        return _Entry(path, sha, len(data), lfs, git_oid)

    def _take_fault(self, kind: str) -> None:
        with self._lock:
            for i, (fault_kind, status) in enumerate(self._faults):
                if fault_kind == kind:
                    del self._faults[i]
                    raise HubError(status, f"Injected {status} error on {kind}")

    # ------------------------------------------------------------------ HTTP
    async def _dispatch(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.url.path.encode()
        segments = [unquote(s) for s in raw.decode("latin-1").split("?")[0].strip("/").split("/")]
        method = request.method
        try:
            response = await self._route(request, method, segments)
        except HubError as error:
            response = error.response()
        if response is None:
            self.unhandled.append((method, request.url.path))
            response = JSONResponse({"error": f"Not implemented: {method} {request.url.path}"}, status_code=404)
        self.requests.append((method, request.url.path, response.status_code))
        return response

    async def _route(self, request: Request, method: str, seg: list[str]) -> Response | None:
        authorized = request.headers.get("authorization") is not None
        if seg[:1] == ["api"]:
            if seg[1:] == ["whoami-v2"]:
                return self._whoami(authorized)
            if seg[1:] == ["repos", "create"] and method == "POST":
                return self._create_repo(await request.json())
            if seg[1:] == ["repos", "delete"] and method == "POST":
                return self._delete_repo(await request.json())
            if seg[1:] == ["validate-yaml"] and method == "POST":
                return self._validate_yaml(await request.json())
            if len(seg) >= 4 and seg[1] in _PLURALS:
                repo_type, repo_id, rest = _PLURALS[seg[1]], f"{seg[2]}/{seg[3]}", seg[4:]
                return await self._repo_api(request, method, repo_type, repo_id, rest, authorized)
            return None
        if seg[:1] == ["__lfs"] and len(seg) == 2 and method == "PUT":
            return self._lfs_put(seg[1], await request.body())
        repo_type = "model"
        if seg[:1] and seg[0] in _PLURALS and len(seg) > 3:
            repo_type, seg = _PLURALS[seg[0]], seg[1:]
        if len(seg) == 6 and seg[1].endswith(".git") and seg[2:] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(repo_type, f"{seg[0]}/{seg[1][:-4]}", await request.json(), authorized)
        if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(request, repo_type, f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:]), authorized)
        return None

    async def _repo_api(self, request, method, repo_type, repo_id, rest, authorized) -> Response | None:
        if not rest and method == "GET":
            return self._info(repo_type, repo_id, "main", authorized)
        if len(rest) == 2 and rest[0] == "revision" and method == "GET":
            return self._info(repo_type, repo_id, rest[1], authorized)
        if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
            recursive = request.query_params.get("recursive", "false").lower() == "true"
            return self._tree(repo_type, repo_id, rest[1], "/".join(rest[2:]), recursive, authorized)
        if len(rest) == 2 and rest[0] == "paths-info" and method == "POST":
            form = parse_qs((await request.body()).decode())
            return self._paths_info(repo_type, repo_id, rest[1], form.get("paths", []), authorized)
        if len(rest) == 2 and rest[0] == "preupload" and method == "POST":
            return self._preupload(repo_type, repo_id, rest[1], await request.json(), authorized)
        if len(rest) == 2 and rest[0] == "commit" and method == "POST":
            return self._commit_api(repo_type, repo_id, rest[1], await request.body(), authorized)
        if rest == ["refs"] and method == "GET":
            repo = self._repo(repo_type, repo_id, authorized)
            branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid} for b, oid in repo.branches.items()]
            return JSONResponse({"branches": branches, "converts": [], "tags": [], "pullRequests": []})
        if len(rest) == 2 and rest[0] == "commits" and method == "GET":
            commit = self._commit(repo_type, repo_id, rest[1], authorized)
            repo, history = self._repo(repo_type, repo_id), []
            while commit is not None:
                history.append({"id": commit.oid, "title": commit.title, "message": commit.message,
                                "authors": [{"user": USER}], "date": commit.date})
                commit = repo.commits.get(commit.parent) if commit.parent else None
            return JSONResponse(history)
        return None

    # ------------------------------------------------------------------ endpoints
    def _whoami(self, authorized: bool) -> Response:
        if not authorized:
            raise HubError(401, "Invalid credentials in Authorization header")
        return JSONResponse({"type": "user", "id": "0" * 24, "name": USER, "fullname": "Test User",
                             "email": None, "orgs": [], "isPro": False,
                             "auth": {"type": "access_token",
                                      "accessToken": {"displayName": "local-test", "role": "write"}}})

    def _create_repo(self, payload: dict) -> Response:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        with self._lock:
            self._take_fault("create_repo")
            url = f"{self.endpoint}/{REPO_PREFIXES[repo_type]}{repo_id}"
            if (repo_type, repo_id) in self.repos:  # the Hub answers 409 with the repo's url
                return JSONResponse({"error": "You already created this repo", "url": url}, status_code=409,
                                    headers={"X-Error-Message": "You already created this repo"})
            repo = _Repo(repo_type, repo_id, payload.get("visibility") == "private" or bool(payload.get("private")),
                         _now())
            self.repos[(repo_type, repo_id)] = repo
            entry = self._entry_for(".gitattributes", _GITATTRIBUTES, lfs=False)
            self._new_commit(repo, "main", None, "initial commit", "", {entry.path: entry})
        return JSONResponse({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self, payload: dict) -> Response:
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        with self._lock:
            if self.repos.pop((payload.get("type") or "model", repo_id), None) is None:
                raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return JSONResponse({})

    def _validate_yaml(self, payload: dict) -> Response:
        """Checks the README front matter parses and that a model-index is well formed."""
        from huggingface_hub.repocard_data import model_index_to_eval_results

        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", payload.get("content", ""), re.DOTALL)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
            if metadata and "model-index" in metadata:
                model_index_to_eval_results(metadata["model-index"])
        except Exception as error:  # noqa: BLE001 - any parse error is a validation error
            return JSONResponse({"errors": [{"message": str(error)}], "warnings": []}, status_code=400)
        return JSONResponse({"errors": [], "warnings": []})

    def _info(self, repo_type: str, repo_id: str, revision: str, authorized: bool) -> Response:
        repo = self._repo(repo_type, repo_id, authorized)
        commit = self._commit(repo_type, repo_id, revision, authorized)
        siblings = []
        for entry in commit.files.values():
            sibling = {"rfilename": entry.path, "size": entry.size, "blobId": entry.git_oid}
            if entry.lfs:
                sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256,
                                  "pointerSize": len(_lfs_pointer(entry.sha256, entry.size))}
            siblings.append(sibling)
        card_data = None
        if "README.md" in commit.files:
            text = (self.blob_dir / commit.files["README.md"].sha256).read_text(encoding="utf-8")
            match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.DOTALL)
            card_data = yaml.safe_load(match.group(1)) if match else None
        info = {"_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id,
                "author": repo_id.split("/")[0], "sha": commit.oid, "lastModified": commit.date,
                "createdAt": repo.created_at, "private": repo.private, "gated": False, "disabled": False,
                "downloads": 0, "likes": 0, "tags": [], "siblings": siblings, "cardData": card_data}
        if repo_type == "model":
            info["library_name"] = (card_data or {}).get("library_name")
            info["pipeline_tag"] = (card_data or {}).get("pipeline_tag")
            if "config.json" in commit.files:
                try:
                    info["config"] = json.loads((self.blob_dir / commit.files["config.json"].sha256).read_bytes())
                except ValueError:
                    pass
        return JSONResponse(info)

    @staticmethod
    def _folders(files: dict[str, _Entry]) -> set[str]:
        return {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}

    def _tree(self, repo_type, repo_id, revision, path, recursive, authorized) -> Response:
        commit = self._commit(repo_type, repo_id, revision, authorized)
        folders = self._folders(commit.files)
        path = path.strip("/")
        if path and path not in folders:
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound",
                           {"X-Repo-Commit": commit.oid})
        prefix = f"{path}/" if path else ""
        items = []
        for name in sorted(folders | set(commit.files)):
            if not name.startswith(prefix) or (not recursive and "/" in name[len(prefix):]):
                continue
            if name in folders:
                items.append({"type": "directory", "oid": hashlib.sha1(name.encode()).hexdigest(), "size": 0,
                              "path": name})
            else:
                items.append(commit.files[name].to_json())
        return JSONResponse(items)

    def _paths_info(self, repo_type, repo_id, revision, paths, authorized) -> Response:
        commit = self._commit(repo_type, repo_id, revision, authorized)
        folders = self._folders(commit.files)
        items = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                items.append(commit.files[path].to_json())
            elif path in folders:
                items.append({"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0,
                              "path": path})
        return JSONResponse(items)

    def _preupload(self, repo_type, repo_id, revision, payload, authorized) -> Response:
        self._take_fault("preupload")
        commit = self._commit(repo_type, repo_id, revision, authorized)
        files = []
        for item in payload.get("files", []):
            sample = base64.b64decode(item.get("sample", ""))
            lfs = (item["size"] >= _REGULAR_MAX_SIZE or b"\0" in sample
                   or any(fnmatch(item["path"].split("/")[-1], p) for p in _LFS_PATTERNS))
            existing = commit.files.get(item["path"])
            oid = None if existing is None else (existing.sha256 if existing.lfs else existing.git_oid)
            files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                          "shouldIgnore": False, "oid": oid})
        return JSONResponse({"files": files, "commitOid": commit.oid})

    def _lfs_batch(self, repo_type, repo_id, payload, authorized) -> Response:
        self._take_fault("lfs_batch")
        self._repo(repo_type, repo_id, authorized)
        if payload.get("operation") != "upload":
            raise HubError(400, "Only the upload operation is supported")
        objects = []
        for obj in payload.get("objects", []):
            item = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not (self.blob_dir / obj["oid"]).exists():
                item["actions"] = {"upload": {"href": f"{self.endpoint}/__lfs/{obj['oid']}", "header": {}}}
            objects.append(item)
        return JSONResponse({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                            media_type="application/vnd.git-lfs+json")

    def _lfs_put(self, oid: str, data: bytes) -> Response:
        self._take_fault("lfs_upload")
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match oid {oid}")
        self._store_blob(data)
        return Response(status_code=200)

    def _commit_api(self, repo_type, repo_id, revision, body: bytes, authorized) -> Response:
        self._take_fault("commit")
        if not authorized:
            raise HubError(401, "You must be authenticated to commit", "RepoNotFound")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            if revision not in repo.branches:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            head = repo.commits[repo.branches[revision]]
            files = dict(head.files)
            header = {}
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header":
                    header = value
                    parent = value.get("parentCommit")
                    if parent is not None and parent != head.oid:
                        raise HubError(412, "A commit has happened since. Please refresh and try again.")
                elif key == "file":
                    data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" \
                        else value["content"].encode()
                    files[value["path"]] = self._entry_for(value["path"], data, lfs=False)
                elif key == "lfsFile":
                    blob = self.blob_dir / value["oid"]
                    if not blob.exists():
                        raise HubError(422, f"LFS object {value['oid']} for {value['path']} was not uploaded")
                    size = blob.stat().st_size
                    files[value["path"]] = _Entry(value["path"], value["oid"], size, True,
                                                  _git_oid(_lfs_pointer(value["oid"], size)))
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    for path in [p for p in files if p.startswith(prefix)]:
                        del files[path]
                else:
                    raise HubError(400, f"Unknown commit operation {key!r}")
            commit = self._new_commit(repo, revision, head.oid, header.get("summary", ""),
                                      header.get("description", ""), files)
        url = f"{self.endpoint}/{REPO_PREFIXES[repo_type]}{repo_id}/commit/{commit.oid}"
        return JSONResponse({"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None})

    def _resolve(self, request: Request, repo_type, repo_id, revision, path, authorized) -> Response:
        self._take_fault("resolve")
        commit = self._commit(repo_type, repo_id, revision, authorized)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{entry.etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        blob = self.blob_dir / entry.sha256
        if request.method == "HEAD":
            return Response(b"", headers={**headers, "Content-Length": str(entry.size)})
        data = blob.read_bytes()
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", request.headers.get("range", ""))
        if match and data:
            start, end = match.groups()
            first = int(start) if start else max(len(data) - int(end), 0)
            last = min(int(end), len(data) - 1) if start and end else len(data) - 1
            if first >= len(data):
                return Response(status_code=416, headers={"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            return Response(data[first:last + 1], status_code=206, headers=headers)
        return Response(data, headers=headers)


@contextmanager
def patch_hub_clients(endpoint: str, cache_dir: str | Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point huggingface_hub, transformers, timm and datasets at ``endpoint``; undone on exit.

    Patched: ``huggingface_hub.constants`` (ENDPOINT, the resolve URL template, HF_HUB_OFFLINE=False,
    HF_HUB_DISABLE_XET=True, telemetry off, HF_HUB_CACHE), the endpoint of the module-level ``HfApi`` behind
    ``huggingface_hub.create_repo``/``upload_folder``/... and of the module-level ``HfFileSystem``, and
    ``datasets.config`` (HF_ENDPOINT, HUB_DATASETS_URL, offline flags, cache). transformers and timm read
    these at call time. Environment variables (HF_ENDPOINT, HF_HUB_OFFLINE=0, HF_HUB_DISABLE_XET=1, HF_TOKEN)
    are set too, for subprocesses and for code that reads them per call.
    """
    import huggingface_hub
    from huggingface_hub import constants, hf_api, hf_file_system

    cache_dir = Path(cache_dir)
    for name, value in {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
                        "TRANSFORMERS_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                        "HF_TOKEN": TOKEN, "HF_HUB_CACHE": str(cache_dir / "hub"),
                        "HF_DATASETS_CACHE": str(cache_dir / "datasets")}.items():
        monkeypatch.setenv(name, value)
    for name, value in {"ENDPOINT": endpoint,
                        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
                        "HF_HUB_OFFLINE": False, "HF_HUB_DISABLE_XET": True, "HF_HUB_DISABLE_TELEMETRY": True,
                        "HF_HUB_CACHE": str(cache_dir / "hub")}.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    monkeypatch.setattr(hf_file_system.hffs, "endpoint", endpoint)
    try:
        import datasets.config as datasets_config
    except ImportError:
        datasets_config = None
    if datasets_config is not None:
        datasets_cache = cache_dir / "datasets"
        for name, value in {"HF_ENDPOINT": endpoint,
                            "HUB_DATASETS_URL": endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",
                            "HF_HUB_OFFLINE": False, "HF_DATASETS_OFFLINE": False,
                            "HF_DATASETS_CACHE": datasets_cache,
                            "DOWNLOADED_DATASETS_PATH": datasets_cache / "downloads",
                            "EXTRACTED_DATASETS_PATH": datasets_cache / "downloads" / "extracted"}.items():
            if hasattr(datasets_config, name):
                monkeypatch.setattr(datasets_config, name, value)
    huggingface_hub.HfFileSystem.clear_instance_cache()
    try:
        yield
    finally:
        huggingface_hub.HfFileSystem.clear_instance_cache()


@pytest.fixture(name="local_hub")
def local_hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """A running :class:`LocalHub` that all Hub clients talk to during the test (``local_hub.endpoint``)."""
    root = tmp_path_factory.mktemp("local_hub")
    hub = LocalHub(root / "storage")
    endpoint = hub.start()
    try:
        with patch_hub_clients(endpoint, root / "cache", monkeypatch):
            yield hub
    finally:
        hub.stop()
