<?php

namespace App\Providers;

use Illuminate\Foundation\Support\Providers\RouteServiceProvider as ServiceProvider;
use Illuminate\Support\Facades\Route;

class RouteServiceProvider extends ServiceProvider
{
    public function boot()
    {
        $this->routes(function () {
            Route::prefix('api')
                ->middleware('api')
                ->group(base_path('routes/api.php'));

            Route::middleware('web')
                ->group(base_path('routes/web.php'));

            // Laravel 11's health route, added by hand: the "with /up" variant of the sample
            // has routes/health.php; the Laravel 8 variant has none, so Keystone falls back to /.
            if (file_exists(base_path('routes/health.php'))) {
                Route::group([], base_path('routes/health.php'));
            }
        });
    }
}
