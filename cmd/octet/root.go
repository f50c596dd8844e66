package main

import (
	"github.com/spf13/cobra"

	_ "github.com/octet-dev/octet/backends/ref" // registers the reference backend
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "octet",
		Short:         "octet serves int8 language models and builds them",
		Long:          "octet is an edge inference daemon for int8 GGUF models (llama family), with the tools that make its models.",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(generateCmd(), tokenizeCmd(), inspectCmd(), synthCmd(), serveCmd(), evalCmd(), quantizeCmd(), benchCmd(), pruneCmd())
	return root
}
