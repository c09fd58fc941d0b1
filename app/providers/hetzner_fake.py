"""A small local HTTP server speaking the part of the Hetzner Cloud API Keystone uses.

Why: Hetzner Cloud is an external, paid service; tests (and a demo without an
account) need its behaviour, including its error answers, without it. The
shapes follow https://docs.hetzner.cloud (``{"error": {"code", "message",
"details"}}`` errors, ``meta.pagination`` lists, actions that run then
succeed), so the official ``hcloud`` library talks to it unchanged:

    fake = FakeHetzner(tokens={"good-token"}).start()
    client = hcloud.Client("good-token", api_endpoint=fake.endpoint)

Error answers on demand:

* a token not in ``tokens`` → 401 ``unauthorized``
* ``fake.rate_limited = True`` → every request 429 ``rate_limit_exceeded``
* ``fake.server_limit = N`` → creating server N+1 → 403 ``resource_limit_exceeded``
* ``fake.read_only_tokens`` → writes answer 403 ``forbidden``

A created server is ``initializing`` and becomes ``running`` after
``boot_polls`` reads; its public IP comes from ``public_ips`` (a test can
hand out the address of a real sandbox server) or 203.0.113.0/24.
"""
from __future__ import annotations

import hashlib
import base64
import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

NOW = "2025-01-01T00:00:00+00:00"

SERVER_TYPES = [
    {"id": 104, "name": "cx22", "description": "CX22", "cores": 2, "memory": 4.0, "disk": 40,
     "storage_type": "local", "cpu_type": "shared", "architecture": "x86", "deprecated": False,
     "deprecation": None, "prices": []},
    {"id": 105, "name": "cx32", "description": "CX32", "cores": 4, "memory": 8.0, "disk": 80,
     "storage_type": "local", "cpu_type": "shared", "architecture": "x86", "deprecated": False,
     "deprecation": None, "prices": []},
    {"id": 45, "name": "cax11", "description": "CAX11", "cores": 2, "memory": 4.0, "disk": 40,
     "storage_type": "local", "cpu_type": "shared", "architecture": "arm", "deprecated": False,
     "deprecation": None, "prices": []},
]
IMAGES = [
    {"id": 114690387, "type": "system", "status": "available", "name": "debian-12",
     "description": "Debian 12", "os_flavor": "debian", "os_version": "12", "architecture": "x86",
     "rapid_deploy": True, "deprecated": None, "labels": {}, "created": NOW},
    {"id": 161547269, "type": "system", "status": "available", "name": "ubuntu-24.04",
     "description": "Ubuntu 24.04", "os_flavor": "ubuntu", "os_version": "24.04",
     "architecture": "x86", "rapid_deploy": True, "deprecated": None, "labels": {}, "created": NOW},
]
LOCATIONS = [
    {"id": 1, "name": "fsn1", "description": "Falkenstein DC Park 1", "country": "DE",
     "city": "Falkenstein", "latitude": 50.47612, "longitude": 12.370071,
     "network_zone": "eu-central"},
    {"id": 2, "name": "nbg1", "description": "Nuremberg DC Park 1", "country": "DE",
     "city": "Nuremberg", "latitude": 49.452102, "longitude": 11.076665,
     "network_zone": "eu-central"},
    {"id": 3, "name": "hel1", "description": "Helsinki DC Park 1", "country": "FI",
     "city": "Helsinki", "latitude": 60.169855, "longitude": 24.938379,
     "network_zone": "eu-central"},
]


def md5_fingerprint(public_key: str) -> str:
    blob = base64.b64decode(public_key.split()[1])
    digest = hashlib.md5(blob).hexdigest()  # noqa: S324 - Hetzner's fingerprint format
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


class FakeHetzner:
    def __init__(self, tokens=("test-token",), *, boot_polls: int = 1,
                 public_ips: list[str] | None = None, server_limit: int | None = None):
        self.tokens = set(tokens)
        self.read_only_tokens: set[str] = set()
        self.rate_limited = False
        self.server_limit = server_limit
        self.boot_polls = boot_polls
        self.public_ips = list(public_ips or [])
        self.requests: list[tuple[str, str]] = []
        self.servers: dict[int, dict] = {}
        self.ssh_keys: dict[int, dict] = {}
        self.actions: dict[int, dict] = {}
        self.networks: dict[int, dict] = {
            7001: {"id": 7001, "name": "keystone-private", "ip_range": "10.0.0.0/16",
                   "subnets": [{"type": "cloud", "ip_range": "10.0.1.0/24",
                                "network_zone": "eu-central", "gateway": "10.0.0.1"}],
                   "routes": [], "servers": [], "protection": {"delete": False},
                   "labels": {}, "created": NOW, "expose_routes_to_vswitch": False},
        }
        self._ids = itertools.count(1000)
        self._ip_counter = itertools.count(10)
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> "FakeHetzner":
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="fake-hetzner")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def endpoint(self) -> str:
        assert self._httpd is not None, "start() first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> "FakeHetzner":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- state helpers --------------------------------------------------

    def _new_action(self, command: str, resources: list[dict]) -> dict:
        action = {"id": next(self._ids), "command": command, "status": "running", "progress": 0,
                  "started": NOW, "finished": None, "resources": resources, "error": None,
                  "_polls": 0}
        self.actions[action["id"]] = action
        return action

    def _public_ip(self) -> str:
        if self.public_ips:
            return self.public_ips.pop(0)
        return f"203.0.113.{next(self._ip_counter)}"

    # -- request handling (called with the lock held) -------------------

    def handle(self, method: str, path: str, query: dict, body: dict | None, token: str | None):
        self.requests.append((method, path))
        if token not in self.tokens:
            return 401, error("unauthorized", "unable to authenticate")
        if self.rate_limited:
            return 429, error("rate_limit_exceeded", "limit of 3600 requests per hour reached")
        if method != "GET" and token in self.read_only_tokens:
            return 403, error("forbidden", "insufficient permissions for this request")
        parts = [p for p in path.split("/") if p][1:]  # drop "v1"
        if not parts:
            return 404, error("not_found", "not found")
        kind = parts[0]
        if method == "GET" and len(parts) == 1 and kind in ("server_types", "images", "locations",
                                                           "networks", "ssh_keys", "servers"):
            items = {
                "server_types": SERVER_TYPES, "images": IMAGES, "locations": LOCATIONS,
                "networks": list(self.networks.values()), "ssh_keys": list(self.ssh_keys.values()),
                "servers": [self._server_view(s) for s in self.servers.values()],
            }[kind]
            if kind == "images" and "type" in query:
                items = [i for i in items if i["type"] in query["type"]]
            for field in ("name", "fingerprint"):
                if field in query:
                    items = [i for i in items if i.get(field) == query[field][0]]
            return 200, paginate(kind, items, query)
        if kind == "ssh_keys" and method == "POST" and len(parts) == 1:
            return self._create_ssh_key(body or {})
        if kind == "servers" and method == "POST" and len(parts) == 1:
            return self._create_server(body or {})
        if kind in ("servers", "actions", "ssh_keys", "networks") and len(parts) == 2:
            try:
                oid = int(parts[1])
            except ValueError:
                return 404, error("not_found", f"{kind[:-1]} not found")
            store = {"servers": self.servers, "actions": self.actions,
                     "ssh_keys": self.ssh_keys, "networks": self.networks}[kind]
            obj = store.get(oid)
            if obj is None:
                return 404, error("not_found", f"{kind[:-1]} with ID '{oid}' not found")
            if method == "GET":
                if kind == "servers":
                    obj["_polls"] += 1
                    if obj["status"] == "initializing" and obj["_polls"] >= self.boot_polls:
                        obj["status"] = "running"
                    return 200, {"server": self._server_view(obj)}
                if kind == "actions":
                    obj["_polls"] += 1
                    if obj["status"] == "running" and obj["_polls"] >= 1:
                        obj.update(status="success", progress=100, finished=NOW)
                    return 200, {"action": public(obj)}
                return 200, {kind[:-1]: public(obj)}
            if method == "DELETE" and kind == "servers":
                obj["status"] = "deleting"
                del self.servers[oid]
                action = self._new_action("delete_server", [{"id": oid, "type": "server"}])
                return 200, {"action": public(action)}
            if method == "DELETE" and kind == "ssh_keys":
                del self.ssh_keys[oid]
                return 204, None
        return 404, error("not_found", f"{method} {path} is not part of the fake API")

    def _create_ssh_key(self, body: dict):
        name, key = body.get("name"), body.get("public_key", "")
        if not name or len(key.split()) < 2:
            return 400, error("invalid_input", "invalid input in fields 'name', 'public_key'",
                              {"fields": [{"name": "public_key", "messages": ["is invalid"]}]})
        if any(k["name"] == name for k in self.ssh_keys.values()):
            return 409, error("uniqueness_error", "SSH key with the same name already exists")
        fp = md5_fingerprint(key)
        if any(k["fingerprint"] == fp for k in self.ssh_keys.values()):
            return 409, error("uniqueness_error", "SSH key with the same fingerprint already exists")
        obj = {"id": next(self._ids), "name": name, "fingerprint": fp, "public_key": key,
               "labels": body.get("labels") or {}, "created": NOW}
        self.ssh_keys[obj["id"]] = obj
        return 201, {"ssh_key": obj}

    def _create_server(self, body: dict):
        fields = []
        name = body.get("name") or ""
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name):
            fields.append({"name": "name", "messages": ["must be a valid hostname"]})
        stype = next((t for t in SERVER_TYPES if t["name"] == body.get("server_type")), None)
        if stype is None:
            fields.append({"name": "server_type", "messages": ["server type not found"]})
        image = next((i for i in IMAGES if i["name"] == body.get("image")), None)
        if image is None:
            fields.append({"name": "image", "messages": ["image not found"]})
        loc = next((lc for lc in LOCATIONS if lc["name"] == body.get("location", "fsn1")), None)
        if loc is None:
            fields.append({"name": "location", "messages": ["location not found"]})
        for kid in body.get("ssh_keys") or []:
            if not any(str(k["id"]) == str(kid) or k["name"] == kid for k in self.ssh_keys.values()):
                fields.append({"name": "ssh_keys", "messages": [f"SSH key {kid} not found"]})
        networks = body.get("networks") or []
        for nid in networks:
            if int(nid) not in self.networks:
                fields.append({"name": "networks", "messages": [f"network {nid} not found"]})
        if fields:
            return 400, error("invalid_input", "invalid input in fields", {"fields": fields})
        if any(s["name"] == name for s in self.servers.values()):
            return 409, error("uniqueness_error", "server name is already used")
        if self.server_limit is not None and len(self.servers) >= self.server_limit:
            return 403, error("resource_limit_exceeded", "server limit exceeded for this project",
                              {"limits": [{"name": "server_limit"}]})
        sid = next(self._ids)
        private = []
        for i, nid in enumerate(networks):
            private.append({"network": int(nid), "ip": f"10.0.1.{len(self.servers) + 2 + i}",
                            "alias_ips": [], "mac_address": "86:00:00:00:00:01"})
        server = {
            "id": sid, "name": name, "status": "initializing", "created": NOW,
            "public_net": {"ipv4": {"id": sid + 1, "ip": self._public_ip(), "blocked": False,
                                    "dns_ptr": f"static.{sid}.example"},
                           "ipv6": None, "floating_ips": [], "firewalls": []},
            "private_net": private, "server_type": stype,
            "datacenter": {"id": loc["id"], "name": f"{loc['name']}-dc1", "description": "",
                           "location": loc, "server_types": {}},
            "image": image, "iso": None, "rescue_enabled": False, "locked": False,
            "backup_window": None, "outgoing_traffic": 0, "ingoing_traffic": 0,
            "included_traffic": 21990232555520, "protection": {"delete": False, "rebuild": False},
            "labels": body.get("labels") or {}, "volumes": [], "load_balancers": [],
            "primary_disk_size": stype["disk"], "placement_group": None,
            "ssh_keys": list(body.get("ssh_keys") or []), "_polls": 0,
        }
        self.servers[sid] = server
        action = self._new_action("create_server", [{"id": sid, "type": "server"}])
        return 201, {"server": self._server_view(server), "action": public(action),
                     "next_actions": [], "root_password": None}

    def _server_view(self, server: dict) -> dict:
        return public(server)


def public(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def error(code: str, message: str, details: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def paginate(kind: str, items: list, query: dict) -> dict:
    page = int(query.get("page", ["1"])[0])
    per_page = int(query.get("per_page", ["25"])[0])
    total = len(items)
    last = max(1, -(-total // per_page))
    chunk = items[(page - 1) * per_page: page * per_page]
    return {kind: [public(i) for i in chunk],
            "meta": {"pagination": {"page": page, "per_page": per_page,
                                    "previous_page": page - 1 if page > 1 else None,
                                    "next_page": page + 1 if page < last else None,
                                    "last_page": last, "total_entries": total}}}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHetzner
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _serve(self, method: str) -> None:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        with self.fake._lock:
            status, payload = self.fake.handle(method, url.path, parse_qs(url.query), body, token)
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Correlation-Id", "fake-" + str(len(self.fake.requests)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self._serve("GET")

    def do_POST(self):  # noqa: N802
        self._serve("POST")

    def do_DELETE(self):  # noqa: N802
        self._serve("DELETE")

    def do_PUT(self):  # noqa: N802
        self._serve("PUT")
