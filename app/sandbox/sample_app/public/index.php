<?php
// GET /up -> 200 (500 when the commit is deliberately broken);
// GET /    -> JSON: commit sha, version, hostname, and which database and Redis it reached.

require __DIR__ . '/../bootstrap/app.php';

$path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH) ?: '/';

if ($path === '/up') {
    if (file_exists(SAMPLE_ROOT . '/BROKEN')) {
        http_response_code(500);
        header('Content-Type: text/plain');
        echo "Application is broken on purpose (commit " . sample_commit() . ")\n";
        return;
    }
    header('Content-Type: text/plain');
    echo "OK\n";
    return;
}

// POST /items name=<key> -> 201 {"id": n}: a write per request (load tests count their rows:
// every POST answered 2xx must be in the table exactly once, none lost, none twice).
if ($path === '/items' && ($_SERVER['REQUEST_METHOD'] ?? 'GET') === 'POST') {
    $name = substr((string) ($_POST['name'] ?? 'item'), 0, 200);
    try {
        $pdo = sample_db();
        $stmt = $pdo->prepare('INSERT INTO sample_items (name) VALUES (?)');
        $stmt->execute([$name]);
        http_response_code(201);
        header('Content-Type: application/json');
        echo json_encode(['id' => (int) $pdo->lastInsertId(), 'name' => $name, 'commit' => sample_commit()]), "\n";
    } catch (Throwable $e) {
        http_response_code(500);
        header('Content-Type: text/plain');
        echo 'insert failed: ', $e->getMessage(), "\n";
    }
    return;
}

if ($path !== '/') {
    http_response_code(404);
    header('Content-Type: text/plain');
    echo "Not Found\n";
    return;
}

$result = [
    'app' => sample_env('APP_NAME', 'keystone-sample'),
    'commit' => sample_commit(),
    'version' => sample_version(),
    'hostname' => gethostname(),
    'env' => sample_env('APP_ENV', 'production'),
    'database' => ['connection' => sample_env('DB_CONNECTION', 'pgsql'), 'host' => sample_env('DB_HOST'),
                   'database' => sample_env('DB_DATABASE'), 'reachable' => false],
    'redis' => ['host' => sample_env('REDIS_HOST'), 'port' => sample_env('REDIS_PORT', '6379'),
                'prefix' => sample_env('REDIS_PREFIX'), 'reachable' => false],
];

try {
    $pdo = sample_db();
    $result['database']['reachable'] = true;
    $result['database']['server_version'] = $pdo->getAttribute(PDO::ATTR_SERVER_VERSION);
    try {
        $result['database']['migrations'] = (int) $pdo->query('SELECT COUNT(*) FROM migrations')->fetchColumn();
    } catch (Throwable $e) {
        $result['database']['migrations'] = 0;
    }
} catch (Throwable $e) {
    $result['database']['error'] = $e->getMessage();
}

try {
    $redis = sample_redis();
    $result['redis']['reachable'] = true;
    $result['redis']['hits'] = $redis->incr('keystone-sample:hits');
} catch (Throwable $e) {
    $result['redis']['error'] = $e->getMessage();
}

header('Content-Type: application/json');
echo json_encode($result, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES), "\n";
