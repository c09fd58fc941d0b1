<?php

namespace App;

/** Marker class so composer's PSR-4 autoloader has something to map. */
final class Sample
{
    public const NAME = 'keystone-sample';
}
