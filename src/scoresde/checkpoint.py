"""Checkpoint IO without arbitrary pickles.

A checkpoint file is `torch.save({"state": state, "config_json": str, "sha256": str})` where
`state` holds only tensors, (nested) dicts/lists of them and plain scalars/strings. It is read
back with `torch.load(weights_only=True)`, which refuses any pickle that would import or call
code, and the sha256 over the tensors' bytes and the config is checked. Files are written
atomically (temporary file in the same directory, then `os.replace`).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch

FIX = "delete it and rerun the rule that wrote it (e.g. the train rule)"
_SCALARS = (bool, int, float, str, type(None))


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, tampered with or not a scoresde checkpoint."""


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds.

    Parent directories are created. The temporary name keeps `path`'s name as its suffix, so
    writers that infer a format from the extension still work. On any exception the temporary
    file is removed and `path` is left untouched; a failed write (a full disk, no permission, a
    directory in the way) is one ``OSError`` naming `path` and the cause, never the temporary name.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(path, err) from None
    tmp = path.with_name(f".tmp-{secrets.token_hex(6)}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        failed = isinstance(err, OSError) or (isinstance(err, RuntimeError) and "writ" in str(err).lower()
                                              and not isinstance(err, CheckpointError))
        error = write_error(path, err) if failed else None  # before the partial file frees its space
        with suppress(OSError):
            tmp.unlink()
        if error is not None:
            raise error from None
        raise


def write_error(path: Path, err: BaseException) -> OSError:
    """One-line ``OSError`` for a failed write of `path`: the path and the cause in words."""
    import errno
    import shutil

    code = getattr(err, "errno", None)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        full = shutil.disk_usage(parent).free == 0
    except OSError:
        full = False
    if code == errno.ENOSPC or full:
        cause = f"No space left on device (the disk holding {parent}); free space or write elsewhere"
    elif code in (errno.EACCES, errno.EPERM):
        cause = f"no write permission in {parent}; write elsewhere or fix the permissions"
    elif code == errno.EROFS:
        cause = f"{parent} is on a read-only file system; write elsewhere"
    elif path.is_dir():
        cause = "it is an existing directory; give a file path"
    elif not parent.is_dir():
        cause = f"{parent} is a file, not a directory; give a path in a directory"
    elif getattr(err, "strerror", None):
        cause = f"{err.strerror.lower()}; write elsewhere"
    else:
        cause = (f"the write failed part-way ({' '.join(str(err).split()[-3:])}); check the free space "
                 f"of the disk holding {parent}")
    return OSError(f"cannot write {path}: {cause}")


def _to_cpu(obj: Any, where: str = "state") -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {str(k): _to_cpu(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_cpu(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, _SCALARS):
        return obj
    raise TypeError(f"checkpoint {where} is a {type(obj).__name__}; only tensors, dicts, lists "
                    "and bool/int/float/str/None can be saved")


def _digest(state: Any, config_json: str) -> str:
    """sha256 over the config and, in key order, every entry's path, dtype, shape and bytes."""
    h = hashlib.sha256(config_json.encode())

    def walk(obj: Any, where: str) -> None:
        h.update(where.encode())
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            for k in sorted(obj):
                walk(obj[k], f"{where}/{k}")
        elif isinstance(obj, list | tuple):
            for i, v in enumerate(obj):
                walk(v, f"{where}/{i}")
        else:
            h.update(repr(obj).encode())

    walk(state, "")
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, state: dict, config: dict) -> None:
    """Atomically write `state` (tensors, moved to CPU) and the JSON-serialisable `config`."""
    state = _to_cpu(state)
    config_json = json.dumps(config, sort_keys=True)
    blob = {"state": state, "config_json": config_json, "sha256": _digest(state, config_json)}
    with atomic_write(path) as tmp:
        torch.save(blob, tmp)


def load_checkpoint(path: str | os.PathLike,
                    map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Return (state, config) from a file written by `save_checkpoint`.

    Raises CheckpointError naming the file and the fix when it is missing, truncated, corrupt,
    contains code (refused by `weights_only=True`) or fails the sha256 check.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; run the train rule that "
                              "produces it, or fix the path")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # every failure mode gets the same advice
        code = [ln.strip() for ln in str(err).splitlines() if "GLOBAL" in ln]
        kind = (f"refers to code that weights_only loading refuses ({code[0]}); it was tampered "
                "with or is not a scoresde checkpoint" if code
                else f"is truncated or corrupt ({type(err).__name__})")
        raise CheckpointError(f"checkpoint {path} {kind}; {FIX}") from err
    if not isinstance(blob, dict) or set(blob) != {"state", "config_json", "sha256"}:
        raise CheckpointError(f"checkpoint {path} is not a scoresde checkpoint (expected keys "
                              f"state, config_json, sha256); {FIX}")
    if _digest(blob["state"], blob["config_json"]) != blob["sha256"]:
        raise CheckpointError(f"checkpoint {path} fails its sha256 check (modified or "
                              f"corrupted); {FIX}")
    try:
        config = json.loads(blob["config_json"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} has an unreadable config; {FIX}") from err
    return blob["state"], config
