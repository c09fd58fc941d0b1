<?php

// Closure commands would go here; the scheduled command is App\Console\Commands\Tick.
