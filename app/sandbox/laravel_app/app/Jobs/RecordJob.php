<?php

namespace App\Jobs;

use Illuminate\Bus\Queueable;
use Illuminate\Contracts\Queue\ShouldQueue;
use Illuminate\Foundation\Bus\Dispatchable;
use Illuminate\Queue\InteractsWithQueue;
use Illuminate\Queue\SerializesModels;
use Illuminate\Support\Facades\DB;

/** A queued job that records that it ran (and where), so a test can count runs per job. */
class RecordJob implements ShouldQueue
{
    use Dispatchable, InteractsWithQueue, Queueable, SerializesModels;

    public $tries = 3;

    public function __construct(public string $token)
    {
    }

    public function handle()
    {
        DB::table('job_runs')->insert([
            'token' => $this->token,
            'hostname' => gethostname(),
            'attempt' => $this->attempts(),
            'ran_at' => now(),
        ]);
    }
}
