"""The periodic health check's parsing and judgement (pure parts of app.health)."""
from app.health import (CRASH_LOOP, FIELD_SEP, GONE, INSPECT_FORMAT, assess,
                        inspect_all_command, parse_inspect)


def line(name="/ks-web-12-blue-op57", cid="c" * 64, status="running", running="true",
         restarts="0", health="none", code="0", replica="31"):
    return FIELD_SEP.join([name, cid, status, running, restarts, health, code, replica])


def test_parse_one_line_per_container():
    text = "\n".join([
        line(),
        line(name="/ks-worker-13-blue-op57", status="restarting", running="false",
             restarts="7", code="255", replica="32"),
        line(name="/keystone-pg-4", health="healthy", replica=""),
    ]) + "\n"
    states = parse_inspect(text)
    assert sorted(states) == ["keystone-pg-4", "ks-web-12-blue-op57", "ks-worker-13-blue-op57"]
    web = states["ks-web-12-blue-op57"]
    assert web.running and web.status == "running" and web.restart_count == 0
    assert web.replica_id == 31 and web.health == "none" and web.id == "c" * 64
    worker = states["ks-worker-13-blue-op57"]
    assert worker.status == "restarting" and not worker.running
    assert worker.restart_count == 7 and worker.exit_code == 255
    assert states["keystone-pg-4"].replica_id is None
    assert states["keystone-pg-4"].health == "healthy"


def test_parse_skips_lines_of_another_shape():
    text = "Welcome to the server\n" + line(restarts="x") + "\n" + \
        FIELD_SEP.join(["/a", "b"]) + "\n\n" + line(name="/ok") + "\r\n"
    assert list(parse_inspect(text)) == ["ok"]
    assert parse_inspect("") == {} and parse_inspect(None) == {}


def test_a_missing_container_is_gone():
    a = assess(None, 0)
    assert (a.status, a.health, a.container_state) == ("failed", "unhealthy", GONE)
    assert "gone" in a.problem


def test_a_dead_container_died():
    [s] = parse_inspect(line(status="exited", running="false", code="137")).values()
    a = assess(s, 0)
    assert (a.status, a.health, a.container_state) == ("failed", "unhealthy", "exited")
    assert a.problem == "its container died (exit code 137)"


def test_restarting_or_fast_growing_restarts_is_a_crash_loop():
    [s] = parse_inspect(line(status="restarting", running="false", restarts="3",
                             code="1")).values()
    a = assess(s, 2)
    assert a.container_state == CRASH_LOOP and a.health == "unhealthy" and a.status == "running"
    assert a.problem == "it restarts in a loop (3 restarts, last exit code 1)"
    [s] = parse_inspect(line(restarts="5", code="1")).values()
    assert assess(s, 2).container_state == CRASH_LOOP
    assert assess(s, None).container_state == CRASH_LOOP  # 5 restarts since the deploy


def test_one_restart_is_reported_but_not_a_loop():
    [s] = parse_inspect(line(restarts="1", health="healthy")).values()
    a = assess(s, 0)
    assert a.container_state == "running" and a.health == "healthy"
    assert a.problem == "it restarted 1 time since the last check (1 in all)"
    assert assess(s, 1).problem is None  # seen before: nothing new


def test_a_healthy_running_container_clears_a_problem():
    [s] = parse_inspect(line(health="healthy", restarts="4")).values()
    a = assess(s, 4)
    assert (a.status, a.health, a.container_state, a.problem) == \
        ("running", "healthy", "running", None)
    [s] = parse_inspect(line(health="unhealthy", restarts="4")).values()
    assert assess(s, 4).health == "unhealthy"


def test_one_command_inspects_every_managed_container_with_a_quoted_format():
    rendered = inspect_all_command().render()
    assert rendered.startswith("sh -c ")
    assert "label=dev.keystone.managed=true" in rendered
    assert rendered.count("docker inspect") == 1
    assert INSPECT_FORMAT.split(FIELD_SEP)[0] == "{{.Name}}"
