<?php

use Illuminate\Http\Request;
use Illuminate\Support\Facades\Cookie;
use Illuminate\Support\Facades\DB;
use Illuminate\Support\Facades\Redis;
use Illuminate\Support\Facades\Storage;
use Illuminate\Support\Str;

// What is deployed and whether the attached services answer (the deploy tests read this).
Route::get('/', function () {
    $database = ['reachable' => false];
    try {
        $database = ['reachable' => true,
                     'migrations' => DB::table('migrations')->count()];
    } catch (\Throwable $e) {
        $database['error'] = class_basename($e);
    }
    $redis = ['reachable' => false, 'prefix' => config('database.redis.options.prefix')];
    try {
        $redis['hits'] = Redis::connection()->incr('hits');
        $redis['reachable'] = true;
    } catch (\Throwable $e) {
        $redis['error'] = Str::limit($e->getMessage(), 120);
    }
    $revision = base_path('REVISION');

    return response()->json([
        'app' => 'laravel',
        'laravel' => app()->version(),
        'commit' => env('KEYSTONE_COMMIT', file_exists($revision) ? trim(file_get_contents($revision)) : 'unknown'),
        'version' => trim((string) @file_get_contents(base_path('VERSION'))),
        'hostname' => gethostname(),
        'database' => $database,
        'redis' => $redis,
        'drivers' => ['session' => config('session.driver'), 'cache' => config('cache.default'),
                      'queue' => config('queue.default')],
    ]);
});

// A session (in Valkey, SESSION_DRIVER=redis) and an encrypted cookie, both under APP_KEY.
Route::get('/session', function (Request $request) {
    $fresh = ! $request->session()->has('visitor');
    if ($fresh) {
        $request->session()->put('visitor', Str::random(24));
    }
    $visitor = $request->session()->get('visitor');
    Cookie::queue('keystone_note', 'note-'.$visitor, 60 * 24);

    return response()->json([
        'visitor' => $visitor,
        'fresh' => $fresh,
        'note' => $request->cookie('keystone_note'),
    ]);
});

// An uploaded file, from storage/app (the environment's persistent storage volume).
Route::get('/files/{name}', function (string $name) {
    abort_unless(Storage::disk('local')->exists('uploads/'.$name), 404);

    return response(Storage::disk('local')->get('uploads/'.$name), 200)
        ->header('Content-Type', 'application/octet-stream');
})->where('name', '[A-Za-z0-9._-]{1,80}');
