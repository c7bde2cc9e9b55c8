"""A cache of tokenised training examples, so a second run on the same data starts in seconds.

The key covers everything the examples depend on: the content of every data file (sha256), hub
source names, the column mapping, the tokenizer (its full JSON), max_seq_length, the loss (pairs or
triplets), the held-out split and the seed. Files are written to a temporary name and renamed, so
concurrent runs (DDP ranks) and crashes never leave a torn cache entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import numpy as np

from sbert_nli.data.batching import TokenStore
from sbert_nli.data.examples import Examples

VERSION = "sbert-nli-examples-1"


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(sources: list[str], parts: dict) -> str:
    """Sources are hashed by content when they are files, by name otherwise (hub, built-in)."""
    described = [{"file": file_digest(s)} if Path(s).is_file() else {"name": s} for s in sources]
    text = json.dumps({"version": VERSION, "sources": described, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def save(folder: str | Path, key: str, examples: Examples, meta: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"ids": examples.store.ids, "offsets": examples.store.offsets,
              "scalars": np.array([examples.store.pad_id, examples.store.truncated], dtype=np.int64)}
    arrays.update({f"role_{name}": values for name, values in examples.roles.items()})
    if examples.labels is not None:
        arrays["labels"] = examples.labels
    meta = {**meta, "kind": examples.kind, "note": examples.note, "roles": list(examples.roles)}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    target = folder / f"{key}.npz"
    tmp = folder / f".tmp-{key}-{uuid.uuid4().hex[:8]}.npz"
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(tmp, target)
    return target


def load(folder: str | Path, key: str) -> tuple[Examples, dict] | None:
    path = Path(folder) / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:  # never unpickle: plain arrays only
            meta = json.loads(data["meta"].tobytes().decode("utf-8"))
            pad_id, truncated = (int(v) for v in data["scalars"])
            store = TokenStore(data["ids"], data["offsets"], pad_id, truncated)
            roles = {name: data[f"role_{name}"] for name in meta["roles"]}
            labels = data["labels"] if "labels" in data else None
    except (OSError, ValueError, KeyError):
        return None  # a damaged entry is rebuilt, not trusted
    return Examples(meta["kind"], store, roles, labels, meta["note"]), meta
