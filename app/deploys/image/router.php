<?php
// Keystone router for PHP's built-in server (`php -S 0.0.0.0:8080 -t public router.php`).
// Copied into every managed Laravel image at /opt/keystone/router.php; bases shaped like
// serversideup/php (FrankenPHP, the sandbox stand-in) use ready.caddy instead. Two jobs:
//
// 1. GET /.keystone/ready: what the gateway's active health check asks. Keystone decides,
//    the gateway follows: 503 while the drain marker /tmp/keystone-drain exists, 200 once
//    Keystone armed the replica (/tmp/keystone-armed, touched after its own health checks
//    passed), 503 before. It never calls the app, so a busy app cannot fail it.
// 2. Everything else: static files as they are, the rest through index.php
//    (what Laravel's own server.php does).

$docroot = rtrim($_SERVER['DOCUMENT_ROOT'] ?? getcwd(), '/');
$path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH) ?: '/';

if ($path === '/.keystone/ready') {
    header('Content-Type: text/plain');
    header('Cache-Control: no-store');
    if (file_exists('/tmp/keystone-drain')) {
        http_response_code(503);
        echo "draining\n";
    } elseif (file_exists('/tmp/keystone-armed')) {
        echo "ready\n";
    } else {
        http_response_code(503);
        echo "not armed\n";
    }
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
