"""Benchmark: a new user's first deploy, from `make run` to the sample app answering.

Why: issue 14 asks for at most 5 minutes and 10 clicks (images cached). This starts
`make run` on a fresh instance folder (its own SQLite database, embedded Redis, a
sandbox base name of its own, never a developer's ``keystone-sandbox``), waits for the
sign-up page, then drives chromium through the same walk as
tests/browser/test_first_deploy.py (steps 1-6: sign up, sandbox, sample app, provision,
attach recommended services, deploy, open "Live at"), which counts clicks and typed fields.
Stops `make run` with one Ctrl-C and takes the sandbox down. Prints one JSON line.

    python -m bench.first_deploy [--port 5077]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.first_deploy")
    parser.add_argument("--port", type=int, default=5077)
    parser.add_argument("--sandbox", default="ks-bench-first")
    args = parser.parse_args(argv)
    instance = Path(tempfile.mkdtemp(prefix="keystone-first-deploy-"))
    env = dict(os.environ, KEYSTONE_INSTANCE_PATH=str(instance),
               KEYSTONE_SANDBOX_NAME=args.sandbox)
    for key in ("DATABASE_URL", "REDIS_URL", "KEYSTONE_QUEUE", "KEYSTONE_REDIS_PREFIX"):
        env.pop(key, None)  # what a fresh clone has: SQLite and the embedded Redis
    url = f"http://127.0.0.1:{args.port}"
    log = open(instance / "make-run.log", "w")
    t0 = time.monotonic()
    # `keystone dev` reads its --port from FLASK_DEV_PORT (Flask's CLI option variables).
    run = subprocess.Popen(["make", "run"], cwd=ROOT, env={**env, "FLASK_DEV_PORT": str(args.port)},
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            try:
                urllib.request.urlopen(url + "/signup", timeout=5)
                break
            except OSError:
                if run.poll() is not None or time.monotonic() - t0 > 300:
                    raise RuntimeError("make run did not serve Keystone:\n"
                                       + (instance / "make-run.log").read_text())
                time.sleep(0.2)
        serving = time.monotonic() - t0
        walk = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-x",
             "tests/browser/test_first_deploy.py", "-k",
             "test_1 or test_2 or test_3 or test_4 or test_5 or test_6"],
            cwd=ROOT, env={**env, "KEYSTONE_BROWSER_URL": url}, capture_output=True, text=True)
        total = time.monotonic() - t0
        match = re.search(r"first deploy: (\d+) clicks, (\d+) fields typed, app answered "
                          r"(\d+) s after", walk.stdout)
        result = {"bench": "first_deploy", "ok": walk.returncode == 0 and match is not None,
                  "make_run_to_signup_s": round(serving, 1),
                  "signup_to_app_answering_s": int(match.group(3)) if match else None,
                  "make_run_to_app_answering_s": round(serving + int(match.group(3)), 1)
                  if match else None,
                  "clicks": int(match.group(1)) if match else None,
                  "fields_typed": int(match.group(2)) if match else None,
                  "wall_s": round(total, 1)}
        if walk.returncode != 0:
            result["error"] = walk.stdout[-2000:]
        print(json.dumps(result))
        return 0 if result["ok"] else 1
    finally:
        os.killpg(run.pid, signal.SIGINT)
        try:
            run.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
