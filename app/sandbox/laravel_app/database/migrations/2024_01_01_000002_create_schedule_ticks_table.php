<?php

use Illuminate\Database\Migrations\Migration;
use Illuminate\Database\Schema\Blueprint;
use Illuminate\Support\Facades\Schema;

class CreateScheduleTicksTable extends Migration
{
    public function up()
    {
        Schema::create('schedule_ticks', function (Blueprint $table) {
            $table->id();
            $table->string('minute', 16);
            $table->string('hostname', 120);
            $table->timestamp('ran_at', 6);
        });
        // Written by each deploy's own migration (sample.push_laravel_commit adds one per
        // update commit): a migration that ran twice would leave two rows.
        Schema::create('deploy_marks', function (Blueprint $table) {
            $table->id();
            $table->string('mark', 80);
            $table->timestamp('created_at', 6)->useCurrent();
        });
    }

    public function down()
    {
        Schema::dropIfExists('deploy_marks');
        Schema::dropIfExists('schedule_ticks');
    }
}
