"""The only network calls of ``srx evaluate`` (dataset downloads): bytes in, bytes out, no file I/O."""

from __future__ import annotations

import json
import os
import urllib.request

TIMEOUT_S = 60


def _request(url: str) -> urllib.request.Request:
    headers = {"User-Agent": "srx"}
    token = os.environ.get("GITHUB_TOKEN")
    if token and url.startswith("https://api.github.com/"):
        headers["Authorization"] = f"Bearer {token}"  # raises the API's rate limit; never printed
    return urllib.request.Request(url, headers=headers)


def fetch_bytes(url: str) -> bytes:
    with urllib.request.urlopen(_request(url), timeout=TIMEOUT_S) as resp:
        return resp.read()


def fetch_json(url: str) -> dict:
    return json.loads(fetch_bytes(url))
