"""The sandbox servers' inner storage driver: overlay2 where it nests, else fuse-overlayfs,
else vfs (app.sandbox.host). The host engine is asked through one `docker info`; here its
answers are given, the choice is pure."""
from __future__ import annotations

import subprocess

import pytest

from app.sandbox import host


def _docker_info(stdout: str, returncode: int = 0):
    def fake_run(args, **kwargs):
        assert args[:2] == ["docker", "info"]
        return subprocess.CompletedProcess(args, returncode, stdout, "")
    return fake_run


@pytest.mark.parametrize("answer, expected", [
    ('overlay2 [["Backing Filesystem","extfs"],["Supports d_type","true"]]', "extfs"),
    ('overlay2 [["Backing Filesystem","xfs"]]', "xfs"),
    ('overlay2 [["Backing Filesystem","overlayfs"]]', "overlayfs"),
    ('fuse-overlayfs null', ""),
    ('vfs []', ""),
    ('overlay2 not json', ""),
])
def test_the_host_engines_backing_filesystem(monkeypatch, answer, expected):
    monkeypatch.setattr(host, "run", _docker_info(answer))
    assert host._host_backing_filesystem() == expected


def test_no_answer_from_the_engine_is_no_backing_filesystem(monkeypatch):
    monkeypatch.setattr(host, "run", _docker_info("", returncode=1))
    assert host._host_backing_filesystem() == ""


def test_overlay2_on_ext4_or_xfs_else_not(monkeypatch):
    monkeypatch.delenv("KEYSTONE_SANDBOX_STORAGE_DRIVER", raising=False)
    monkeypatch.setattr(host, "run", _docker_info('overlay2 [["Backing Filesystem","extfs"]]'))
    assert host.inner_storage_driver() == "overlay2"
    # overlay2 on overlay2 does not nest: fuse-overlayfs or vfs, whatever this machine has.
    monkeypatch.setattr(host, "run", _docker_info('overlay2 [["Backing Filesystem","overlayfs"]]'))
    assert host.inner_storage_driver() in ("fuse-overlayfs", "vfs")


def test_the_override_wins(monkeypatch):
    monkeypatch.setenv("KEYSTONE_SANDBOX_STORAGE_DRIVER", "vfs")
    monkeypatch.setattr(host, "run", _docker_info('overlay2 [["Backing Filesystem","extfs"]]'))
    assert host.inner_storage_driver() == "vfs"
