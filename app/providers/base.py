"""The provider contract: what Keystone asks of a place that creates servers.

A provider turns "I want a server of this size, here" into a machine with a
public (and optionally private) address that accepts the organisation's
management key for root. Hetzner Cloud is the first; a custom server is the
degenerate case where the user already has the machine (see ``custom.py``).

Every failure is a :class:`ProviderError` whose message is written for the
person looking at the form (what went wrong, what to do), never a stack trace
and never the API token.
"""
from __future__ import annotations

from dataclasses import dataclass, field


class ProviderError(Exception):
    """A provider call failed; ``str(exc)`` is shown to the user as is.

    ``code`` is a stable machine-readable reason: ``invalid_token``,
    ``quota_exceeded``, ``rate_limited``, ``not_found``, ``invalid_input``,
    ``unavailable``, ``timeout`` or ``api_error``.
    """

    def __init__(self, message: str, code: str = "api_error"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Choice:
    """One option of a server form (server type, image, location, network)."""

    name: str          # what the API takes ("cx22", "debian-12", "fsn1", or an id for networks)
    label: str         # what the user reads
    detail: str = ""   # e.g. "2 vCPU, 4 GB RAM, 40 GB disk"


@dataclass
class CreatedServer:
    """A server as the provider reports it."""

    provider_server_id: str
    name: str
    status: str
    public_ip: str | None = None
    private_ip: str | None = None
    extra: dict = field(default_factory=dict)


class CloudProvider:
    """What a cloud provider implementation offers. All calls may raise ProviderError."""

    def verify(self) -> None:
        """Check the credentials with one cheap authenticated call."""
        raise NotImplementedError

    def server_types(self) -> list[Choice]:
        raise NotImplementedError

    def images(self) -> list[Choice]:
        raise NotImplementedError

    def locations(self) -> list[Choice]:
        raise NotImplementedError

    def networks(self) -> list[Choice]:
        raise NotImplementedError

    def ensure_ssh_key(self, public_key: str, name: str) -> str:
        """Upload the public key once (reuse it when already there); return its provider id."""
        raise NotImplementedError

    def create_server(self, *, name: str, server_type: str, image: str, location: str,
                      ssh_key_id: str, network_id: str | None = None,
                      labels: dict[str, str] | None = None) -> CreatedServer:
        raise NotImplementedError

    def wait_until_running(self, provider_server_id: str, timeout: float = 300) -> CreatedServer:
        raise NotImplementedError

    def get_server(self, provider_server_id: str) -> CreatedServer | None:
        raise NotImplementedError

    def delete_server(self, provider_server_id: str) -> None:
        raise NotImplementedError
