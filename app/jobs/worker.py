"""The Keystone RQ worker."""
from __future__ import annotations

import redis
from rq import Queue, Worker


def redis_connection(app) -> redis.Redis:
    return redis.Redis.from_url(app.config["REDIS_URL"])


def run_worker(app, burst: bool = False) -> None:
    conn = redis_connection(app)
    queue = Queue(app.config["RQ_QUEUE"], connection=conn)
    Worker([queue], connection=conn).work(burst=burst)
