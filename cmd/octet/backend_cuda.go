//go:build !nocuda

package main

import _ "github.com/octet-dev/octet/backends/cuda" // registers the CUDA backend (build with -tags nocuda to leave it out)
