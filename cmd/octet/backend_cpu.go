package main

import _ "github.com/octet-dev/octet/backends/cpu" // registers the native CPU backend ("cpu")
