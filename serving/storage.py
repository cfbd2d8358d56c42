"""Where a model file comes from: a local or mounted path (a PVC, or what the s3 init
container fetched), or http(s) with a sha256 checksum, downloaded once into a cache keyed by
that checksum so a changed file is never served.

s3:// is not read here: the operator adds an init container (aws-cli) that copies the object
into an emptyDir and passes the local path, so serving pods need no cloud SDK and credentials
stay with the pod's identity.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

import httpx


class StorageError(Exception):
    """The model file cannot be had; the message says why."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _verify(path: Path, checksum: str | None) -> Path:
    if checksum is not None and path.is_dir():
        raise StorageError(f"{path} is a directory (a SavedModel?): a checksum is for one file; serve it without one")
    if checksum is not None and (actual := sha256(path)) != checksum:
        raise StorageError(f"{path} has checksum {actual}, expected {checksum}: refusing to serve a changed file")
    return path


async def fetch(uri: str, checksum: str | None, cache_dir: Path, *, timeout: float = 300.0) -> Path:
    """A local path holding the model ``uri`` names."""
    if uri.startswith("s3://"):
        raise StorageError("s3:// models are copied by the pod's init container; pass the local path it wrote")
    if uri.startswith("pvc://"):
        raise StorageError("pvc:// models are mounted by the pod spec; pass the mounted path")
    if not uri.startswith(("http://", "https://")):
        path = Path(uri.removeprefix("file://"))
        if not path.exists():
            raise StorageError(f"model file {path} does not exist")
        if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
            # ONNX Runtime says only "system error number 13".
            mode = path.stat()
            raise StorageError(
                f"model file {path} ({stat.filemode(mode.st_mode)}, owner {mode.st_uid}:{mode.st_gid}) is not readable "
                f"by this process (user {os.getuid()}, groups {sorted({os.getgid(), *os.getgroups()})}): "
                "make it readable by the pod's user or its fsGroup"
            )
        return _verify(path, checksum)
    if checksum is None:
        raise StorageError("an http(s) model needs a checksum (sha256:<hex>)")
    target = cache_dir / checksum.removeprefix("sha256:") / (uri.rsplit("/", 1)[-1].split("?")[0] or "model")
    if target.exists():
        return _verify(target, checksum)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, partial = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
    try:
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client,
            client.stream("GET", uri) as response,
        ):
            if response.status_code != 200:
                raise StorageError(f"GET {uri} answered {response.status_code}")
            with os.fdopen(descriptor, "wb") as file:
                async for chunk in response.aiter_bytes(1 << 20):
                    file.write(chunk)
        _verify(Path(partial), checksum)
        os.replace(partial, target)
    except httpx.HTTPError as error:
        raise StorageError(f"GET {uri} failed: {error}") from error
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target
