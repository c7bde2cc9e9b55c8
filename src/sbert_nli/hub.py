"""Hugging Face hub access with a fast, clear failure when the hub cannot be reached.

``datasets`` retries an unreachable hub for ~25 s before failing; we probe the endpoint once with a
short timeout so an offline user learns within seconds how to pass local files instead.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from sbert_nli.errors import SbertNliError

_reachable: bool | None = None


def offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when a TCP connection to the hub endpoint opens within ``timeout`` seconds (cached)."""
    global _reachable
    if _reachable is None:
        endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
        port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
        try:
            with socket.create_connection((endpoint.hostname, port), timeout=timeout):
                _reachable = True
        except OSError:
            _reachable = False
    return _reachable


def require_hub(what: str, local_hint: str) -> None:
    """Raise a one-line error when ``what`` would need the hub and the hub is not there.

    With ``HF_HUB_OFFLINE=1`` we do not probe: the libraries then read their local cache only.
    """
    if offline_mode():
        return
    if not hub_reachable():
        raise SbertNliError(
            f"cannot reach the Hugging Face hub to load {what} (offline?); {local_hint}, "
            "or set HF_HUB_OFFLINE=1 to use a copy already in the local cache"
        )
