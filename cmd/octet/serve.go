package main

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/octet-dev/octet/configs"
	"github.com/octet-dev/octet/daemon"
)

const defaultConfig = "/etc/octet/octet.toml"

func serveCmd() *cobra.Command {
	var path, listen, socket, models, backend string
	cmd := &cobra.Command{
		Use:   "serve [--config PATH]",
		Short: "Serve the models of a folder over an OpenAI-compatible API (TCP and a Unix socket)",
		Long: `serve runs the octet daemon. It reads --config (default ` + defaultConfig + `; when that
default is absent, the built-in defaults apply), and the flags override the file, so
  octet serve --models ./models --listen 127.0.0.1:0 --socket /tmp/octet.sock
works with no config at all. SIGHUP re-reads the config; SIGTERM or SIGINT shuts down
gracefully (running generations finish within limits.shutdown_grace); a second one
stops at once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			explicit := cmd.Flags().Changed("config")
			f := cmd.Flags()
			load := func() (*configs.Config, error) {
				p := path
				if !explicit {
					if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
						p = ""
					}
				}
				cfg, err := configs.Load(p)
				if err != nil {
					return nil, err
				}
				if f.Changed("listen") {
					cfg.Listen.TCP = listen
				}
				if f.Changed("socket") {
					cfg.Listen.Socket = socket
				}
				if f.Changed("models") {
					cfg.Models.Dir = models
					if a, err := filepath.Abs(models); err == nil && models != "" {
						cfg.Models.Dir = a // the logs name the folder in full
					}
				}
				if f.Changed("backend") {
					cfg.Backend.Prefer = []string{backend}
				}
				return cfg, cfg.Validate("command line")
			}
			cfg, err := load()
			if err != nil {
				return err
			}
			// The first SIGTERM or SIGINT shuts down gracefully (main's
			// context); a second one ends the process at once.
			ctx := cmd.Context()
			stop := context.AfterFunc(ctx, func() { signal.Reset(os.Interrupt, syscall.SIGTERM) })
			defer stop()
			return daemon.Run(ctx, daemon.Options{Config: cfg, Reload: load, Version: version})
		},
	}
	f := cmd.Flags()
	f.StringVar(&path, "config", defaultConfig, "configuration file")
	f.StringVar(&listen, "listen", "", `TCP address host:port ("" disables TCP; port 0 picks one and logs it)`)
	f.StringVar(&socket, "socket", "", `Unix socket path ("" disables it)`)
	f.StringVar(&models, "models", "", "folder of GGUF model files")
	f.StringVar(&backend, "backend", "", "backend: auto, "+joinNames())
	return cmd
}
