<?php
// Shared by artisan and public/index.php: where the app is, which commit it is,
// and connections to the database (DB_*) and Redis (REDIS_*) as Laravel reads them.

define('SAMPLE_ROOT', dirname(__DIR__));

function sample_env(string $key, ?string $default = null): ?string
{
    $v = getenv($key);
    if ($v !== false && $v !== '') {
        return $v;
    }
    static $dotenv = null;
    if ($dotenv === null) {
        $dotenv = [];
        $file = SAMPLE_ROOT . '/.env';
        if (is_readable($file)) {
            foreach (file($file, FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES) as $line) {
                if ($line === '' || $line[0] === '#' || !str_contains($line, '=')) {
                    continue;
                }
                [$k, $val] = explode('=', $line, 2);
                $val = trim($val);
                if (strlen($val) >= 2 && ($val[0] === '"' || $val[0] === "'") && $val[-1] === $val[0]) {
                    $val = substr($val, 1, -1);
                }
                $dotenv[trim($k)] = $val;
            }
        }
    }
    return $dotenv[$key] ?? $default;
}

function sample_commit(): string
{
    foreach (['KEYSTONE_COMMIT', 'APP_COMMIT', 'GIT_COMMIT', 'SOURCE_COMMIT'] as $key) {
        $v = sample_env($key);
        if ($v) {
            return $v;
        }
    }
    $file = SAMPLE_ROOT . '/REVISION';
    if (is_readable($file)) {
        return trim(file_get_contents($file));
    }
    return 'unknown';
}

function sample_version(): string
{
    $file = SAMPLE_ROOT . '/VERSION';
    return is_readable($file) ? trim(file_get_contents($file)) : 'unknown';
}

function sample_db(): PDO
{
    $conn = sample_env('DB_CONNECTION', 'pgsql');
    // Like Laravel's defaults: no short connect timeout (a busy server still answers).
    $opts = [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION, PDO::ATTR_TIMEOUT => 30];
    if ($conn === 'sqlite') {
        $path = sample_env('DB_DATABASE', SAMPLE_ROOT . '/database/database.sqlite');
        return new PDO('sqlite:' . $path, null, null, $opts);
    }
    if ($conn !== 'pgsql') {
        throw new RuntimeException("unsupported DB_CONNECTION: $conn");
    }
    $dsn = sprintf(
        'pgsql:host=%s;port=%s;dbname=%s;connect_timeout=30',
        sample_env('DB_HOST', '127.0.0.1'),
        sample_env('DB_PORT', '5432'),
        sample_env('DB_DATABASE', 'forge')
    );
    return new PDO($dsn, sample_env('DB_USERNAME', 'forge'), sample_env('DB_PASSWORD', ''), $opts);
}

function sample_redis(): Redis
{
    if (!class_exists('Redis')) {
        throw new RuntimeException('php-redis extension missing');
    }
    $r = new Redis();
    $r->connect(sample_env('REDIS_HOST', '127.0.0.1'), (int) sample_env('REDIS_PORT', '6379'), 2.0);
    $password = sample_env('REDIS_PASSWORD');
    if ($password !== null && $password !== '' && $password !== 'null') {
        $user = sample_env('REDIS_USERNAME');
        $r->auth($user ? [$user, $password] : $password);
    }
    $r->select((int) sample_env('REDIS_DB', '0'));
    // As Laravel's PhpRedisConnector does with config('database.redis.options.prefix'):
    // every key is under REDIS_PREFIX (the ACL user may touch nothing else).
    $prefix = sample_env('REDIS_PREFIX');
    if ($prefix !== null && $prefix !== '') {
        $r->setOption(Redis::OPT_PREFIX, $prefix);
    }
    $r->ping();
    return $r;
}

function sample_db_is(PDO $pdo, string $driver): bool
{
    return $pdo->getAttribute(PDO::ATTR_DRIVER_NAME) === $driver;
}
