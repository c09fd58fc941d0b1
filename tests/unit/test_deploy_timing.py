"""Per-phase timing of a deploy (app.deploys.timing): exclusive nesting, threads, the report."""
import threading

from app.deploys.timing import NULL_CLOCK, PhaseClock, summarize
from bench.deploy_phases import composer_layer_cached


class FakeTime:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_nested_phases_count_for_the_inner_one_only():
    t = FakeTime()
    clock = PhaseClock(now=t)
    with clock.phase("start"):
        t.now += 1.0
        with clock.phase("health"):
            t.now += 3.0
        t.now += 0.5
    t.now += 0.25  # outside every phase
    clock.stop()
    t.now += 50  # after stop: not counted
    phases, timing = clock.report()
    assert phases == {"start": 1.5, "health": 3.0, "other": 0.25}
    assert timing["total_s"] == 4.75
    assert timing["work_s"] == 3.0
    assert timing["overhead_s"] == 1.75


def test_a_phase_entered_twice_adds_up_and_a_failure_still_counts():
    t = FakeTime()
    clock = PhaseClock(now=t)
    for _ in range(2):
        with clock.phase("routes"):
            t.now += 0.5
    try:
        with clock.phase("gateway"):
            t.now += 2
            raise RuntimeError("gateway never saw the slot")
    except RuntimeError:
        pass
    assert clock.report()[0] == {"routes": 1.0, "gateway": 2.0}


def test_overhead_is_everything_but_build_pull_migrations_and_health():
    phases, timing = summarize({"resolve": 0.2, "artifact": 0.1, "fetch": 1.0, "build": 30.0,
                                "pull": 2.0, "plan": 0.05, "migrate": 3.0, "start": 1.0,
                                "health": 1.5, "gateway": 0.6, "drain": 1.6,
                                "drain_window": 1.5, "stop": 0.4, "record": 0.05}, 43.0)
    assert timing["work_s"] == 37.5
    assert timing["overhead_s"] == 5.5
    assert timing["overhead_without_drain_window_s"] == 4.0
    assert "other" not in phases  # every second is in a phase


def test_phases_in_threads_nest_per_thread():
    clock = PhaseClock()
    seen = []

    def server():
        with clock.phase("health"):
            seen.append(threading.current_thread().name)

    with clock.phase("start"):
        threads = [threading.Thread(target=server) for _ in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    phases, _ = clock.report()
    assert len(seen) == 3 and set(phases) >= {"start"}
    assert all(v >= 0 for v in phases.values())


def test_the_null_clock_records_nothing():
    with NULL_CLOCK.phase("build"):
        pass


def test_the_bench_reads_the_composer_layer_from_the_classic_builders_log():
    log = ("Step 9/18 : COPY --chown=www-data:www-data composer.json composer.lock* /var/www/html/\n"
           " ---> Using cache\n ---> 1a2b3c\n"
           "Step 10/18 : RUN composer install --no-dev --no-scripts --no-autoloader\n"
           " ---> Using cache\n ---> 4d5e6f\n"
           "Step 14/18 : COPY --chown=www-data:www-data . /var/www/html\n ---> 7a8b9c\n")
    assert composer_layer_cached(log) is True
    assert composer_layer_cached(log.replace("Step 10/18 : RUN composer install --no-dev "
                                             "--no-scripts --no-autoloader\n ---> Using cache",
                                             "Step 10/18 : RUN composer install --no-dev "
                                             "--no-scripts --no-autoloader\n ---> Running in "
                                             "0f0f")) is False
    assert composer_layer_cached("Step 1/2 : FROM x\n") is None


def test_dependency_containers_are_inspected_in_one_command():
    from app.deploys import commands as dc
    command = dc.inspect_many(["ks-pg-1", "ks-cache-2"])
    text = command.masked()
    assert text.startswith("docker inspect --format ") and text.endswith(" ks-pg-1 ks-cache-2")
    out = ("/ks-pg-1 abc sha256:1 true healthy 0 0\n"
           "/ks-cache-2 def sha256:2 false none 3 137\n"
           "Error: No such object: ks-gone\n")
    seen = dc.parse_inspect_many(out)
    assert seen == {"ks-pg-1": ["abc", "sha256:1", "true", "healthy", "0", "0"],
                    "ks-cache-2": ["def", "sha256:2", "false", "none", "3", "137"]}
