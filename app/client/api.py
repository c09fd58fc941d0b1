"""A small client of /api/v1: stored credentials, JSON requests, the SSE event stream.

Credentials live in ``$XDG_CONFIG_HOME/keystone/credentials.json`` (default
``~/.config/keystone``), mode 0600 in a 0700 directory. ``KEYSTONE_URL`` and
``KEYSTONE_TOKEN`` in the environment take precedence (CI sets them from secrets).
The token is sent only in the Authorization header and never printed.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

TIMEOUT = 30
STREAM_TIMEOUT = 90  # the server sends a keepalive comment every 10 s


class ClientError(Exception):
    """A message for the terminal (and, from an API error, its code)."""

    def __init__(self, message: str, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.code, self.status = code, status


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "keystone"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def save_credentials(url: str, token: str) -> Path:
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = credentials_path()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": url, "token": token}, fh)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def normalise_url(url: str) -> str:
    url = (url or "").strip().rstrip("/")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ClientError(f"{url!r} is not an http(s) URL, e.g. https://keystone.example.com")
    return url


@dataclass
class Client:
    url: str
    token: str

    @classmethod
    def from_config(cls) -> "Client":
        url, token = os.environ.get("KEYSTONE_URL"), os.environ.get("KEYSTONE_TOKEN")
        if not (url and token):
            try:
                stored = json.loads(credentials_path().read_text())
            except (OSError, ValueError):
                stored = {}
            url, token = url or stored.get("url"), token or stored.get("token")
        if not (url and token):
            raise ClientError("Not logged in: run `keystone login URL` (or set KEYSTONE_URL "
                              "and KEYSTONE_TOKEN).")
        return cls(normalise_url(url), token)

    def _request(self, method: str, path: str, body: dict | None = None,
                 headers: dict | None = None, timeout: float = TIMEOUT):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json",
            "User-Agent": "keystone-cli", **({"Content-Type": "application/json"}
                                             if data is not None else {}), **(headers or {})})
        try:
            return urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read().decode() or "{}").get("error") or {}
            except ValueError:
                error = {}
            message = error.get("message") or f"HTTP {exc.code}"
            problems = (error.get("details") or {}).get("problems") or []
            if problems and not all(p in message for p in problems):
                message += "".join(f"\n  - {p}" for p in problems)
            raise ClientError(message, error.get("code"), exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ClientError(f"Cannot reach {self.url}: {getattr(exc, 'reason', exc)}") from None

    def get(self, path: str, **query) -> dict:
        if query:
            path += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        with self._request("GET", path) as resp:
            return json.loads(resp.read().decode())

    def post(self, path: str, body: dict | None = None) -> dict:
        with self._request("POST", path, body if body is not None else {}) as resp:
            return json.loads(resp.read().decode())

    def all_pages(self, path: str, **query) -> list[dict]:
        items, page = [], 1
        while True:
            body = self.get(path, page=page, per_page=100, **query)
            items += body["items"]
            if not body["has_more"]:
                return items
            page += 1

    def environment(self, target: str) -> dict:
        """The environment named ``APP/ENV``."""
        app_name, sep, env_name = (target or "").partition("/")
        if not sep or not app_name or not env_name:
            raise ClientError(f"{target!r}: name the environment as APP/ENV, e.g. shop/production")
        found = self.get("/api/v1/environments", application=app_name, name=env_name)["items"]
        if not found:
            raise ClientError(f"No environment {env_name!r} in an application {app_name!r}.")
        return found[0]

    def events(self, operation_id: int, last_event_id: str | None = None) -> Iterator[tuple]:
        """(event, data, id) of the operation's SSE stream, reconnecting with Last-Event-ID
        when a response ends before the end event."""
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id:
                headers["Last-Event-ID"] = last_event_id
            ended = False
            with self._request("GET", f"/api/v1/operations/{int(operation_id)}/events",
                               headers=headers, timeout=STREAM_TIMEOUT) as resp:
                for event, data, event_id in parse_sse(resp):
                    if event_id:
                        last_event_id = event_id
                    yield event, data, event_id
                    if event == "end":
                        ended = True
                        break
            if ended:
                return


    def stream(self, path: str, **query) -> Iterator[tuple]:
        """(event, data, id) of one SSE response, its comments as (":", text, None): a
        client that stops when the stream goes quiet sees the keepalives."""
        if query:
            path += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        with self._request("GET", path, headers={"Accept": "text/event-stream"},
                           timeout=STREAM_TIMEOUT) as resp:
            yield from parse_sse(resp, comments=True)


def parse_sse(lines, comments: bool = False) -> Iterator[tuple[str, str, str | None]]:
    """Events of a text/event-stream (an iterable of byte lines); with ``comments``, each
    comment line too, as (":", text, None)."""
    event, data, event_id = "message", [], None
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data), event_id
            event, data = "message", []
            continue
        if line.startswith(":"):
            if comments:
                yield ":", line[1:].strip(), None
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
    if data:
        yield event, "\n".join(data), event_id
