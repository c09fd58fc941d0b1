<?php

namespace App\Console\Commands;

use Illuminate\Console\Command;
use Illuminate\Support\Facades\DB;

/** Scheduled every minute by the console kernel: one row per run, with its minute. */
class Tick extends Command
{
    protected $signature = 'keystone:tick';

    protected $description = 'Record one scheduler run (minute, host, time)';

    public function handle()
    {
        $now = now();
        DB::table('schedule_ticks')->insert([
            'minute' => $now->format('Y-m-d H:i'),
            'hostname' => gethostname(),
            'ran_at' => $now,
        ]);
        $this->info('tick '.$now->format('Y-m-d H:i:s'));

        return 0;
    }
}
