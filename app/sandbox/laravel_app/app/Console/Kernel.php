<?php

namespace App\Console;

use Illuminate\Console\Scheduling\Schedule;
use Illuminate\Foundation\Console\Kernel as ConsoleKernel;

class Kernel extends ConsoleKernel
{
    protected $commands = [
        Commands\Tick::class,
    ];

    protected function schedule(Schedule $schedule)
    {
        $schedule->command('keystone:tick')->everyMinute();
    }

    protected function commands()
    {
        require base_path('routes/console.php');
    }
}
