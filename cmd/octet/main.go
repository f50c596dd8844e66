// Command octet is the edge inference daemon and its model tools. Each
// subcommand parses its flags and calls into the package that does the work.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
)

func main() {
	// The first SIGINT or SIGTERM stops the work and removes what it was
	// writing; a second one, default again, ends the process at once.
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	var got atomic.Value // the signal that stopped the work
	go func() {
		sig := <-sigs
		got.Store(sig)
		signal.Stop(sigs)
		cancel()
	}()
	err := rootCmd().ExecuteContext(ctx)
	sig, _ := got.Load().(os.Signal)
	os.Exit(exitCode(err, sig))
}

// exitCode reports err (nil: 0) and says what code the process ends with:
// 128 + the signal's number, as shells give a job a signal stopped (130
// for SIGINT, 143 for SIGTERM), when sig cut the work short; 1 for other
// errors.
func exitCode(err error, sig os.Signal) int {
	switch {
	case err == nil:
		return 0
	case sig != nil && errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "octet: interrupted")
		if s, ok := sig.(syscall.Signal); ok {
			return 128 + int(s)
		}
		return 130
	}
	fmt.Fprintln(os.Stderr, "octet:", err)
	return 1
}
