"""Local servers in containers for tests, demos and development (see sandbox.py)."""
from .docker import SandboxError, docker_available
from .images import (
    BUSYBOX_IMAGE, CADDY_IMAGE, PHP_BASE_IMAGE, POSTGRES_IMAGE, VALKEY_IMAGE,
    ensure_base_image, ensure_image, ensure_images,
)
from .results import AcmeCA, GitHost, Registry, SandboxInfo, Server, ssh_command
from .sample import (push_broken_commit, push_initial_commit, push_laravel_commit, push_new_commit,
                     push_sample_commit, remote_head)
from .sandbox import DEFAULT_NAME, Sandbox
from .transfer import info_as_dict, load_images, push_image, push_stand_ins

__all__ = [
    "AcmeCA",
    "BUSYBOX_IMAGE", "CADDY_IMAGE", "DEFAULT_NAME", "GitHost", "PHP_BASE_IMAGE", "POSTGRES_IMAGE", "Registry",
    "Sandbox", "SandboxError", "SandboxInfo", "Server", "VALKEY_IMAGE", "docker_available", "ensure_base_image",
    "ensure_image", "ensure_images", "info_as_dict", "load_images", "push_broken_commit", "push_image",
    "push_initial_commit", "push_laravel_commit", "push_new_commit", "push_sample_commit", "push_stand_ins", "remote_head", "ssh_command",
]
