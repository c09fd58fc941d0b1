"""Builds: the managed Laravel Dockerfile, build plans and artifacts (SPEC 6 and 7).

API for the deploy flow::

    check_build_plan(environment, servers) -> list[BuildProblem]   # before starting anything
    ensure_artifact(ctx, environment, commit_sha, servers) -> BuildArtifact
    image_ref(artifact) -> str          # what compose runs: name@sha256:... or the local tag
    make_present(ctx, artifact, servers, registry)   # pull by digest where missing (rollback)
    render_dockerfile(parse_build_config(environment.build_config)) -> str
"""
from app.builds.artifacts import (BUILD_STEP, BuildError, artifact_registry, ensure_artifact,
                                  image_ref, make_present)
from app.builds.config import (BuildConfig, BuildConfigError, config_hash, parse_build_config,
                               runs_prebuilt_image)
from app.builds.dockerfile import render_dockerfile
from app.builds.plan import BuildPlanError, BuildProblem, check_build_plan, plan_build

__all__ = ["BUILD_STEP", "BuildConfig", "BuildConfigError", "BuildError", "BuildPlanError",
           "BuildProblem", "artifact_registry", "check_build_plan", "make_present", "config_hash", "ensure_artifact", "image_ref",
           "parse_build_config", "plan_build", "render_dockerfile", "runs_prebuilt_image"]
