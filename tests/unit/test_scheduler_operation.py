"""The scheduler config_change operation run in-process against recording connections:
release (and wait) strictly before claim, and no claim at all when a release times out."""
from app.deploys.scheduler import start_scheduler_change
from app.deploys.service import add_role_service
from app.extensions import db
from app.jobs import run_operation
from app.models import Environment, Operation, ServiceReplica
from app.models.enums import OperationStatus as S, ReplicaStatus
from tests.factories import build_org
from tests.opsupport import clean_streams, fake_servers  # noqa: F401


def graph():
    g = build_org()
    g.replica.status = ReplicaStatus.RUNNING
    worker = add_role_service(g.environment, "worker")
    wr = ServiceReplica(service=worker, server=g.server, container_name="ks-worker-1",
                        status=ReplicaStatus.RUNNING)
    db.session.add(wr)
    g.environment.scheduler_target_service_id = g.web.id
    g.environment.scheduler_replica_id = g.replica.id
    db.session.commit()
    return g, worker, wr


def commands(fake):
    return [c.masked for conn in fake.connections for c in conn.calls
            if "keystone-scheduler" in c.masked]


def test_target_change_releases_the_old_runner_before_claiming_on_the_worker(app, clean_streams):
    g, worker, wr = graph()
    with fake_servers() as fake:
        op = start_scheduler_change(g.environment, None, enabled=True, mode="single",
                                    target=worker, enqueue=False)
        assert run_operation(op.id) == "succeeded"
    seen = commands(fake)
    release = [i for i, c in enumerate(seen) if "ks-web-1" in c and "rm -f" in c]
    claim = [i for i, c in enumerate(seen) if "ks-worker-1" in c and "touch" in c]
    assert len(release) == 1 and len(claim) == 1 and release[0] < claim[0], seen
    assert not any("ks-web-1" in c and "touch" in c for c in seen)
    db.session.expire_all()
    assert db.session.get(Environment, g.environment.id).scheduler_replica_id == wr.id


def test_a_release_that_times_out_fails_before_any_claim(app, clean_streams):
    g, worker, wr = graph()
    with fake_servers() as fake:
        fake.script(lambda text: "ks-web-1" in text and "rm -f" in text, exit_code=3,
                    output="schedule:run still running after 300s\n")
        op = start_scheduler_change(g.environment, None, enabled=True, mode="single",
                                    target=worker, enqueue=False)
        assert run_operation(op.id) == "failed"
    assert not any("touch" in c for c in commands(fake))
    db.session.expire_all()
    op = db.session.get(Operation, op.id)
    assert op.status is S.FAILED and "was not moved" in op.error
    assert db.session.get(Environment, g.environment.id).scheduler_replica_id == g.replica.id


def test_every_replica_to_disabled_releases_every_replica(app, clean_streams):
    g, worker, wr = graph()
    g.environment.scheduler_target_service_id = worker.id
    db.session.commit()
    with fake_servers() as fake:
        op = start_scheduler_change(g.environment, None, enabled=False, mode="disabled",
                                    target=None, enqueue=False)
        assert run_operation(op.id) == "succeeded"
    seen = commands(fake)
    assert sorted(c.split()[2] for c in seen if "rm -f" in c) == ["ks-web-1", "ks-worker-1"]
    assert not any("touch" in c for c in seen)
    db.session.expire_all()
    env = db.session.get(Environment, g.environment.id)
    assert env.scheduler_enabled is False and env.scheduler_replica_id is None
