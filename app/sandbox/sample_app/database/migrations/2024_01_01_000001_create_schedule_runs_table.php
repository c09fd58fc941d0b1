<?php
return [
    'pgsql' => [
        'CREATE TABLE IF NOT EXISTS schedule_runs (id BIGSERIAL PRIMARY KEY, hostname VARCHAR(255) NOT NULL, ran_at TIMESTAMP(0) NOT NULL DEFAULT CURRENT_TIMESTAMP, started_at DOUBLE PRECISION, finished_at DOUBLE PRECISION)',
    ],
    'sqlite' => [
        'CREATE TABLE IF NOT EXISTS schedule_runs (id INTEGER PRIMARY KEY AUTOINCREMENT, hostname VARCHAR(255) NOT NULL, ran_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, started_at REAL, finished_at REAL)',
    ],
];
