"""The server's shared Docker network is created under flock (two concurrent creates of one
name both succeed in Docker and leave two networks named keystone)."""
from app.drivers.compose import NETWORK_LOCK, ensure_network_cmd


def test_check_then_create_runs_as_one_script_under_the_lock():
    rendered = ensure_network_cmd().render()
    assert rendered.startswith(f"flock -w 120 {NETWORK_LOCK} sh -c '")
    script = rendered[rendered.index("sh -c '") + len("sh -c '"):-1]
    assert script == ("docker network inspect keystone >/dev/null 2>&1 || "
                      "docker network create --label dev.keystone.managed=true keystone "
                      ">/dev/null")
