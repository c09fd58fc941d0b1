<?php
// Keystone router for PHP's built-in server (`php -S 0.0.0.0:8080 -t public router.php`).
// Copied into every managed Laravel image at /opt/keystone/router.php; the
// FrankenPHP base uses ready.caddy instead. Two jobs:
//
// 1. GET /.keystone/ready: what the gateway's active health check asks (every
//    500 ms). 503 while the drain marker /tmp/keystone-drain exists, so the
//    gateway stops sending new requests to a replica that is being replaced;
//    otherwise the app's own health path (KEYSTONE_HEALTH_PATH, default /up;
//    a 404 there falls back to /).
// 2. Everything else: static files as they are, the rest through index.php
//    (what Laravel's own server.php does).

$docroot = rtrim($_SERVER['DOCUMENT_ROOT'] ?? getcwd(), '/');
$path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH) ?: '/';

function keystone_probe(string $path): int
{
    $port = (int) ($_SERVER['SERVER_PORT'] ?? 8080);
    $ctx = stream_context_create(['http' => [
        'timeout' => 2, 'ignore_errors' => true, 'follow_location' => 0,
        'header' => "Host: localhost\r\nUser-Agent: keystone-ready\r\n",
    ]]);
    $body = @file_get_contents('http://127.0.0.1:' . $port . $path, false, $ctx);
    if (!isset($http_response_header[0])) {
        return 0;
    }
    return preg_match('#^HTTP/\S+\s+(\d{3})#', $http_response_header[0], $m) ? (int) $m[1] : 0;
}

if ($path === '/.keystone/ready') {
    header('Content-Type: text/plain');
    header('Cache-Control: no-store');
    if (file_exists('/tmp/keystone-drain')) {
        http_response_code(503);
        echo "draining\n";
        return true;
    }
    $health = getenv('KEYSTONE_HEALTH_PATH') ?: '/up';
    $status = keystone_probe($health);
    if ($status === 404 && $health !== '/') {
        $fallback = keystone_probe('/');
        $status = ($fallback >= 200 && $fallback < 400) ? 200 : $fallback;
    }
    http_response_code($status === 200 ? 200 : 503);
    echo $status === 200 ? "ready\n" : "not ready ($status)\n";
    return true;
}

if ($path !== '/' && strpos($path, '..') === false && is_file($docroot . $path)) {
    return false; // the built-in server sends the file itself
}

$_SERVER['SCRIPT_FILENAME'] = $docroot . '/index.php';
$_SERVER['SCRIPT_NAME'] = '/index.php';
$_SERVER['PHP_SELF'] = '/index.php';
chdir($docroot);
require $docroot . '/index.php';
return true;
