<?php

use App\Jobs\RecordJob;
use Illuminate\Http\Request;
use Illuminate\Support\Facades\DB;

// A row per POST (the load generator's writes: none lost, none twice).
Route::post('/items', function (Request $request) {
    $data = $request->validate(['name' => ['required', 'string', 'max:120']]);
    $id = DB::table('items')->insertGetId(['name' => $data['name'], 'created_at' => now()]);

    return response()->json(['id' => $id, 'name' => $data['name'], 'hostname' => gethostname()], 201);
});

// A job on the Redis queue (QUEUE_CONNECTION=redis), run by `php artisan queue:work`.
Route::post('/jobs', function (Request $request) {
    $data = $request->validate(['name' => ['required', 'regex:/^[A-Za-z0-9_-]{1,64}$/']]);
    RecordJob::dispatch($data['name']);

    return response()->json(['queued' => $data['name']], 202);
});

// A file upload, saved under storage/app/uploads and served back by GET /files/{name}.
Route::post('/upload', function (Request $request) {
    $request->validate(['file' => ['required', 'file', 'max:1024'],
                        'name' => ['required', 'regex:/^[A-Za-z0-9._-]{1,80}$/']]);
    $path = $request->file('file')->storeAs('uploads', $request->input('name'), 'local');

    return response()->json(['path' => $path, 'url' => '/files/'.$request->input('name'),
                             'hostname' => gethostname()], 201);
});
