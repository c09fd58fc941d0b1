"""Hetzner Cloud, through the official ``hcloud`` library.

Why the official library and not raw HTTP: it tracks API changes, polls
actions and already retries transient failures. Two things are ours:

* **Errors become sentences.** ``hcloud.APIException`` carries Hetzner's error
  code; :func:`translate` maps the codes a user can hit (bad token, read-only
  token, quota, rate limit, unavailable server type) to a message that says
  what happened and what to do, with a stable ``ProviderError.code``.
* **Bounded waiting.** The library retries ``rate_limit_exceeded`` up to five
  times with a backoff capped at 60 s, which would leave a web form hanging
  for minutes. Keystone allows ``retries`` (default 1) and then tells the user.

The endpoint comes from the app's configuration (``HETZNER_API_ENDPOINT``), never
from a form, so a user cannot point Keystone's token at another host. Tests
point it at :mod:`app.providers.hetzner_fake`.
"""
from __future__ import annotations

import time

import requests
from hcloud import APIException, Client
from hcloud.actions import ActionFailedException, ActionTimeoutException
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.networks import Network
from hcloud.server_types import ServerType
from hcloud.servers import Server as HServer
from hcloud.ssh_keys import SSHKey

from app.providers.base import Choice, CloudProvider, CreatedServer, ProviderError

DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1"
CONSOLE = "the Hetzner Cloud Console (your project → Security → API tokens)"


def translate(exc: Exception, doing: str) -> ProviderError:
    """A user-facing ProviderError for an exception raised while ``doing`` something."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, APIException):
        code = exc.code
        said = (exc.message or "").strip()
        if code in ("unauthorized", 401):
            return ProviderError(
                f"Hetzner Cloud refused the API token while {doing} (unauthorized): the token "
                f"is wrong, was deleted, or belongs to no project. Create a Read & Write token "
                f"in {CONSOLE} and paste it again.", "invalid_token")
        if code in ("forbidden", 403) and "limit" not in said.lower():
            return ProviderError(
                f"Hetzner Cloud did not allow {doing} (forbidden): the token is probably "
                f"read-only. Keystone needs a Read & Write token from {CONSOLE}.", "invalid_token")
        if code == "resource_limit_exceeded":
            return ProviderError(
                f"Hetzner Cloud refused {doing}: your project's resource limit is reached "
                f"({said or 'quota exceeded'}). Delete servers you no longer need, or ask "
                f"Hetzner to raise the limit (Console → Limits), then try again.", "quota_exceeded")
        if code in ("rate_limit_exceeded", 429):
            return ProviderError(
                f"Hetzner Cloud's API rate limit is reached ({said or 'too many requests'}); "
                f"nothing was changed while {doing}. Wait a few minutes and try again.",
                "rate_limited")
        if code == "uniqueness_error":
            return ProviderError(
                f"Hetzner Cloud refused {doing}: the name is already used in this project "
                f"({said}). Pick another name.", "invalid_input")
        if code in ("resource_unavailable", "placement_error", "server_type_unavailable"):
            return ProviderError(
                f"Hetzner Cloud cannot fulfil {doing} right now ({said}). The server type is "
                f"probably sold out in that location: pick another location or type.", "unavailable")
        if code == "invalid_input":
            fields = []
            details = exc.details or {}
            for f in details.get("fields", []) if isinstance(details, dict) else []:
                msgs = "; ".join(f.get("messages", []))
                fields.append(f"{f.get('name')}: {msgs}" if msgs else str(f.get("name")))
            extra = (" — " + ", ".join(fields)) if fields else ""
            return ProviderError(f"Hetzner Cloud rejected the input while {doing}: {said}{extra}.",
                                 "invalid_input")
        if code == "not_found":
            return ProviderError(f"Hetzner Cloud does not know that object ({said}) while {doing}.",
                                 "not_found")
        if code in ("server_error", "maintenance", "timeout", "bad_gateway", 502, 503, 504):
            return ProviderError(
                f"Hetzner Cloud is unavailable ({said or code}) while {doing}. Try again in a "
                f"few minutes.", "unavailable")
        return ProviderError(f"Hetzner Cloud answered an error while {doing}: {said or code} "
                             f"({code}).", "api_error")
    if isinstance(exc, ActionFailedException):
        err = getattr(exc.action, "error", None) or {}
        return ProviderError(f"Hetzner Cloud could not finish {doing}: "
                             f"{err.get('message') or 'the action failed'}.", "api_error")
    if isinstance(exc, ActionTimeoutException):
        return ProviderError(f"Hetzner Cloud did not finish {doing} in time.", "timeout")
    if isinstance(exc, requests.exceptions.Timeout):
        return ProviderError(f"The Hetzner Cloud API did not answer in time while {doing}. "
                             f"Try again in a minute.", "unavailable")
    if isinstance(exc, requests.exceptions.RequestException):
        return ProviderError(f"Could not reach the Hetzner Cloud API while {doing}: the "
                             f"network or Hetzner is down. Try again in a minute.", "unavailable")
    return ProviderError(f"Unexpected error while {doing}: {type(exc).__name__}.", "api_error")


def _gb(value) -> str:
    return f"{value:g} GB" if isinstance(value, (int, float)) else str(value)


class HetznerProvider(CloudProvider):
    def __init__(self, token: str, *, endpoint: str | None = None, retries: int = 1,
                 poll_interval: float = 1.0, request_timeout: float = 20.0):
        if not token:
            raise ProviderError("Enter a Hetzner Cloud API token.", "invalid_token")
        self.client = Client(token=token, api_endpoint=endpoint or DEFAULT_ENDPOINT,
                             application_name="keystone", poll_interval=poll_interval,
                             timeout=request_timeout)
        # See the module docstring: bound the library's own retry loop.
        inner = getattr(self.client, "_client", None)
        if inner is not None and hasattr(inner, "_retry_max_retries"):
            inner._retry_max_retries = max(0, int(retries))
        self.poll_interval = poll_interval

    def _call(self, doing: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # every exception type is translated, none leaks the token
            raise translate(exc, doing) from None

    # -- catalogue ------------------------------------------------------

    def verify(self) -> None:
        # Listing locations is cheap, needs a valid token and changes nothing.
        self._call("checking the API token", self.client.locations.get_list, per_page=1)

    def server_types(self) -> list[Choice]:
        items = self._call("listing server types", self.client.server_types.get_all)
        out = []
        for t in items:
            if getattr(t, "deprecated", False) or getattr(t, "deprecation", None):
                continue
            out.append(Choice(t.name, t.name.upper(),
                              f"{t.cores:g} vCPU, {_gb(t.memory)} RAM, {_gb(t.disk)} disk"
                              + (f", {t.architecture}" if getattr(t, "architecture", None) else "")))
        return sorted(out, key=lambda c: c.name)

    def images(self) -> list[Choice]:
        items = self._call("listing images", self.client.images.get_all, type="system")
        out = [Choice(i.name, i.description or i.name, getattr(i, "architecture", "") or "")
               for i in items if i.name and getattr(i, "status", "available") == "available"]
        return sorted(out, key=lambda c: c.name)

    def locations(self) -> list[Choice]:
        items = self._call("listing locations", self.client.locations.get_all)
        return [Choice(loc.name, f"{loc.city} ({loc.name})", loc.country or "") for loc in items]

    def networks(self) -> list[Choice]:
        items = self._call("listing networks", self.client.networks.get_all)
        return [Choice(str(n.id), n.name, n.ip_range or "") for n in items]

    # -- keys -----------------------------------------------------------

    def ensure_ssh_key(self, public_key: str, name: str) -> str:
        wanted = " ".join(public_key.split()[:2])
        keys = self._call("listing SSH keys", self.client.ssh_keys.get_all)
        for key in keys:
            if " ".join((key.public_key or "").split()[:2]) == wanted:
                return str(key.id)
        taken = {k.name for k in keys}
        candidate, n = name, 2
        while candidate in taken:
            candidate, n = f"{name}-{n}", n + 1
        created = self._call("uploading Keystone's management SSH key",
                             self.client.ssh_keys.create, name=candidate, public_key=public_key,
                             labels={"managed-by": "keystone"})
        return str(created.id)

    # -- servers --------------------------------------------------------

    @staticmethod
    def _describe(s) -> CreatedServer:
        public_ip = None
        pn = getattr(s, "public_net", None)
        if pn is not None and getattr(pn, "ipv4", None) is not None:
            public_ip = pn.ipv4.ip
        private_ip = None
        for p in getattr(s, "private_net", None) or []:
            if getattr(p, "ip", None):
                private_ip = p.ip
                break
        return CreatedServer(provider_server_id=str(s.id), name=s.name, status=s.status,
                             public_ip=public_ip, private_ip=private_ip)

    def create_server(self, *, name, server_type, image, location, ssh_key_id,
                      network_id=None, labels=None) -> CreatedServer:
        doing = f"creating server {name!r}"
        kwargs = dict(name=name, server_type=ServerType(name=server_type), image=Image(name=image),
                      location=Location(name=location), ssh_keys=[SSHKey(id=int(ssh_key_id))],
                      labels={"managed-by": "keystone", **(labels or {})},
                      start_after_create=True)
        if network_id:
            kwargs["networks"] = [Network(id=int(network_id))]
        response = self._call(doing, self.client.servers.create, **kwargs)
        return self._describe(response.server)

    def get_server(self, provider_server_id: str) -> CreatedServer | None:
        try:
            s = self.client.servers.get_by_id(int(provider_server_id))
        except APIException as exc:
            if exc.code == "not_found":
                return None
            raise translate(exc, "reading the server") from None
        except Exception as exc:
            raise translate(exc, "reading the server") from None
        return self._describe(s)

    def wait_until_running(self, provider_server_id: str, timeout: float = 300) -> CreatedServer:
        deadline = time.monotonic() + timeout
        while True:
            current = self.get_server(provider_server_id)
            if current is None:
                raise ProviderError(f"Hetzner server {provider_server_id} disappeared while "
                                    f"Keystone waited for it to start.", "not_found")
            if current.status == "running" and current.public_ip:
                return current
            if time.monotonic() >= deadline:
                raise ProviderError(f"Hetzner server {current.name} was still {current.status!r} "
                                    f"after {timeout:g}s.", "timeout")
            time.sleep(self.poll_interval)

    def delete_server(self, provider_server_id: str) -> None:
        try:
            action = self.client.servers.delete(HServer(id=int(provider_server_id)))
            action.wait_until_finished()
        except APIException as exc:
            if exc.code == "not_found":
                return  # already gone: deleting is idempotent
            raise translate(exc, "deleting the server") from None
        except Exception as exc:
            raise translate(exc, "deleting the server") from None
