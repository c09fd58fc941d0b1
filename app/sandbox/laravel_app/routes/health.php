<?php

use Illuminate\Support\Facades\Route;

// Laravel 11's /up health route, by hand on Laravel 8 (this file is absent in the no-/up variant).
Route::get('/up', function () {
    return response('ok', 200)->header('Content-Type', 'text/plain');
});
