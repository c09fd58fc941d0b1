<?php

// Laravel 8.83 and its dependencies from Debian's packages (php-laravel-framework in the base
// image). Debian's include_path has /usr/share/php; each package's autoload.php registers its
// classes, and Illuminate/autoload.php pulls in every dependency and the framework's helpers.
require_once '/usr/share/php/Illuminate/autoload.php';
