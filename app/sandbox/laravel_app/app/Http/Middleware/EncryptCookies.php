<?php

namespace App\Http\Middleware;

use Illuminate\Cookie\Middleware\EncryptCookies as Middleware;

class EncryptCookies extends Middleware
{
    /** Every cookie is encrypted with APP_KEY (the session cookie included). */
    protected $except = [];
}
