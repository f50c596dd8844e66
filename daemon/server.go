package daemon

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strconv"
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
	backend   string // the backend's name, with its device
	// stallLimit is /health's allowance for a request loop's progress:
	// the watchdog's interval, or 30 s without one.
	stallLimit time.Duration
	reload     func() error // nil when reload is impossible
	listeners  []string
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
		arrived := time.Now()
		ctx.Response.Header.Set("Server", "octet")
		ctx.Response.Header.Set("X-Request-Id", requestID(ctx))
		path := string(ctx.Path())
		rt, ok := routeOf(path)
		if !ok || (rt.admin && !unix) {
			rt, ok = route{name: "unknown"}, false
		}
		// A generation counts and logs itself once it runs; the
		// others, and a generation refused before, are done here.
		self := false
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("handler panicked", "request_id", ridOf(ctx), "panic", p, "stack", string(debug.Stack()))
				errInternal("internal error").write(ctx)
				self = false
			}
			if !self {
				s.countOther(ctx, rt.name, arrived)
			}
		}()
		cors := s.cors(ctx)
		if !ok {
			errNotFound(fmt.Sprintf("no such path: %s %s", ctx.Method(), path)).write(ctx)
			return
		}
		allow := rt.method + ", OPTIONS"
		if rt.method == "GET" {
			allow = "GET, HEAD, OPTIONS"
		}
		method := string(ctx.Method())
		if method == "OPTIONS" {
			s.options(ctx, allow, cors)
			return
		}
		if method != rt.method && !(method == "HEAD" && rt.method == "GET") {
			ctx.Response.Header.Set("Allow", allow)
			(&apiError{Status: 405, Type: "invalid_request_error", Code: "method_not_allowed",
				Msg: fmt.Sprintf("%s is not allowed on %s; use %s", method, path, rt.method)}).write(ctx)
			return
		}
		if !unix && rt.auth && !(rt.name == "metrics" && s.cfg.Load().Auth.PublicMetrics) {
			if e := s.authorize(ctx); e != nil {
				e.write(ctx)
				return
			}
		}
		self = rt.gen
		rt.serve(s, ctx)
	}
}

// cors adds the CORS headers to a response for a page of an allowed
// origin (auth.allowed_origins) and reports whether it did. Error answers
// carry them too, so that the page can read why it was refused.
func (s *server) cors(ctx *fasthttp.RequestCtx) bool {
	allowed := s.cfg.Load().Auth.AllowedOrigins
	if len(allowed) == 0 {
		return false
	}
	h := &ctx.Response.Header
	origin := string(ctx.Request.Header.Peek("Origin"))
	expose := func() { h.Set("Access-Control-Expose-Headers", "X-Request-Id, X-Octet-Model-Sha256, Retry-After") }
	if slices.Contains(allowed, "*") {
		// The same headers with an Origin or without: a cache may keep one
		// answer for both.
		h.Set("Access-Control-Allow-Origin", "*")
		expose()
		return origin != ""
	}
	h.Add("Vary", "Origin") // the answer depends on it, for caches
	if origin == "" || !slices.Contains(allowed, origin) {
		return false
	}
	h.Set("Access-Control-Allow-Origin", origin)
	expose()
	return true
}

// options answers OPTIONS on a route: 204 with Allow, and for a CORS
// preflight from an allowed origin the methods and the headers its page
// asked for (an OpenAI SDK in a browser sends several of its own). A
// preflight needs no API key: browsers send none with it.
func (s *server) options(ctx *fasthttp.RequestCtx, allow string, cors bool) {
	h := &ctx.Response.Header
	h.Set("Allow", allow)
	if cors && len(ctx.Request.Header.Peek("Access-Control-Request-Method")) > 0 {
		h.Set("Access-Control-Allow-Methods", allow)
		if rh := ctx.Request.Header.Peek("Access-Control-Request-Headers"); len(rh) > 0 {
			h.Set("Access-Control-Allow-Headers", string(rh))
		}
		h.Set("Access-Control-Max-Age", "600")
	}
	ctx.SetStatusCode(204)
}

// countOther counts a response that no generation counted (any path's but
// a generation's that ran) in octet_requests_total, with no model, and logs
// it when it is an error.
func (s *server) countOther(ctx *fasthttp.RequestCtx, endpoint string, arrived time.Time) {
	status := ctx.Response.StatusCode()
	s.metrics.requests.WithLabelValues("", endpoint, strconv.Itoa(status)).Inc()
	if status >= 400 {
		msg := ""
		if e := errorOf(ctx); e != nil {
			msg = e.Msg
			if e.Code != "" {
				s.metrics.errors.WithLabelValues("", endpoint, e.Code).Inc()
			}
		}
		s.logRequest(errorLevel(status), ridOf(ctx), endpoint, "", status, arrived, msg,
			"method", string(ctx.Method()), "path", string(ctx.Path()), "remote", ctx.RemoteAddr().String())
	}
}

// requestID is the client's X-Request-Id when it is a plain token (letters,
// digits, "-", "_", ".", ":", at most 128), else a new random one. Every
// response carries it back, and the request's log line names it.
func requestID(ctx *fasthttp.RequestCtx) string {
	if v := ctx.Request.Header.Peek("X-Request-Id"); len(v) > 0 && len(v) <= 128 && plainToken(v) {
		return string(v)
	}
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func plainToken(v []byte) bool {
	for _, c := range v {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

// ridOf is the request id that the handler set on ctx's response.
func ridOf(ctx *fasthttp.RequestCtx) string { return string(ctx.Response.Header.Peek("X-Request-Id")) }

type route struct {
	name   string // its endpoint label in metrics and logs
	method string
	auth   bool // needs an API key on TCP
	admin  bool // Unix socket only
	gen    bool // a generation: counts and logs itself
	serve  func(*server, *fasthttp.RequestCtx)
}

var routes map[string]route

func init() {
	routes = map[string]route{
		"/v1/chat/completions": {name: "chat", method: "POST", auth: true, gen: true, serve: func(s *server, c *fasthttp.RequestCtx) { s.generate(c, true) }},
		"/v1/completions":      {name: "completions", method: "POST", auth: true, gen: true, serve: func(s *server, c *fasthttp.RequestCtx) { s.generate(c, false) }},
		"/v1/models":           {name: "models", method: "GET", auth: true, serve: (*server).listModels},
		"/v1/models/":          {name: "models", method: "GET", auth: true, serve: (*server).getModel},
		"/tokenize":            {name: "tokenize", method: "POST", auth: true, serve: (*server).tokenize},
		"/detokenize":          {name: "detokenize", method: "POST", auth: true, serve: (*server).detokenize},
		"/health":              {name: "health", method: "GET", serve: (*server).health},
		"/ready":               {name: "ready", method: "GET", serve: (*server).ready},
		"/metrics":             {name: "metrics", method: "GET", auth: true, serve: func(s *server, c *fasthttp.RequestCtx) { s.metrics.handler(c) }},
		"/admin/status":        {name: "admin", method: "GET", admin: true, serve: (*server).adminStatus},
		"/admin/reload":        {name: "admin", method: "POST", admin: true, serve: (*server).adminReload},
		"/admin/drain":         {name: "admin", method: "POST", admin: true, serve: (*server).adminDrain},
		"/admin/resume":        {name: "admin", method: "POST", admin: true, serve: (*server).adminResume},
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
		// The request's line says so; without request lines, this does.
		level := slog.LevelDebug
		if !s.cfg.Load().Log.Requests {
			level = slog.LevelInfo
		}
		s.log.Log(context.Background(), level, "wrong API key", "remote", ctx.RemoteAddr().String(), "request_id", ridOf(ctx), "key", secret(key))
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

// health answers 200 while the process serves HTTP and every model's
// request loop that has work moves; 503, naming the model, when one has
// made no progress for longer than the watchdog allows (its interval, or
// 30 s without one), so that a liveness probe outside systemd sees a
// stall too.
func (s *server) health(ctx *fasthttp.RequestCtx) {
	if problem := s.alive(s.stallLimit); problem != "" {
		writeJSON(ctx, 503, map[string]string{"status": "stalled", "problem": problem, "version": s.version})
		return
	}
	writeJSON(ctx, 200, map[string]string{"status": "ok", "version": s.version})
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
	last := ""
	if l := s.lastReload.Load(); l != nil {
		last = *l
	}
	writeJSON(ctx, 200, map[string]any{
		"version": s.version, "backend": s.backend, "uptime_s": time.Since(s.started).Seconds(), "draining": draining,
		"generations": running, "listeners": s.listeners, "config": orDefaults(cfg.File), "tuning": orDefaults(cfg.TuningFile),
		"models_dir": cfg.Models.Dir, "last_reload": last, "status": s.statusLine(),
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
	ctx.Response.Header.Set("Server", "octet")
	ctx.Response.Header.Set("X-Request-Id", requestID(ctx))
	s.cors(ctx) // a page sees why (413: max_body_bytes), not a CORS failure
	defer s.countOther(ctx, "http", time.Now())
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
