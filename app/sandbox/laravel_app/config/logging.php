<?php

use Monolog\Handler\StreamHandler;

return [
    'default' => env('LOG_CHANNEL', 'stack'),

    'channels' => [
        'stack' => ['driver' => 'stack', 'channels' => ['single'], 'ignore_exceptions' => false],
        'single' => ['driver' => 'single', 'path' => storage_path('logs/laravel.log'),
                     'level' => env('LOG_LEVEL', 'debug')],
        'stderr' => ['driver' => 'monolog', 'level' => env('LOG_LEVEL', 'debug'),
                     'handler' => StreamHandler::class, 'with' => ['stream' => 'php://stderr']],
    ],
];
