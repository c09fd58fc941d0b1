<?php
// A migration the sample artisan understands: SQL per PDO driver.
return [
    'pgsql' => [
        'CREATE TABLE sample_items (id BIGSERIAL PRIMARY KEY, name VARCHAR(255) NOT NULL, created_at TIMESTAMP(0) NOT NULL DEFAULT CURRENT_TIMESTAMP)',
        "INSERT INTO sample_items (name) VALUES ('first item')",
    ],
    'sqlite' => [
        'CREATE TABLE sample_items (id INTEGER PRIMARY KEY AUTOINCREMENT, name VARCHAR(255) NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)',
        "INSERT INTO sample_items (name) VALUES ('first item')",
    ],
];
