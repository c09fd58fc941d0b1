"""Builds: the managed Laravel Dockerfile, build plans and artifacts (SPEC 6 and 7).

API for the deploy flow::

    check_build_plan(environment, servers) -> list[BuildProblem]   # before starting anything
    ensure_artifact(ctx, environment, commit_sha, servers) -> BuildArtifact
    image_ref(artifact) -> str          # what compose runs: name@sha256:... or the local tag
    render_dockerfile(parse_build_config(environment.build_config)) -> str
"""
from app.builds.artifacts import BUILD_STEP, BuildError, ensure_artifact, image_ref
from app.builds.config import (BuildConfig, BuildConfigError, config_hash, parse_build_config)
from app.builds.dockerfile import render_dockerfile
from app.builds.plan import BuildPlanError, BuildProblem, check_build_plan, plan_build

__all__ = ["BUILD_STEP", "BuildConfig", "BuildConfigError", "BuildError", "BuildPlanError",
           "BuildProblem", "check_build_plan", "config_hash", "ensure_artifact", "image_ref",
           "parse_build_config", "plan_build", "render_dockerfile"]
