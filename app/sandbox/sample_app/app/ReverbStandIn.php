<?php
// A stand-in for Laravel Reverb (`php artisan reverb:start`): no composer packages exist in
// the sandbox, so this is plain PHP, one process, stream_socket_server + stream_select.
// It speaks just enough of what Reverb serves for Keystone's tests:
//
//   GET  /up                 200 (500 when the commit is broken on purpose, like the web app);
//                            Reverb's health check route, what the deploy and the gateway ask.
//                            Like Reverb it has no Keystone ready handler (/.keystone/ready
//                            is a 404 here), so Keystone must not rely on one for websockets.
//   GET  /app/{key}          RFC 6455 websocket handshake, then the Pusher protocol:
//                            pusher:connection_established (socket_id, activity_timeout and,
//                            so a test can tell replicas apart, hostname and commit),
//                            pusher:ping -> pusher:pong, pusher:subscribe -> subscription
//                            succeeded; a wrong key (when REVERB_APP_KEY is set) -> 4001
//   POST /apps/{id}/events   Pusher HTTP API: 200 {} and the event goes to the channel's
//                            subscribers (no auth signature check: a stand-in)
//
// SIGTERM/SIGINT (pcntl, like queue:work): close every websocket with 1001 "going away",
// stop listening, exit 0. HTTP responses always close the connection.

const KS_WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const KS_MAX_HEADER = 16384;
const KS_MAX_BODY = 1048576;
const KS_MAX_FRAME = 1048576;

function reverb_log(string $line): void
{
    fwrite(STDOUT, gmdate('Y-m-d H:i:s') . " reverb: $line\n");
}

function reverb_write($sock, string $data): bool
{
    $deadline = microtime(true) + 5;
    while ($data !== '') {
        $n = @fwrite($sock, $data);
        if ($n === false) {
            return false;
        }
        if ($n > 0) {
            $data = substr($data, $n);
            continue;
        }
        if (microtime(true) > $deadline) {
            return false;
        }
        $r = null;
        $w = [$sock];
        $e = null;
        @stream_select($r, $w, $e, 0, 200000);
    }
    return true;
}

function reverb_frame(string $payload, int $opcode = 0x1): string
{
    $len = strlen($payload);
    $head = chr(0x80 | $opcode);
    if ($len < 126) {
        $head .= chr($len);
    } elseif ($len < 65536) {
        $head .= chr(126) . pack('n', $len);
    } else {
        $head .= chr(127) . pack('J', $len);
    }
    return $head . $payload;
}

function reverb_event(string $event, $data, ?string $channel = null): string
{
    $msg = ['event' => $event];
    if ($channel !== null) {
        $msg['channel'] = $channel;
    }
    // Pusher sends data as a JSON-encoded string.
    $msg['data'] = is_string($data) ? $data : json_encode($data, JSON_UNESCAPED_SLASHES);
    return reverb_frame(json_encode($msg, JSON_UNESCAPED_SLASHES));
}

function reverb_health(): int
{
    return file_exists(SAMPLE_ROOT . '/BROKEN') ? 500 : 200;
}

/** One complete websocket frame from $buf (consumed), or null when more bytes are needed. */
function reverb_parse_frame(string &$buf): ?array
{
    if (strlen($buf) < 2) {
        return null;
    }
    $b0 = ord($buf[0]);
    $b1 = ord($buf[1]);
    $len = $b1 & 0x7f;
    $off = 2;
    if ($len === 126) {
        if (strlen($buf) < 4) {
            return null;
        }
        $len = unpack('n', substr($buf, 2, 2))[1];
        $off = 4;
    } elseif ($len === 127) {
        if (strlen($buf) < 10) {
            return null;
        }
        $len = unpack('J', substr($buf, 2, 8))[1];
        $off = 10;
    }
    if ($len > KS_MAX_FRAME) {
        return ['opcode' => -1, 'payload' => ''];
    }
    $masked = ($b1 & 0x80) !== 0;
    $need = $off + ($masked ? 4 : 0) + $len;
    if (strlen($buf) < $need) {
        return null;
    }
    $mask = $masked ? substr($buf, $off, 4) : '';
    $payload = substr($buf, $off + ($masked ? 4 : 0), $len);
    if ($masked) {
        for ($i = 0; $i < $len; $i++) {
            $payload[$i] = chr(ord($payload[$i]) ^ ord($mask[$i % 4]));
        }
    }
    $buf = (string) substr($buf, $need);
    return ['opcode' => $b0 & 0x0f, 'payload' => $payload, 'masked' => $masked];
}

function reverb_http($sock, int $status, string $body, string $type = 'text/plain'): void
{
    $reasons = [200 => 'OK', 400 => 'Bad Request', 404 => 'Not Found', 405 => 'Method Not Allowed',
                413 => 'Payload Too Large', 426 => 'Upgrade Required', 500 => 'Internal Server Error',
                503 => 'Service Unavailable'];
    $reason = $reasons[$status] ?? 'Status';
    reverb_write($sock, "HTTP/1.1 $status $reason\r\nContent-Type: $type\r\nContent-Length: "
        . strlen($body) . "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n" . $body);
}

function reverb_serve(array $options): int
{
    $host = '0.0.0.0';
    $port = 8080;
    foreach ($options as $o) {
        if (str_starts_with($o, '--host=')) {
            $host = substr($o, 7);
        } elseif (str_starts_with($o, '--port=')) {
            $port = (int) substr($o, 7);
        }
    }
    if (!filter_var($host, FILTER_VALIDATE_IP) || $port < 1 || $port > 65535) {
        fwrite(STDERR, "reverb:start: --host must be an IP address and --port 1-65535\n");
        return 2;
    }
    $server = @stream_socket_server("tcp://$host:$port", $errno, $errstr);
    if ($server === false) {
        fwrite(STDERR, "reverb:start: cannot listen on $host:$port: $errstr\n");
        return 1;
    }
    stream_set_blocking($server, false);

    $stop = false;
    if (function_exists('pcntl_async_signals')) {
        pcntl_async_signals(true);
        $handler = function () use (&$stop) { $stop = true; };
        pcntl_signal(SIGTERM, $handler);
        pcntl_signal(SIGINT, $handler);
    }
    $hostname = gethostname();
    $commit = sample_commit();
    $appKey = sample_env('REVERB_APP_KEY');
    reverb_log("Starting server on $host:$port (keystone sample stand-in, $hostname, commit $commit)");

    $clients = []; // id => ['sock', 'buf', 'ws' => bool, 'socket_id', 'channels' => [name => true]]
    $drop = function (int $id) use (&$clients): void {
        if (isset($clients[$id])) {
            @fclose($clients[$id]['sock']);
            unset($clients[$id]);
        }
    };

    while (!$stop) {
        $read = [$server];
        foreach ($clients as $c) {
            $read[] = $c['sock'];
        }
        $write = null;
        $except = null;
        $n = @stream_select($read, $write, $except, 1);
        if ($n === false || $n === 0) {
            continue; // interrupted by a signal, or the 1 s tick
        }
        foreach ($read as $sock) {
            if ($sock === $server) {
                $conn = @stream_socket_accept($server, 0);
                if ($conn !== false) {
                    stream_set_blocking($conn, false);
                    $clients[(int) $conn] = ['sock' => $conn, 'buf' => '', 'ws' => false,
                                             'socket_id' => '', 'channels' => []];
                }
                continue;
            }
            $id = (int) $sock;
            if (!isset($clients[$id])) {
                continue;
            }
            $chunk = @fread($sock, 65536);
            if ($chunk === false || ($chunk === '' && feof($sock))) {
                $drop($id);
                continue;
            }
            $clients[$id]['buf'] .= $chunk;
            if ($clients[$id]['ws']) {
                while (isset($clients[$id]) && ($f = reverb_parse_frame($clients[$id]['buf'])) !== null) {
                    if ($f['opcode'] === -1 || !$f['masked']) {
                        reverb_write($sock, reverb_frame(pack('n', 1002), 0x8));
                        $drop($id);
                    } elseif ($f['opcode'] === 0x8) {
                        reverb_write($sock, reverb_frame(substr($f['payload'], 0, 2), 0x8));
                        $drop($id);
                    } elseif ($f['opcode'] === 0x9) {
                        reverb_write($sock, reverb_frame($f['payload'], 0xA));
                    } elseif ($f['opcode'] === 0x1) {
                        $msg = json_decode($f['payload'], true);
                        $event = is_array($msg) ? ($msg['event'] ?? '') : '';
                        if ($event === 'pusher:ping') {
                            reverb_write($sock, reverb_event('pusher:pong', '{}'));
                        } elseif ($event === 'pusher:subscribe') {
                            $channel = (string) ($msg['data']['channel'] ?? '');
                            if ($channel !== '' && strlen($channel) <= 200) {
                                $clients[$id]['channels'][$channel] = true;
                                reverb_write($sock, reverb_event('pusher_internal:subscription_succeeded', '{}', $channel));
                            }
                        } elseif ($event === 'pusher:unsubscribe') {
                            unset($clients[$id]['channels'][(string) ($msg['data']['channel'] ?? '')]);
                        }
                    }
                }
                continue;
            }
            // HTTP: wait for the whole head (and the body of a POST).
            $buf = $clients[$id]['buf'];
            $end = strpos($buf, "\r\n\r\n");
            if ($end === false) {
                if (strlen($buf) > KS_MAX_HEADER) {
                    reverb_http($sock, 400, "request head too large\n");
                    $drop($id);
                }
                continue;
            }
            $lines = explode("\r\n", substr($buf, 0, $end));
            $parts = explode(' ', array_shift($lines));
            $method = $parts[0] ?? '';
            $path = parse_url($parts[1] ?? '/', PHP_URL_PATH) ?: '/';
            $headers = [];
            foreach ($lines as $line) {
                if (str_contains($line, ':')) {
                    [$k, $v] = explode(':', $line, 2);
                    $headers[strtolower(trim($k))] = trim($v);
                }
            }
            $length = (int) ($headers['content-length'] ?? 0);
            if ($length > KS_MAX_BODY) {
                reverb_http($sock, 413, "body too large\n");
                $drop($id);
                continue;
            }
            if (strlen($buf) < $end + 4 + $length) {
                continue;
            }
            $body = substr($buf, $end + 4, $length);

            if ($path === '/up') {
                $status = reverb_health();
                reverb_http($sock, $status, $status === 200 ? "OK\n" : "broken on purpose\n");
                $drop($id);
            } elseif (preg_match('#^/app/([A-Za-z0-9_.-]{1,100})$#', $path, $m)) {
                $key = $headers['sec-websocket-key'] ?? '';
                if ($method !== 'GET' || stripos($headers['upgrade'] ?? '', 'websocket') === false
                        || $key === '') {
                    reverb_http($sock, 426, "websocket upgrade required\n");
                    $drop($id);
                    continue;
                }
                $accept = base64_encode(sha1($key . KS_WS_GUID, true));
                reverb_write($sock, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    . "Connection: Upgrade\r\nSec-WebSocket-Accept: $accept\r\n\r\n");
                if ($appKey !== null && $appKey !== '' && $m[1] !== $appKey) {
                    reverb_write($sock, reverb_event('pusher:error', ['code' => 4001,
                        'message' => 'Application does not exist']));
                    reverb_write($sock, reverb_frame(pack('n', 4001), 0x8));
                    $drop($id);
                    continue;
                }
                $socketId = random_int(1, 999999999) . '.' . random_int(1, 999999999);
                $clients[$id]['ws'] = true;
                $clients[$id]['socket_id'] = $socketId;
                $clients[$id]['buf'] = (string) substr($buf, $end + 4);
                reverb_write($sock, reverb_event('pusher:connection_established', [
                    'socket_id' => $socketId, 'activity_timeout' => 30,
                    'hostname' => $hostname, 'commit' => $commit]));
            } elseif (preg_match('#^/apps/[A-Za-z0-9_.-]{1,100}/events$#', $path)) {
                if ($method !== 'POST') {
                    reverb_http($sock, 405, "POST only\n");
                    $drop($id);
                    continue;
                }
                $event = json_decode($body, true);
                if (!is_array($event) || !isset($event['name'])) {
                    reverb_http($sock, 400, "{\"error\":\"name is required\"}", 'application/json');
                    $drop($id);
                    continue;
                }
                $channels = $event['channels'] ?? (isset($event['channel']) ? [$event['channel']] : []);
                foreach ($clients as $other) {
                    if (!$other['ws']) {
                        continue;
                    }
                    foreach ((array) $channels as $channel) {
                        if (isset($other['channels'][(string) $channel])) {
                            reverb_write($other['sock'], reverb_event((string) $event['name'],
                                $event['data'] ?? '{}', (string) $channel));
                        }
                    }
                }
                reverb_http($sock, 200, '{}', 'application/json');
                $drop($id);
            } else {
                reverb_http($sock, 404, "Not Found\n");
                $drop($id);
            }
        }
    }

    $open = 0;
    foreach ($clients as $id => $c) {
        if ($c['ws']) {
            reverb_write($c['sock'], reverb_frame(pack('n', 1001) . 'server shutting down', 0x8));
            $open++;
        }
        $drop($id);
    }
    fclose($server);
    reverb_log("Stopped: closed $open websocket connection(s) with 1001 (going away)");
    return 0;
}
