//go:build !linux

package daemon

import "os"

// fileID: the journal is Linux's; elsewhere no stream is it.
func fileID(*os.File) string { return "" }
