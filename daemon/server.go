package daemon

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/octet-dev/octet/configs"
)

// server holds what the handlers share.
type server struct {
	cfg     atomic.Pointer[configs.Config]
	log     *slog.Logger
	models  *Registry
	metrics *metrics
	gens    tracker
	// genCtx is the parent of every generation; it is cancelled with
	// errShutdown when the shutdown grace runs out.
	genCtx    context.Context
	genCancel context.CancelCauseFunc
	stopping  atomic.Bool
	started   time.Time
	version   string
	reload    func() error // nil when reload is impossible
	listeners []string
	// lastReload is the outcome of the last reload, for the status line.
	lastReload atomic.Pointer[string]
}

var (
	errShutdown   = errors.New("the server is shutting down")
	errClientGone = errors.New("the client disconnected")
	errTimeout    = errors.New("the request ran past limits.request_timeout")
)

// handler returns the request handler of one listener: the Unix socket
// serves the admin calls and needs no key; TCP checks the API keys.
func (s *server) handler(unix bool) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("handler panicked", "panic", p, "stack", string(debug.Stack()))
				errInternal("internal error").write(ctx)
			}
		}()
		ctx.Response.Header.Set("Server", "octet")
		path := string(ctx.Path())
		route, ok := routeOf(path)
		if !ok || (route.admin && !unix) {
			errNotFound(fmt.Sprintf("no such path: %s %s", ctx.Method(), path)).write(ctx)
			return
		}
		if method := string(ctx.Method()); method != route.method && !(method == "HEAD" && route.method == "GET") {
			allow := route.method
			if allow == "GET" {
				allow = "GET, HEAD"
			}
			ctx.Response.Header.Set("Allow", allow)
			(&apiError{Status: 405, Type: "invalid_request_error", Code: "method_not_allowed",
				Msg: fmt.Sprintf("%s is not allowed on %s; use %s", method, path, route.method)}).write(ctx)
			return
		}
		if !unix && route.auth {
			if e := s.authorize(ctx); e != nil {
				e.write(ctx)
				return
			}
		}
		route.serve(s, ctx)
	}
}

type route struct {
	method string
	auth   bool // needs an API key on TCP
	admin  bool // Unix socket only
	serve  func(*server, *fasthttp.RequestCtx)
}

var routes map[string]route

func init() {
	routes = map[string]route{
		"/v1/chat/completions": {"POST", true, false, func(s *server, c *fasthttp.RequestCtx) { s.generate(c, true) }},
		"/v1/completions":      {"POST", true, false, func(s *server, c *fasthttp.RequestCtx) { s.generate(c, false) }},
		"/v1/models":           {"GET", true, false, (*server).listModels},
		"/v1/models/":          {"GET", true, false, (*server).getModel},
		"/health":              {"GET", false, false, (*server).health},
		"/ready":               {"GET", false, false, (*server).ready},
		"/metrics":             {"GET", true, false, func(s *server, c *fasthttp.RequestCtx) { s.metrics.handler(c) }},
		"/admin/status":        {"GET", false, true, (*server).adminStatus},
		"/admin/reload":        {"POST", false, true, (*server).adminReload},
		"/admin/drain":         {"POST", false, true, (*server).adminDrain},
		"/admin/resume":        {"POST", false, true, (*server).adminResume},
	}
}

// secret is a value that must not reach the logs.
type secret string

func (secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// authorize checks the bearer key against the configured hashes (in
// constant time per hash). With no keys configured, TCP is open.
func (s *server) authorize(ctx *fasthttp.RequestCtx) *apiError {
	hashes := s.cfg.Load().Auth.Hashes
	if len(hashes) == 0 {
		return nil
	}
	key, sum, ok := bearer(ctx)
	if !ok {
		return &apiError{Status: 401, Type: "invalid_request_error", Code: "invalid_api_key",
			Msg: "no API key: send it as the header \"Authorization: Bearer KEY\""}
	}
	match := 0
	for _, want := range hashes {
		match |= subtle.ConstantTimeCompare(sum[:], want[:])
	}
	if match == 0 {
		s.log.Info("wrong API key", "remote", ctx.RemoteAddr().String(), "key", secret(key))
		return &apiError{Status: 401, Type: "invalid_request_error", Code: "invalid_api_key", Msg: "the API key is not valid"}
	}
	return nil
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		errInternal("cannot encode the response").write(ctx)
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

type modelInfo struct {
	ID            string `json:"id"`
	Object        string `json:"object"`
	Created       int64  `json:"created"`
	OwnedBy       string `json:"owned_by"`
	Path          string `json:"path"`
	ContextLength int    `json:"context_length"`
	ChatTemplate  string `json:"chat_template"`
	Int8          bool   `json:"int8"`
	LoadMs        int64  `json:"load_ms"`
	// SHA256 is the hex SHA-256 of the model file's bytes being served.
	SHA256   string   `json:"sha256"`
	LoadedAt string   `json:"loaded_at"` // RFC 3339, when this version went live
	Aliases  []string `json:"aliases"`
}

func (s *server) modelInfos() []modelInfo {
	out := []modelInfo{}
	s.models.Each(func(l *Loaded) {
		out = append(out, modelInfo{
			ID: l.Name, Object: "model", Created: l.LoadedAt.Unix(), OwnedBy: "octet", Path: l.Path,
			ContextLength: l.Context, ChatTemplate: string(l.Chat.Family), Int8: l.Quantized, LoadMs: l.LoadTime.Milliseconds(),
			SHA256: l.SHA256, LoadedAt: l.LoadedAt.UTC().Format(time.RFC3339Nano), Aliases: s.models.Aliases(l.Name),
		})
	})
	return out
}

func (s *server) listModels(ctx *fasthttp.RequestCtx) {
	writeJSON(ctx, 200, map[string]any{"object": "list", "data": s.modelInfos()})
}

// health answers 200 while the process serves HTTP at all.
func (s *server) health(ctx *fasthttp.RequestCtx) {
	writeJSON(ctx, 200, map[string]string{"status": "ok"})
}

// ready answers 200 only when completions can succeed: at least one model
// and not draining; 503 otherwise, saying why.
func (s *server) ready(ctx *fasthttp.RequestCtx) {
	n := s.models.Len()
	_, draining := s.gens.state()
	switch {
	case draining:
		writeJSON(ctx, 503, map[string]any{"status": "draining", "models": n})
	case n == 0:
		writeJSON(ctx, 503, map[string]any{"status": "no_models", "models": 0, "message": s.noModelsMessage()})
	default:
		writeJSON(ctx, 200, map[string]any{"status": "ready", "models": n})
	}
}

func (s *server) noModelsMessage() string {
	return fmt.Sprintf("no model is loaded: copy an int8 (Q8_0) GGUF file into %s; it goes live within seconds (the model's name is the file's stem)", s.cfg.Load().Models.Dir)
}

func (s *server) adminStatus(ctx *fasthttp.RequestCtx) {
	running, draining := s.gens.state()
	type engine struct {
		Name    string  `json:"name"`
		Queued  int     `json:"queued"`
		Running int     `json:"running"`
		Served  uint64  `json:"served"`
		KVUse   float64 `json:"kv_use"`
		BeatAge float64 `json:"beat_age_s"`
	}
	engines := []engine{}
	s.models.Each(func(l *Loaded) {
		st := l.Engine.Stats()
		kv := 0.0
		if st.KVBlocks > 0 {
			kv = float64(st.KVUsedBlocks) / float64(st.KVBlocks)
		}
		engines = append(engines, engine{l.Name, st.Queued, st.Running, st.Served, kv, time.Since(st.Beat).Seconds()})
	})
	cfg := s.cfg.Load()
	writeJSON(ctx, 200, map[string]any{
		"version": s.version, "uptime_s": time.Since(s.started).Seconds(), "draining": draining,
		"generations": running, "listeners": s.listeners, "config": cfg.File, "models_dir": cfg.Models.Dir,
		"models": s.modelInfos(), "engines": engines,
	})
}

func (s *server) adminReload(ctx *fasthttp.RequestCtx) {
	if s.reload == nil {
		writeJSON(ctx, 409, map[string]string{"status": "unavailable", "message": "this daemon has no config file to reload"})
		return
	}
	if err := s.reload(); err != nil {
		(&apiError{Status: 400, Type: "invalid_request_error", Code: "bad_config", Msg: err.Error()}).write(ctx)
		return
	}
	writeJSON(ctx, 200, map[string]string{"status": "reloaded"})
}

func (s *server) adminDrain(ctx *fasthttp.RequestCtx) {
	idle := s.gens.close()
	s.log.Info("draining: new generations are refused (POST /admin/resume to undo)")
	select {
	case <-idle:
		writeJSON(ctx, 200, map[string]string{"status": "drained"})
	default:
		running, _ := s.gens.state()
		writeJSON(ctx, 202, map[string]any{"status": "draining", "generations": running})
	}
}

func (s *server) adminResume(ctx *fasthttp.RequestCtx) {
	if s.stopping.Load() {
		writeJSON(ctx, 409, map[string]string{"status": "stopping"})
		return
	}
	s.gens.open()
	s.log.Info("drain ended: generations are accepted again")
	writeJSON(ctx, 200, map[string]string{"status": "ready"})
}

// errorHandler answers errors fasthttp meets before a handler runs, in the
// API's error shape.
func (s *server) errorHandler(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var timeout interface{ Timeout() bool }
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		(&apiError{Status: 413, Type: "invalid_request_error", Code: "request_too_large",
			Msg: fmt.Sprintf("the request body is larger than limits.max_body_bytes (%d bytes)", s.cfg.Load().Limits.MaxBodyBytes)}).write(ctx)
	case errors.As(err, &small):
		(&apiError{Status: 431, Type: "invalid_request_error", Code: "headers_too_large", Msg: "the request headers are too large"}).write(ctx)
	case errors.As(err, &timeout) && timeout.Timeout():
		(&apiError{Status: 408, Type: "invalid_request_error", Code: "request_timeout",
			Msg: fmt.Sprintf("the request was not received within limits.read_timeout (%s)", s.cfg.Load().Limits.ReadTimeout.D())}).write(ctx)
	default:
		(&apiError{Status: 400, Type: "invalid_request_error", Code: "bad_http", Msg: "the HTTP request is malformed: " + err.Error()}).write(ctx)
	}
}
