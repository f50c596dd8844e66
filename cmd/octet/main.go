// Command octet is the edge inference daemon and its model tools. Each
// subcommand parses its flags and calls into the package that does the work.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first SIGINT or SIGTERM stops the work and removes what it was
	// writing; a second one, default again, ends the process at once.
	go func() {
		<-ctx.Done()
		stop()
	}()
	err := rootCmd().ExecuteContext(ctx)
	stop()
	os.Exit(exitCode(err, ctx.Err() != nil))
}

// exitCode reports err (nil: 0) and says what code the process ends with:
// 130, as shells give a job stopped by SIGINT, when a signal cut the work
// short, 1 for other errors.
func exitCode(err error, signalled bool) int {
	switch {
	case err == nil:
		return 0
	case signalled && errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "octet: interrupted")
		return 130
	}
	fmt.Fprintln(os.Stderr, "octet:", err)
	return 1
}
