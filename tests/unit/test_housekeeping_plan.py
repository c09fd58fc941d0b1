"""Housekeeping's pure planning (app.housekeeping): what a server keeps and what it sheds."""
from __future__ import annotations

import datetime as dt
import json

from app.housekeeping import (IMAGE_LABEL, ArtifactFact, ContainerFact, DirectoryFact, ImageFact,
                              build_cache_excess, deploy_fits, kept_artifacts, parse_build_cache,
                              parse_containers, parse_df_used, parse_directories, parse_images,
                              plan_containers, plan_directories, plan_images,
                              prunable_artifacts, registry_prunable)

KS = {IMAGE_LABEL: "laravel/3"}


def _artifacts(n, env=1, registry=True):
    return [ArtifactFact(i, env, "ready", f"sha256:img{i}",
                         f"reg:5000/app-prod@sha256:dig{i}" if registry else None)
            for i in range(1, n + 1)]


def test_keeps_the_running_artifact_and_the_n_newest_others():
    arts = _artifacts(8)
    assert kept_artifacts(arts, {1: 8}, {1: 3}) == {8, 7, 6, 5}
    # after a rollback to #6 the newest three others stay the rollback targets
    assert kept_artifacts(arts, {1: 6}, {1: 3}) == {6, 8, 7, 5}
    assert [a.id for a in prunable_artifacts(arts, {8, 7, 6, 5})] == [1, 2, 3, 4]


def test_keep_is_clamped_and_defaults_to_five():
    arts = _artifacts(9)
    assert kept_artifacts(arts, {1: 9}, {}) == {9, 8, 7, 6, 5, 4}
    assert kept_artifacts(arts, {1: 9}, {1: 0}) == {9, 8}        # never fewer than one target
    assert kept_artifacts(arts, {1: None}, {1: 2}) == {9, 8}     # nothing runs yet


def test_building_and_failed_and_pruned_artifacts():
    arts = [ArtifactFact(1, 1, "ready", "sha256:a"), ArtifactFact(2, 1, "failed"),
            ArtifactFact(3, 1, "pruned", "sha256:c"), ArtifactFact(4, 1, "building"),
            ArtifactFact(5, 1, "ready", "sha256:e")]
    kept = kept_artifacts(arts, {1: 5}, {1: 1})
    assert kept == {5, 1, 4}
    assert prunable_artifacts(arts, kept) == []


def test_environments_are_independent():
    arts = _artifacts(4, env=1) + [ArtifactFact(i, 2, "ready", f"sha256:x{i}")
                                   for i in range(10, 14)]
    kept = kept_artifacts(arts, {1: 4, 2: 10}, {1: 1, 2: 2})
    assert kept == {4, 3, 10, 13, 12}
    assert [a.id for a in registry_prunable(arts, kept)] == [1, 2]   # env 2 was never pushed


def test_images_without_keystone_label_are_never_candidates():
    arts = _artifacts(3)
    images = [ImageFact("sha256:img1", ("keystone/app:a",), (), KS, 100),
              ImageFact("sha256:img2", (), ("reg:5000/app-prod@sha256:dig2",), KS, 100),
              ImageFact("sha256:img3", ("keystone/app:c",), (), KS, 100),
              ImageFact("sha256:foreign", ("keystone/app:old",), (), {"other": "x"}, 100),
              ImageFact("sha256:dangling", (), (), KS, 5),
              ImageFact("sha256:other-keystone", ("x/y:1",), (), KS, 5),   # not our artifact
              ImageFact("sha256:foreign-dangling", (), (), {}, 5)]
    plan = plan_images(images, [], arts, {3})
    assert {r.ref: r.artifact_id for r in plan} == {"sha256:img1": 1, "sha256:img2": 2,
                                                     "sha256:dangling": None}
    assert next(r for r in plan if r.ref == "sha256:img2").references == \
        ("reg:5000/app-prod@sha256:dig2",)
    assert next(r for r in plan if r.ref == "sha256:dangling").references == ("sha256:dangling",)
    both = ImageFact("sha256:b", ("r/a:1", "r/a:2"), ("r/a@sha256:d",), KS)
    assert both.references == ("r/a:1", "r/a:2")     # the last tag takes the digest with it


def test_kept_artifact_found_by_digest_and_images_in_use_stay():
    arts = _artifacts(3)
    pulled = ImageFact("sha256:other-id", (), ("reg:5000/app-prod@sha256:dig3",), KS)
    used = ImageFact("sha256:img1", ("keystone/app:a",), (), KS)
    stopped_foreign = ContainerFact("c1", "mine", "sha256:img1", "exited", {})
    assert plan_images([pulled, used], [stopped_foreign], arts, {3}) == []


def test_only_stopped_keystone_containers_of_gone_replicas():
    label = {"dev.keystone.managed": "true"}
    cs = [ContainerFact("a", "ks-web-1-blue-op3", "i", "exited", {**label, "dev.keystone.replica": "3"}),
          ContainerFact("b", "ks-web-1-green-op4", "i", "exited", {**label, "dev.keystone.replica": "4"}),
          ContainerFact("c", "ks-web-1-blue-op5", "i", "running", {**label, "dev.keystone.replica": "5"}),
          ContainerFact("d", "ks-pg-2", "i", "exited", {**label, "dev.keystone.replica": ""}),
          ContainerFact("e", "someone", "i", "exited", {"dev.keystone.replica": "9"}),
          ContainerFact("f", "ks-web-1-blue-op6", "i", "created", {**label, "dev.keystone.replica": "6"}),
          ContainerFact("g", "ks-web-1-blue-op7", "i", "dead", {**label, "dev.keystone.replica": "7"})]
    plan = plan_containers(cs, {3: "removed", 4: "stopped", 5: "removed", 6: "removed"})
    assert [r.ref for r in plan] == ["a", "g"]


def test_directories():
    now = dt.datetime(2026, 12, 2, 12, 0)
    old, new = now - dt.timedelta(hours=3), now - dt.timedelta(minutes=5)
    dirs = [DirectoryFact("/home/keystone/operations/" + "a" * 32, old),
            DirectoryFact("/home/keystone/operations/" + "b" * 32, old),     # active
            DirectoryFact("/home/keystone/operations/" + "c" * 32, new),     # too young
            DirectoryFact("/home/keystone/operations/" + "d" * 32, old),     # ours
            DirectoryFact("/home/keystone/operations/not-a-hash", old),
            DirectoryFact("/home/keystone/services/7", old),                 # deleted service
            DirectoryFact("/home/keystone/services/8", old),
            DirectoryFact("/home/keystone/services/8/blue", old),            # in use
            DirectoryFact("/home/keystone/services/8/green", old),           # unused slot
            DirectoryFact("/home/keystone/services/8/data", old),
            DirectoryFact("/home/keystone/gateway", old)]
    plan = plan_directories(dirs, active_hashes={"b" * 32}, service_ids={8},
                            used_dirs={"/home/keystone/services/8/blue"}, own_hash="d" * 32,
                            now=now)
    assert [r.ref for r in plan] == ["/home/keystone/operations/" + "a" * 32,
                                     "/home/keystone/services/7",
                                     "/home/keystone/services/8/green"]


def test_build_cache_and_fit():
    assert build_cache_excess(None) == 0
    assert build_cache_excess(100, cap=200) == 0
    assert build_cache_excess(300, cap=200) == 100
    assert deploy_fits(None, 10) == (True, "")
    ok, text = deploy_fits(1000 * 1024 ** 2, 900 * 1024 ** 2)
    assert not ok and "1.1 GB" in text and "1000.0 MB is free" in text
    assert deploy_fits(2 * 1024 ** 3, 900 * 1024 ** 2)[0]


def test_parsers():
    images = parse_images(json.dumps([{"Id": "sha256:x", "RepoTags": ["a:b"], "RepoDigests": [],
                                       "Config": {"Labels": KS}, "Size": 12},
                                      {"Id": "sha256:y", "RepoTags": None, "Config": {}}]))
    assert images[0].keystone and images[0].size == 12 and not images[1].keystone
    assert images[1].dangling
    cs = parse_containers(json.dumps([{"Id": "c", "Name": "/n", "Image": "sha256:x",
                                       "State": {"Status": "exited"},
                                       "Config": {"Labels": {"dev.keystone.managed": "true"}}}]))
    assert cs[0].name == "n" and cs[0].keystone and cs[0].state == "exited"
    assert parse_images("") == [] and parse_containers("garbage") == []
    dirs = parse_directories("/home/keystone/operations/abc\t1700000000.5\nbad line\n")
    assert dirs[0].path == "/home/keystone/operations/abc" and dirs[0].mtime.year == 2023
    assert parse_build_cache("Images\t1GB\nBuild Cache\t2.5GB\n") == 2_500_000_000
    assert parse_df_used("Filesystem 1024-blocks Used Available Capacity Mounted\n"
                         "/dev/x 100 40 60 40% /\n") == (40 * 1024, 60 * 1024)
