package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/octet-dev/octet/configs"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
	"github.com/octet-dev/octet/model/synth"
)

type chatResp struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Delta        map[string]string `json:"delta"`
		Text         *string           `json:"text"`
		FinishReason *string           `json:"finish_reason"`
	} `json:"choices"`
	Usage   *usage   `json:"usage"`
	Timings *timings `json:"timings"`
	Error   *struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	} `json:"error"`
}

// TestServeCurl: the same API over TCP and the Unix socket, with curl.
func TestServeCurl(t *testing.T) {
	dir, name := modelsDir(t)
	p := serve(t, nil, "--models", dir)
	for _, via := range [][]string{{p.url}, {"--unix-socket", p.sock, "http://localhost"}} {
		base := via[len(via)-1]
		opts := via[:len(via)-1]
		get := func(path string) (int, []byte) { return curl(t, append(opts, base+path)...) }
		post := func(path, body string) (int, []byte) {
			return curl(t, append(opts, "-H", "Content-Type: application/json", "-d", body, base+path)...)
		}
		if code, body := get("/health"); code != 200 || !strings.Contains(string(body), `"ok"`) {
			t.Errorf("%v /health: %d %s", via, code, body)
		}
		if code, body := get("/ready"); code != 200 || !strings.Contains(string(body), `"ready"`) {
			t.Errorf("%v /ready: %d %s", via, code, body)
		}
		code, body := get("/v1/models")
		var list struct {
			Object string `json:"object"`
			Data   []struct{ ID, Object string }
		}
		decodeJSON(t, body, &list)
		if code != 200 || list.Object != "list" || len(list.Data) != 1 || list.Data[0].ID != name {
			t.Errorf("%v /v1/models: %d %s", via, code, body)
		}

		code, body = post("/v1/chat/completions", chatReq(name, ""))
		var r chatResp
		decodeJSON(t, body, &r)
		if code != 200 || r.Object != "chat.completion" || r.Model != name || len(r.Choices) != 1 ||
			r.Choices[0].Message.Role != "assistant" || r.Choices[0].Message.Content == "" ||
			r.Usage == nil || r.Usage.CompletionTokens != 8 || r.Usage.TotalTokens != r.Usage.PromptTokens+8 ||
			r.Timings == nil || r.Timings.TTFTMs <= 0 || r.Timings.TokensPerS <= 0 || *r.Choices[0].FinishReason != "length" {
			t.Errorf("%v chat: %d %s", via, code, body)
		}
		want := r.Choices[0].Message.Content

		// The same request streamed gives the same text, in chunks, with usage last.
		code, body = post("/v1/chat/completions", chatReq(name, `,"stream":true,"stream_options":{"include_usage":true}`))
		events := sse(body)
		if code != 200 || len(events) < 4 || events[len(events)-1] != "[DONE]" {
			t.Fatalf("%v stream: %d %s", via, code, body)
		}
		var text strings.Builder
		var last chatResp
		for i, ev := range events[:len(events)-1] {
			var c chatResp
			decodeJSON(t, []byte(ev), &c)
			if c.Object != "chat.completion.chunk" || c.ID != events0ID(t, events) {
				t.Errorf("chunk %d: %s", i, ev)
			}
			if len(c.Choices) == 1 {
				text.WriteString(c.Choices[0].Delta["content"])
			}
			last = c
		}
		if text.String() != want {
			t.Errorf("%v streamed %q, non-streamed %q", via, text.String(), want)
		}
		if last.Usage == nil || last.Usage.CompletionTokens != 8 || len(last.Choices) != 0 {
			t.Errorf("%v last chunk is not the usage chunk: %s", via, events[len(events)-2])
		}

		// Logprobs: one entry per token, whose bytes make the text; under
		// greedy sampling each token is the likeliest of its step. The
		// streamed entries are the same.
		code, body = post("/v1/chat/completions", chatReq(name, `,"logprobs":true,"top_logprobs":2`))
		var lr struct {
			Choices []struct {
				Message  struct{ Content string }
				Logprobs struct{ Content []logprobEntry }
			}
		}
		decodeJSON(t, body, &lr)
		if code != 200 || len(lr.Choices) != 1 || lr.Choices[0].Message.Content != want {
			t.Fatalf("%v logprobs: %d %s", via, code, body)
		}
		checkLogprobs(t, lr.Choices[0].Logprobs.Content, want, 8, 2)
		code, body = post("/v1/chat/completions", chatReq(name, `,"logprobs":true,"top_logprobs":2,"stream":true`))
		var streamed []logprobEntry
		for _, ev := range sse(body) {
			var c struct {
				Choices []struct {
					Logprobs *struct{ Content []logprobEntry }
				}
			}
			if ev != "[DONE]" && json.Unmarshal([]byte(ev), &c) == nil && len(c.Choices) == 1 && c.Choices[0].Logprobs != nil {
				streamed = append(streamed, c.Choices[0].Logprobs.Content...)
			}
		}
		if code != 200 || fmt.Sprint(streamed) != fmt.Sprint(lr.Choices[0].Logprobs.Content) {
			t.Errorf("%v streamed logprobs %v, non-streamed %v", via, streamed, lr.Choices[0].Logprobs.Content)
		}

		// Completions, with a stop string cutting the text.
		code, body = post("/v1/completions", `{"model":"`+name+`","prompt":"Once upon a time","max_tokens":12,"temperature":0}`)
		decodeJSON(t, body, &r)
		if code != 200 || r.Object != "text_completion" || r.Choices[0].Text == nil || *r.Choices[0].Text == "" {
			t.Fatalf("%v completion: %d %s", via, code, body)
		}
		full := *r.Choices[0].Text
		code, body = post("/v1/completions", `{"model":"`+name+`","prompt":"Once upon a time","max_tokens":12,"temperature":0,"logprobs":3}`)
		var cl struct {
			Choices []struct {
				Text     string
				Logprobs struct {
					Tokens        []string
					TokenLogprobs []float64            `json:"token_logprobs"`
					TopLogprobs   []map[string]float64 `json:"top_logprobs"`
					TextOffset    []int                `json:"text_offset"`
				}
			}
		}
		decodeJSON(t, body, &cl)
		if lp := cl.Choices[0].Logprobs; code != 200 || cl.Choices[0].Text != full || strings.Join(lp.Tokens, "") != full ||
			len(lp.TokenLogprobs) != len(lp.Tokens) || len(lp.TopLogprobs) != len(lp.Tokens) || len(lp.TextOffset) != len(lp.Tokens) ||
			lp.TextOffset[0] != 0 || len(lp.TopLogprobs[0]) != 3 || lp.TopLogprobs[0][lp.Tokens[0]] != lp.TokenLogprobs[0] {
			t.Errorf("%v completion logprobs: %d %s", via, code, body)
		}
		if i := strings.Index(full[1:], " "); i >= 0 {
			stop := full[1+i : 1+i+2] // a space and the next character
			code, body = post("/v1/completions", `{"model":"`+name+`","prompt":"Once upon a time","max_tokens":12,"temperature":0,"stop":`+jsonString(stop)+`}`)
			decodeJSON(t, body, &r)
			if code != 200 || *r.Choices[0].Text != full[:strings.Index(full, stop)] || *r.Choices[0].FinishReason != "stop" {
				t.Errorf("%v stop %q: %d %s (full %q)", via, stop, code, body, full)
			}
		}
	}
	// Admin calls answer on the socket only.
	if code, body := curl(t, "--unix-socket", p.sock, "http://localhost/admin/status"); code != 200 || !strings.Contains(string(body), `"engines"`) ||
		!strings.Contains(string(body), `"last_reload":"model_add `) || !strings.Contains(string(body), `"backend":"`) || !strings.Contains(string(body), `"config":"(built-in defaults)"`) {
		t.Errorf("admin status on the socket: %d %s", code, body)
	}
	if code, _ := curl(t, p.url+"/admin/status"); code != 404 {
		t.Errorf("admin status over TCP: %d, want 404", code)
	}
	if code, head := curl(t, "-I", p.url+"/health"); code != 200 || !strings.Contains(string(head), "application/json") {
		t.Errorf("HEAD /health: %d %s", code, head)
	}
	code, body := curl(t, p.url+"/metrics")
	for _, m := range []string{
		`octet_requests_total{endpoint="chat",model="` + name + `",status="200"} 8`,
		`octet_tokens_total{kind="completion",model="` + name + `"}`,
		`octet_time_to_first_token_seconds_bucket{model="` + name + `"`,
		`octet_inter_token_latency_seconds_bucket{model="` + name + `"`,
		`octet_queue_waiting{model="` + name + `"} 0`,
		`octet_kv_cache_usage_ratio{model="` + name + `"}`,
		`octet_model_load_seconds{model="` + name + `"}`,
	} {
		if code != 200 || !strings.Contains(string(body), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	p.log.wait(t, `msg=request endpoint=chat model=`+name+` status=200 .*prompt_tokens=\d+ completion_tokens=8 ttft_ms=\d+`, time.Second)
	p.stop(t)
	if _, err := os.Stat(p.sock); !os.IsNotExist(err) {
		t.Errorf("socket file left behind: %v", err)
	}
}

type logprobEntry struct {
	Token   string
	Logprob float64
	Bytes   []byte
	Top     []struct {
		Token   string
		Logprob float64
	} `json:"top_logprobs"`
}

// checkLogprobs checks greedy logprobs: n entries whose bytes make text,
// each the likeliest of top alternatives.
func checkLogprobs(t *testing.T, lps []logprobEntry, text string, n, top int) {
	t.Helper()
	var b []byte
	for i, lp := range lps {
		b = append(b, lp.Bytes...)
		if lp.Logprob > 0 || len(lp.Top) != top || lp.Top[0].Token != lp.Token || lp.Top[0].Logprob != lp.Logprob || lp.Top[1].Logprob > lp.Logprob {
			t.Errorf("logprob %d: %+v", i, lp)
		}
	}
	// A token may end inside a UTF-8 sequence (byte tokens); the text shows
	// each byte that is not valid UTF-8 on its own as U+FFFD, as JSON does.
	if len(lps) != n || string([]rune(string(b))) != text {
		t.Errorf("%d logprobs making %q, want %d making %q", len(lps), b, n, text)
	}
}

func events0ID(t *testing.T, events []string) string {
	var c chatResp
	decodeJSON(t, []byte(events[0]), &c)
	return c.ID
}

func jsonString(s string) string { b, _ := json.Marshal(s); return string(b) }

// TestOpenAINodeClient: the official openai npm package, non-streamed and
// streamed.
func TestOpenAINodeClient(t *testing.T) {
	node, err := exec.LookPath("node")
	mod, _ := filepath.Abs("../.cache/node/node_modules")
	if _, serr := os.Stat(filepath.Join(mod, "openai")); err != nil || serr != nil {
		msg := "node or the openai package is absent (run .ci/setup.d/daemon.sh, which installs openai into .cache/node)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir, name := modelsDir(t)
	p := serve(t, nil, "--models", dir)
	cmd := exec.Command(node, "testdata/openai_client.cjs")
	cmd.Env = append(os.Environ(), "NODE_PATH="+mod, "OCTET_URL="+p.url, "OCTET_MODEL="+name, "OCTET_JSON_BIAS="+closingBias(t, filepath.Join(dir, name+".gguf")))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	var r struct {
		Models []string
		Chat   struct {
			Content, Role, Finish string
			Usage                 usage
			Logprobs, Top         int
		}
		Stream struct {
			Content, Finish, Role string
			Usage                 *usage
			Chunks                int
		}
		Completion struct{ Text, Finish string }
		JSON       struct {
			Closed, Parsed, Cut int
			Bad                 []string
		}
		Schema struct {
			Complete, Valid int
			Bad             []string
		}
		UnknownModel struct {
			Status int
			Type   string
		}
	}
	decodeJSON(t, out, &r)
	t.Logf("openai npm saw: %s", out)
	if len(r.Models) != 1 || r.Models[0] != name {
		t.Errorf("models %v", r.Models)
	}
	if r.Chat.Content == "" || r.Chat.Role != "assistant" || r.Chat.Finish != "length" || r.Chat.Usage.CompletionTokens != 16 ||
		r.Chat.Logprobs != 16 || r.Chat.Top != 2 {
		t.Errorf("chat %+v", r.Chat)
	}
	if r.Stream.Content != r.Chat.Content || r.Stream.Role != "assistant" || r.Stream.Finish != "length" ||
		r.Stream.Usage == nil || *r.Stream.Usage != r.Chat.Usage || r.Stream.Chunks < 4 {
		t.Errorf("stream %+v, chat %+v", r.Stream, r.Chat)
	}
	if r.Completion.Text == "" || r.Completion.Finish != "length" {
		t.Errorf("completion %+v", r.Completion)
	}
	if r.JSON.Closed == 0 || r.JSON.Parsed != r.JSON.Closed || len(r.JSON.Bad) > 0 {
		t.Errorf("response_format json_object: %+v", r.JSON)
	}
	if r.Schema.Complete == 0 || r.Schema.Valid != r.Schema.Complete || len(r.Schema.Bad) > 0 {
		t.Errorf("response_format json_schema: %+v", r.Schema)
	}
	if r.UnknownModel.Status != 404 || r.UnknownModel.Type != "invalid_request_error" {
		t.Errorf("unknown model %+v", r.UnknownModel)
	}
	p.stop(t)
}

// TestNoModels: a fresh install with an empty folder starts healthy, says
// where models go, and answers completions 503 with that advice.
func TestNoModels(t *testing.T) {
	dir := t.TempDir()
	p := serve(t, nil, "--models", dir)
	p.log.wait(t, `level=WARN msg="no models yet: drop GGUF files.*into the models folder.*dir=`+dir, time.Second)
	if code, _ := curl(t, p.url+"/health"); code != 200 {
		t.Errorf("/health %d", code)
	}
	if code, body := curl(t, p.url+"/ready"); code != 503 || !strings.Contains(string(body), `"no_models"`) || !strings.Contains(string(body), dir) {
		t.Errorf("/ready %d %s", code, body)
	}
	code, body := curl(t, "-d", chatReq("x", ""), p.url+"/v1/chat/completions")
	var r chatResp
	decodeJSON(t, body, &r)
	if code != 503 || r.Error == nil || r.Error.Code != "no_model" || !strings.Contains(r.Error.Message, dir) || !strings.Contains(r.Error.Message, "GGUF") {
		t.Errorf("chat with no models: %d %s", code, body)
	}
	if code, body := curl(t, p.url+"/v1/models"); code != 200 || string(body) != `{"data":[],"object":"list"}` {
		t.Errorf("/v1/models %d %s", code, body)
	}
	p.stop(t)
}

// TestUnquantized: an F32 model is refused unless allow_unquantized, and
// the log says which.
func TestUnquantized(t *testing.T) {
	f32, _ := filepath.Abs("../../shared/models/stories260K/stories260K-f32.gguf")
	if _, err := os.Stat(f32); err != nil {
		t.Skipf("%s is absent", f32)
	}
	dir := t.TempDir()
	os.Symlink(f32, filepath.Join(dir, "f32.gguf"))
	p := serve(t, nil, "--models", dir)
	p.log.wait(t, `level=ERROR msg="model not loaded" model=f32 .*is not int8.*allow_unquantized`, time.Second)
	p.stop(t)

	cfg := filepath.Join(t.TempDir(), "octet.toml")
	os.WriteFile(cfg, []byte("[models]\nallow_unquantized = true\n"), 0o644)
	p = serve(t, nil, "--config", cfg, "--models", dir)
	p.log.wait(t, `level=WARN msg="serving a model whose weights are not int8.*model=f32`, time.Second)
	if code, _ := curl(t, "-d", chatReq("f32", ""), p.url+"/v1/chat/completions"); code != 200 {
		t.Errorf("chat on the allowed F32 model: %d", code)
	}
	p.stop(t)
}

// A SIGTERM as soon as the daemon listens (before its servers may have
// started accepting) still stops it: once in a while the Shutdown of a
// server that had not yet registered its listener returned at once and the
// daemon never exited.
func TestStopRightAfterStart(t *testing.T) {
	dir := t.TempDir()
	for range 10 {
		serve(t, nil, "--models", dir).stop(t)
	}
}

// TestAuthAndReload: keys guard TCP, not the socket; SIGHUP swaps the keys.
func TestAuthAndReload(t *testing.T) {
	dir, name := modelsDir(t)
	cfgDir := t.TempDir()
	cfg := filepath.Join(cfgDir, "octet.toml")
	group, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Fatal(err)
	}
	writeKeys := func(keys ...string) {
		var hs []string
		for _, k := range keys {
			hs = append(hs, fmt.Sprintf(`"sha256:%x"`, configs.HashKey(k)))
		}
		os.WriteFile(cfg, []byte("[listen]\nsocket_mode = \"0600\"\nsocket_group = \""+group.Name+"\"\n"+
			"[auth]\napi_keys = ["+strings.Join(hs, ", ")+"]\n[log]\nlevel = \"info\"\n"), 0o644)
	}
	writeKeys("alpha")
	p := serve(t, nil, "--config", cfg, "--models", dir)
	// The socket has the configured mode and group.
	if fi, err := os.Stat(p.sock); err != nil || fi.Mode().Perm() != 0o600 || fi.Sys().(*syscall.Stat_t).Gid != uint32(os.Getgid()) {
		t.Errorf("socket %v: %v", fi.Mode(), err)
	}
	status := func(key string, unix bool) int {
		args := []string{"-d", chatReq(name, "")}
		if key != "" {
			args = append(args, "-H", "Authorization: Bearer "+key)
		}
		if unix {
			args = append(args, "--unix-socket", p.sock, "http://localhost/v1/chat/completions")
		} else {
			args = append(args, p.url+"/v1/chat/completions")
		}
		code, _ := curl(t, args...)
		return code
	}
	for _, c := range []struct {
		key  string
		unix bool
		want int
	}{{"", false, 401}, {"beta", false, 401}, {"alpha", false, 200}, {"", true, 200}} {
		if got := status(c.key, c.unix); got != c.want {
			t.Errorf("key %q unix %v: %d, want %d", c.key, c.unix, got, c.want)
		}
	}
	if code, _ := curl(t, p.url+"/health"); code != 200 {
		t.Errorf("/health needs no key, got %d", code)
	}
	if code, _ := curl(t, p.url+"/metrics"); code != 401 {
		t.Errorf("/metrics without a key over TCP: %d", code)
	}
	if strings.Contains(p.log.String(), "beta") {
		t.Error("the log holds a key")
	}
	writeKeys("beta")
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.log.wait(t, `msg="config reloaded"`, 10*time.Second)
	if got := status("beta", false); got != 200 {
		t.Errorf("new key after SIGHUP: %d", got)
	}
	if got := status("alpha", false); got != 401 {
		t.Errorf("old key after SIGHUP: %d", got)
	}
	// A broken config changes nothing.
	os.WriteFile(cfg, []byte("[auth]\napi_keys = 3\n"), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.log.wait(t, `msg="config reload failed; keeping the running config".*octet.toml:2: auth.api_keys`, 10*time.Second)
	if got := status("beta", false); got != 200 {
		t.Errorf("key after a failed reload: %d", got)
	}
	// The admin reload does the same as SIGHUP.
	writeKeys("gamma")
	if code, body := curl(t, "-X", "POST", "--unix-socket", p.sock, "http://localhost/admin/reload"); code != 200 {
		t.Errorf("admin reload: %d %s", code, body)
	}
	if got := status("gamma", false); got != 200 {
		t.Errorf("key after admin reload: %d", got)
	}
	// public_metrics opens /metrics, and only it, to scrapers without a key.
	b, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(b), "[auth]\n", "[auth]\npublic_metrics = true\n", 1)), 0o644)
	if code, body := curl(t, "-X", "POST", "--unix-socket", p.sock, "http://localhost/admin/reload"); code != 200 {
		t.Errorf("admin reload: %d %s", code, body)
	}
	if code, body := curl(t, p.url+"/metrics"); code != 200 || !strings.Contains(string(body), "octet_build_info") {
		t.Errorf("/metrics without a key, public_metrics on: %d", code)
	}
	if code, _ := curl(t, p.url+"/v1/models"); code != 401 {
		t.Errorf("/v1/models without a key, public_metrics on: %d", code)
	}
	p.stop(t)
}

// TestSocketActivation: systemd-socket-activate passes both listeners,
// named; the daemon serves on them and opens none of its own.
func TestSocketActivation(t *testing.T) {
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate is absent (Debian package systemd; .ci/setup.d/daemon.sh installs it)")
	}
	dir, name := modelsDir(t)
	// A free port: systemd-socket-activate needs a fixed address.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	sock := filepath.Join(shortTemp(t), "act.sock")
	p := start(t, nil, sa, "-l", addr, "-l", sock, "--fdname=http:unix", "-E", "OCTET_TEST=1",
		octet(t), "serve", "--models", dir, "--listen", "127.0.0.1:1", "--socket", filepath.Join(t.TempDir(), "unused.sock"))
	p.log.wait(t, `Listening on 127.0.0.1`, 10*time.Second)
	// The first connection starts the daemon.
	if code, body := curl(t, "-d", chatReq(name, ""), "http://"+addr+"/v1/chat/completions"); code != 200 {
		t.Fatalf("chat over the activated TCP socket: %d %s", code, body)
	}
	p.log.wait(t, `msg=listening network=tcp addr=`+addr+` from=systemd`, time.Second)
	p.log.wait(t, `msg=listening network=unix addr=`+sock+` from=systemd`, time.Second)
	if code, _ := curl(t, "--unix-socket", sock, "http://localhost/admin/status"); code != 200 {
		t.Errorf("admin over the activated Unix socket: %d", code)
	}
	p.stop(t)
}

// TestChatTemplates: each model's chat template comes from its GGUF
// metadata (tokenizer.chat_template); with two models, a request must name
// one.
func TestChatTemplates(t *testing.T) {
	dir, name := modelsDir(t)
	w, err := synth.Build(context.Background(), synth.Options{Shape: "tiny", Type: gguf.Q8_0, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	w.Set("tokenizer.chat_template", gguf.String("{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"))
	if err := w.WriteFile(filepath.Join(dir, "tiny-llama3.gguf")); err != nil {
		t.Fatal(err)
	}
	p := serve(t, nil, "--models", dir)
	code, body := curl(t, p.url+"/v1/models")
	var list struct {
		Data []struct {
			ID           string
			ChatTemplate string `json:"chat_template"`
		}
	}
	decodeJSON(t, body, &list)
	got := map[string]string{}
	for _, m := range list.Data {
		got[m.ID] = m.ChatTemplate
	}
	if code != 200 || len(got) != 2 || got["tiny-llama3"] != "llama3" || got[name] != "chatml" {
		t.Errorf("/v1/models: %d %s", code, body)
	}
	p.log.wait(t, `msg="model loaded" model=tiny-llama3 .*chat_template=llama3`, time.Second)
	if code, body := curl(t, "-d", chatReq("tiny-llama3", ""), p.url+"/v1/chat/completions"); code != 200 {
		t.Errorf("chat on the llama-3 model: %d %s", code, body)
	}
	code, body = curl(t, "-d", `{"messages":[{"role":"user","content":"hi"}]}`, p.url+"/v1/chat/completions")
	if code != 400 || !strings.Contains(string(body), `"param":"model"`) || !strings.Contains(string(body), `tiny-llama3`) {
		t.Errorf("chat without a model among two: %d %s", code, body)
	}
	p.stop(t)
}

// TestJSONLogs: with log.format = "json" every line is a JSON object, and
// each request has one line with its model, tokens, TTFT and status.
func TestJSONLogs(t *testing.T) {
	dir, name := modelsDir(t)
	cfg := filepath.Join(t.TempDir(), "octet.toml")
	os.WriteFile(cfg, []byte("[log]\nformat = \"json\"\nlevel = \"debug\"\n"), 0o644)
	sock := filepath.Join(shortTemp(t), "o.sock")
	p := start(t, nil, octet(t), "serve", "--config", cfg, "--models", dir, "--listen", "127.0.0.1:0", "--socket", sock)
	addr := p.log.wait(t, `"msg":"listening","network":"tcp","addr":"(127\.0\.0\.1:\d+)"`, 30*time.Second)[1]
	p.log.wait(t, `"msg":"ready"`, 30*time.Second)
	if code, body := curl(t, "-d", chatReq(name, ""), "http://"+addr+"/v1/chat/completions"); code != 200 {
		t.Fatalf("chat: %d %s", code, body)
	}
	line := p.log.wait(t, `^\{.*"msg":"request".*\}$`, 10*time.Second)[0]
	var req struct {
		Level, Model     string
		Status           int
		PromptTokens     int    `json:"prompt_tokens"`
		CompletionTokens int    `json:"completion_tokens"`
		TTFT             *int64 `json:"ttft_ms"`
	}
	decodeJSON(t, []byte(line), &req)
	if req.Model != name || req.Status != 200 || req.PromptTokens == 0 || req.CompletionTokens != 8 || req.TTFT == nil || req.Level != "INFO" {
		t.Errorf("request line %s", line)
	}
	p.stop(t)
	for _, l := range strings.Split(p.log.String(), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Errorf("log line is not JSON: %q", l)
		}
	}
}

// apiDaemon is an in-process daemon for the API tests: one key ("k") on
// TCP, limits.max_tokens 24, and a sidecar giving the model the alias
// "acme/default".
type apiDaemon struct {
	*inproc
	name string
	hc   *http.Client
}

func startAPIDaemon(t *testing.T, edit func(*configs.Config)) *apiDaemon {
	t.Helper()
	d := runInProcess(t, func(c *configs.Config) {
		c.Auth.Hashes = [][sha256.Size]byte{configs.HashKey("k")}
		c.Limits.MaxTokens, c.Limits.DefaultMaxTokens = 24, 24
		ggufs, _ := filepath.Glob(filepath.Join(c.Models.Dir, "*.gguf"))
		for _, f := range ggufs {
			os.WriteFile(strings.TrimSuffix(f, ".gguf")+".toml", []byte("aliases = [\"acme/default\"]\n"), 0o644)
		}
		if edit != nil {
			edit(c)
		}
	})
	return &apiDaemon{inproc: d, name: d.model(), hc: &http.Client{Timeout: 30 * time.Second}}
}

// do sends a request with the key under the scheme auth ("Bearer" when
// empty) and returns the response and its body.
func (d *apiDaemon) do(t *testing.T, method, path, auth, body string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+d.addr+path, strings.NewReader(body))
	if auth == "" {
		auth = "Bearer"
	}
	req.Header.Set("Authorization", auth+" k")
	resp, err := d.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

type apiErrorResp struct {
	Error *struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// wantError checks an OpenAI error answer of that status, param and code
// ("" for either: not checked).
func wantError(t *testing.T, what string, resp *http.Response, body []byte, status int, param, code string) {
	t.Helper()
	var e apiErrorResp
	if resp.StatusCode != status || json.Unmarshal(body, &e) != nil || e.Error == nil || e.Error.Message == "" ||
		(param != "" && (e.Error.Param == nil || *e.Error.Param != param)) || (code != "" && (e.Error.Code == nil || *e.Error.Code != code)) {
		t.Errorf("%s: %d %s; want %d param %q code %q", what, resp.StatusCode, body, status, param, code)
	}
}

// TestAPICompat: the behaviours OpenAI's and vLLM's clients rely on, each
// against the real server.
func TestAPICompat(t *testing.T) {
	d := startAPIDaemon(t, nil)
	chat := func(extra string) string {
		return `{"model":"` + d.name + `","messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":24,"ignore_eos":true` + extra + `}`
	}
	answer := func(t *testing.T, body string) (string, chatResp) {
		t.Helper()
		resp, b := d.do(t, "POST", "/v1/chat/completions", "", body)
		var r chatResp
		if resp.StatusCode != 200 || json.Unmarshal(b, &r) != nil || len(r.Choices) != 1 || r.Usage == nil {
			t.Fatalf("%s: %d %s", body, resp.StatusCode, b)
		}
		return r.Choices[0].Message.Content, r
	}

	t.Run("top_p_0", func(t *testing.T) {
		greedy, _ := answer(t, chat(`,"temperature":0`))
		for seed := range 3 {
			if got, _ := answer(t, chat(fmt.Sprintf(`,"temperature":1,"top_p":0,"seed":%d`, seed))); got != greedy {
				t.Errorf("top_p 0, seed %d: %q; greedy %q", seed, got, greedy)
			}
		}
	})

	t.Run("max_tokens_clamped", func(t *testing.T) {
		for _, f := range []string{`"max_tokens":8192`, `"max_completion_tokens":16384`} {
			body := `{"model":"` + d.name + `","messages":[{"role":"user","content":"Once upon a time"}],"ignore_eos":true,` + f + `}`
			if _, r := answer(t, body); r.Usage.CompletionTokens != 24 || *r.Choices[0].FinishReason != "length" {
				t.Errorf("%s: %d tokens, finish %s; want the server's 24, length", f, r.Usage.CompletionTokens, *r.Choices[0].FinishReason)
			}
		}
		resp, b := d.do(t, "POST", "/v1/chat/completions", "", chat(`,"max_tokens":0`))
		wantError(t, "max_tokens 0", resp, b, 400, "max_tokens", "")
	})

	t.Run("unsupported_fields", func(t *testing.T) {
		compl := func(extra string) string {
			return `{"model":"` + d.name + `","prompt":"Once upon a time","max_tokens":4` + extra + `}`
		}
		for _, c := range []struct {
			path, body, param string
		}{
			{"/v1/completions", compl(`,"suffix":"The end."`), "suffix"},
			{"/v1/completions", compl(`,"min_tokens":3`), "min_tokens"},
			{"/v1/chat/completions", chat(`,"min_tokens":3`), "min_tokens"},
			{"/v1/chat/completions", chat(`,"repetition_penalty":1.5,"repeat_penalty":1.2`), "repetition_penalty"},
			{"/v1/chat/completions", chat(`,"repetition_penalty":11`), "repetition_penalty"},
		} {
			resp, b := d.do(t, "POST", c.path, "", c.body)
			wantError(t, c.body, resp, b, 400, c.param, "")
		}
		for _, c := range []struct{ path, body string }{
			{"/v1/completions", compl(`,"suffix":"","min_tokens":0`)},
			{"/v1/chat/completions", chat(`,"suffix":null,"min_tokens":0,"repetition_penalty":1.5,"repeat_penalty":1.5`)},
		} {
			if resp, b := d.do(t, "POST", c.path, "", c.body); resp.StatusCode != 200 {
				t.Errorf("%s: %d %s", c.body, resp.StatusCode, b)
			}
		}
		// repetition_penalty is repeat_penalty: it changes a greedy answer
		// as repeat_penalty does.
		plain, _ := answer(t, chat(`,"temperature":0`))
		llama, _ := answer(t, chat(`,"temperature":0,"repeat_penalty":2`))
		vllm, _ := answer(t, chat(`,"temperature":0,"repetition_penalty":2`))
		if llama == plain {
			t.Fatalf("repeat_penalty 2 changes nothing here (%q): the test needs another prompt", plain)
		}
		if vllm != llama {
			t.Errorf("repetition_penalty 2: %q; repeat_penalty 2: %q", vllm, llama)
		}
	})

	t.Run("error_headers", func(t *testing.T) {
		resp, b := d.do(t, "GET", "/v1/chat/completions", "", "")
		wantError(t, "GET on chat", resp, b, 405, "", "method_not_allowed")
		if got := resp.Header.Get("Allow"); got != "POST, OPTIONS" {
			t.Errorf("405 Allow: %q, want POST, OPTIONS", got)
		}
		if got := resp.Header.Get("Server"); got != "octet" {
			t.Errorf("405 Server: %q", got)
		}
		// An error after the model is known says which version refused.
		long := strings.Repeat("once upon a time there was a dog ", 200)
		resp, b = d.do(t, "POST", "/v1/completions", "", `{"model":"`+d.name+`","prompt":`+jsonString(long)+`}`)
		wantError(t, "completion prompt too long", resp, b, 400, "prompt", "context_length_exceeded")
		if len(resp.Header.Get("X-Octet-Model-Sha256")) != 64 {
			t.Errorf("error reply without X-Octet-Model-Sha256: %v", resp.Header)
		}
		resp, b = d.do(t, "POST", "/v1/chat/completions", "", `{"model":"`+d.name+`","messages":[{"role":"user","content":`+jsonString(long)+`}]}`)
		wantError(t, "chat prompt too long", resp, b, 400, "messages", "context_length_exceeded")
	})

	t.Run("bearer_scheme_case", func(t *testing.T) {
		for _, c := range []struct {
			auth string
			want int
		}{{"Bearer", 200}, {"bearer", 200}, {"BEARER", 200}, {"bEaReR ", 200}, {"Basic", 401}, {"Bearerk", 401}} {
			resp, b := d.do(t, "GET", "/v1/models", c.auth, "")
			if resp.StatusCode != c.want {
				t.Errorf("Authorization: %s k: %d %s, want %d", c.auth, resp.StatusCode, b, c.want)
			}
		}
	})

	t.Run("model_retrieve", func(t *testing.T) {
		_, b := d.do(t, "GET", "/v1/models", "", "")
		var list struct{ Data []map[string]any }
		decodeJSON(t, b, &list)
		if len(list.Data) != 1 {
			t.Fatalf("/v1/models: %s", b)
		}
		want, _ := json.Marshal(list.Data[0])
		for _, id := range []string{d.name, "acme/default", "acme%2Fdefault"} {
			resp, b := d.do(t, "GET", "/v1/models/"+id, "", "")
			var got map[string]any
			if resp.StatusCode != 200 || json.Unmarshal(b, &got) != nil {
				t.Errorf("GET /v1/models/%s: %d %s", id, resp.StatusCode, b)
				continue
			}
			if g, _ := json.Marshal(got); string(g) != string(want) {
				t.Errorf("GET /v1/models/%s: %s; the list's entry: %s", id, g, want)
			}
		}
		for _, id := range []string{"gpt-4", "acme/other", ""} {
			resp, b := d.do(t, "GET", "/v1/models/"+id, "", "")
			wantError(t, "GET /v1/models/"+id, resp, b, 404, "model", "model_not_found")
		}
		resp, b := d.do(t, "GET", "/v1/models/"+d.name, "-", "")
		wantError(t, "GET /v1/models/{id} without a key", resp, b, 401, "", "invalid_api_key")
	})

	t.Run("usage_null_before_usage_chunk", func(t *testing.T) {
		for _, include := range []bool{true, false} {
			_, b := d.do(t, "POST", "/v1/chat/completions", "", chat(fmt.Sprintf(`,"max_tokens":4,"stream":true,"stream_options":{"include_usage":%v}`, include)))
			events := sse(b)
			if len(events) < 3 || events[len(events)-1] != "[DONE]" {
				t.Fatalf("stream: %s", b)
			}
			chunks := events[:len(events)-1]
			if include {
				chunks = chunks[:len(chunks)-1] // the usage chunk
			}
			for _, ev := range chunks {
				var c map[string]json.RawMessage
				decodeJSON(t, []byte(ev), &c)
				if u, has := c["usage"]; include && string(u) != "null" || !include && has {
					t.Errorf("include_usage %v: chunk %s", include, ev)
				}
			}
		}
	})
}

// TestRequestTimeout: a generation still running at limits.request_timeout
// ends as an answer cut there (200, finish_reason "length", its tokens
// counted), streamed or not; one that had produced no token is a 503 with
// Retry-After, never the 408 that OpenAI's SDKs retry.
func TestRequestTimeout(t *testing.T) {
	d := startAPIDaemon(t, func(c *configs.Config) {
		c.Limits.RequestTimeout = configs.Duration(time.Second)
		c.Limits.MaxTokens = 100
	})
	t.Cleanup(func() { stepDelay.Store(0) })
	body := func(extra string) string {
		return `{"model":"` + d.name + `","prompt":"Once upon a time","max_tokens":100,"ignore_eos":true,"temperature":0` + extra + `}`
	}

	stepDelay.Store(int64(30 * time.Millisecond)) // about 33 tokens in the second
	t.Run("after tokens", func(t *testing.T) {
		t.Run("whole", func(t *testing.T) {
			t.Parallel()
			resp, b := d.do(t, "POST", "/v1/completions", "", body(""))
			var r chatResp
			if resp.StatusCode != 200 || json.Unmarshal(b, &r) != nil || len(r.Choices) != 1 || r.Usage == nil {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
			if n := r.Usage.CompletionTokens; n < 5 || n >= 100 || *r.Choices[0].FinishReason != "length" || *r.Choices[0].Text == "" ||
				r.Usage.TotalTokens != r.Usage.PromptTokens+n {
				t.Errorf("cut answer: %s", b)
			}
		})
		t.Run("stream", func(t *testing.T) {
			t.Parallel()
			resp, b := d.do(t, "POST", "/v1/completions", "", body(`,"stream":true,"stream_options":{"include_usage":true}`))
			events := sse(b)
			if resp.StatusCode != 200 || len(events) < 4 || events[len(events)-1] != "[DONE]" || strings.Contains(string(b), `"error"`) {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
			var fin, use chatResp
			decodeJSON(t, []byte(events[len(events)-3]), &fin)
			decodeJSON(t, []byte(events[len(events)-2]), &use)
			texts := 0
			for _, ev := range events[:len(events)-3] {
				var c chatResp
				if decodeJSON(t, []byte(ev), &c); len(c.Choices) == 1 && *c.Choices[0].Text != "" {
					texts++
				}
			}
			if len(fin.Choices) != 1 || fin.Choices[0].FinishReason == nil || *fin.Choices[0].FinishReason != "length" ||
				use.Usage == nil || use.Usage.CompletionTokens < texts || use.Usage.CompletionTokens >= 100 || texts < 5 {
				t.Errorf("cut stream (%d text chunks): %s", texts, b)
			}
		})
	})
	d.log.wait(t, `msg=request endpoint=completions model=\S+ status=200 .*stream=false .*finish=length cut_by=request_timeout`, time.Second)
	d.log.wait(t, `msg=request endpoint=completions model=\S+ status=200 .*stream=true .*finish=length cut_by=request_timeout`, time.Second)

	stepDelay.Store(int64(time.Minute)) // the prompt's step outlasts the timeout
	t.Run("before tokens", func(t *testing.T) {
		t.Run("whole", func(t *testing.T) {
			t.Parallel()
			resp, b := d.do(t, "POST", "/v1/completions", "", body(""))
			wantError(t, "timeout before the first token", resp, b, 503, "", "request_timeout")
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
				t.Errorf("503 Retry-After %q", resp.Header.Get("Retry-After"))
			}
		})
		t.Run("stream", func(t *testing.T) {
			t.Parallel()
			resp, b := d.do(t, "POST", "/v1/completions", "", body(`,"stream":true`))
			if resp.StatusCode != 200 { // still queued when it timed out: refused before its stream began
				wantError(t, "stream timed out in the queue", resp, b, 503, "", "request_timeout")
				return
			}
			// Taken from the queue (its prompt's step outlasting the
			// timeout): the stream began, and ends with the error.
			events := sse(b)
			var e apiErrorResp
			if len(events) != 2 || events[1] != "[DONE]" || json.Unmarshal([]byte(events[0]), &e) != nil ||
				e.Error == nil || e.Error.Code == nil || *e.Error.Code != "request_timeout" {
				t.Errorf("stream timed out before its first token: %s", b)
			}
		})
	})
	d.log.wait(t, `msg=request endpoint=completions model=\S+ status=503 .*stream=true .*completion_tokens=0`, time.Second)
}

// TestLogitBias: logit_bias is added to the logits before the token is
// chosen, greedy or sampled, streamed or not: 100 on one token makes every
// token that one; -100 on every token but one does the same.
func TestLogitBias(t *testing.T) {
	d := startAPIDaemon(t, nil)
	m, err := model.Load(regexpFind(d.log.String(), `msg="model loaded" .*path=(\S+)`))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok := m.Tok
	forced := int32(-1)
	for id := range int32(tok.Len()) { // a plain word piece
		if b := tok.TokenBytes(id, false); len(b) >= 3 && b[0] == ' ' && !tok.IsEOG(id) && strings.Trim(string(b[1:]), "abcdefghijklmnopqrstuvwxyz") == "" {
			forced = id
			break
		}
	}
	if forced < 0 {
		t.Fatal("no word piece in the vocabulary")
	}
	want := strings.Repeat(string(tok.TokenBytes(forced, false)), 5)
	ban := map[string]float64{}
	for id := range tok.Len() {
		if int32(id) != forced {
			ban[strconv.Itoa(id)] = -100
		}
	}
	banJSON, _ := json.Marshal(ban)
	for _, c := range []struct{ name, extra string }{
		{"greedy +100", fmt.Sprintf(`,"logit_bias":{"%d":100}`, forced)},
		{"sampled +100", fmt.Sprintf(`,"temperature":1,"seed":5,"logit_bias":{"%d":100}`, forced)},
		{"greedy, all others -100", `,"logit_bias":` + string(banJSON)},
		{"sampled, all others -100", `,"temperature":1.5,"seed":9,"logit_bias":` + string(banJSON)},
	} {
		for _, stream := range []bool{false, true} {
			body := `{"model":"` + d.name + `","prompt":"Once upon a time","max_tokens":5,"temperature":0,"ignore_eos":true` + c.extra + fmt.Sprintf(`,"stream":%v}`, stream)
			resp, b := d.do(t, "POST", "/v1/completions", "", body)
			text := ""
			if stream {
				for _, ev := range sse(b) {
					var ch struct{ Choices []struct{ Text string } }
					if json.Unmarshal([]byte(ev), &ch) == nil && len(ch.Choices) > 0 {
						text += ch.Choices[0].Text
					}
				}
			} else {
				var r struct{ Choices []struct{ Text string } }
				if json.Unmarshal(b, &r) == nil && len(r.Choices) == 1 {
					text = r.Choices[0].Text
				}
			}
			if resp.StatusCode != 200 || text != want {
				t.Errorf("%s, stream %v: %d %q, want %q (%s)", c.name, stream, resp.StatusCode, text, want, b)
			}
		}
	}
	// Without a bias the greedy answer is another (the test would not
	// tell otherwise).
	_, b := d.do(t, "POST", "/v1/completions", "", `{"model":"`+d.name+`","prompt":"Once upon a time","max_tokens":5,"temperature":0,"ignore_eos":true}`)
	if strings.Contains(string(b), want) {
		t.Errorf("the unbiased answer is the forced one: %s", b)
	}
	d.stop(t)
}

// TestJSONMode: response_format json_object gives one JSON object, streamed
// or not alike for a seed, ending "stop" when it closes; a cut answer is
// the start of one.
func TestJSONMode(t *testing.T) {
	d := startAPIDaemon(t, func(c *configs.Config) { c.Limits.MaxTokens = 200 })
	closed := constrainedAnswers(t, d, 6, func(int) string { return `{"type":"json_object"}` }, func(text string) bool {
		var v map[string]any
		return json.Unmarshal([]byte(text), &v) == nil
	})
	if closed == 0 {
		t.Error("no answer closed its object")
	}
	d.stop(t)
}

// closingBias is a logit_bias (as JSON) that favours the tokens ending a
// string or an object in the model at path: the tiny test model writes
// long strings, and under the bias its JSON answers close within its
// context.
// TestJSONSchema: response_format json_schema (OpenAI's shape, and
// llama.cpp's json_object with a schema) holds answers to the schema's
// texts: the properties in order, required ones there, types kept, the
// answer ending "stop" once complete; streamed alike. A schema octet cannot
// honour is a 400 that says why.
func TestJSONSchema(t *testing.T) {
	d := startAPIDaemon(t, func(c *configs.Config) { c.Limits.MaxTokens = 200 })
	schema := `{"type":"object","properties":{"name":{"type":"string"},"n":{"type":"integer"},"ok":{"type":"boolean"},"kind":{"enum":["a","b"]}},"required":["name","n","ok"]}`
	shape := regexp.MustCompile(`^\{ ?"name": ?"(?:[^"\\]|\\.)*", ?"n": ?-?\d+, ?"ok": ?(?:true|false)(?:, ?"kind": ?"[ab]")? ?\}$`)
	complete := constrainedAnswers(t, d, 4, func(seed int) string {
		if seed%2 == 1 {
			return fmt.Sprintf(`{"type":"json_object","schema":%s}`, schema)
		}
		return fmt.Sprintf(`{"type":"json_schema","json_schema":{"name":"thing","strict":true,"schema":%s}}`, schema)
	}, func(text string) bool { return shape.MatchString(text) && json.Valid([]byte(text)) })
	if complete == 0 {
		t.Error("no answer was complete")
	}
	for _, c := range []struct{ format, why string }{
		{`{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"string","pattern":"^a"}}}`, `pattern`},
		{`{"type":"json_schema","json_schema":{"name":"a"}}`, "json_schema.schema"},
		{`{"type":"json_schema","json_schema":{"name":"a","schema":{"$ref":"#/$defs/x"}}}`, "names nothing"},
		{`{"type":"grammar"}`, "json_schema"},
	} {
		resp, b := d.do(t, "POST", "/v1/chat/completions", "", `{"model":"`+d.name+`","messages":[{"role":"user","content":"x"}],"response_format":`+c.format+`}`)
		wantError(t, c.format, resp, b, 400, "response_format", "")
		if !strings.Contains(string(b), c.why) {
			t.Errorf("%s: the error does not say %q: %s", c.format, c.why, b)
		}
	}
	d.stop(t)
}

// constrainedAnswers asks for chat answers in the response_format
// format(seed), whole and streamed, with closingBias, and checks each: one
// that ended "stop" is valid, one cut at max_tokens begins an object, and
// the streamed text is the whole one. It returns how many were complete.
func constrainedAnswers(t *testing.T, d *apiDaemon, seeds int, format func(seed int) string, valid func(text string) bool) int {
	t.Helper()
	bias := closingBias(t, regexpFind(d.log.String(), `msg="model loaded" .*path=(\S+)`))
	complete := 0
	for seed := range seeds {
		body := func(stream bool) string {
			return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"Give me JSON"}],"max_tokens":150,"temperature":0.9,"seed":%d,"response_format":%s,"logit_bias":%s,"stream":%v}`,
				d.name, seed, format(seed), bias, stream)
		}
		resp, b := d.do(t, "POST", "/v1/chat/completions", "", body(false))
		var r struct {
			Choices []struct {
				Message      struct{ Content string }
				FinishReason string `json:"finish_reason"`
			}
		}
		if resp.StatusCode != 200 || json.Unmarshal(b, &r) != nil || len(r.Choices) != 1 {
			t.Fatalf("seed %d: %d %s", seed, resp.StatusCode, b)
		}
		text, finish := r.Choices[0].Message.Content, r.Choices[0].FinishReason
		switch {
		case finish == "stop":
			complete++
			if !valid(text) {
				t.Errorf("seed %d: %q is not an answer the format allows", seed, text)
			}
		case finish != "length" || !strings.HasPrefix(strings.TrimSpace(text), "{"):
			t.Errorf("seed %d: %s %q", seed, finish, text)
		default:
			t.Logf("seed %d: cut: %q", seed, text)
		}
		_, b = d.do(t, "POST", "/v1/chat/completions", "", body(true))
		streamed, sfinish := "", ""
		for _, ev := range sse(b) {
			var c struct {
				Choices []struct {
					Delta        struct{ Content string }
					FinishReason *string `json:"finish_reason"`
				}
			}
			if json.Unmarshal([]byte(ev), &c) == nil && len(c.Choices) == 1 {
				streamed += c.Choices[0].Delta.Content
				if c.Choices[0].FinishReason != nil {
					sfinish = *c.Choices[0].FinishReason
				}
			}
		}
		if streamed != text || sfinish != finish {
			t.Errorf("seed %d: streamed %q (%s), whole %q (%s)", seed, streamed, sfinish, text, finish)
		}
	}
	return complete
}

// TestGuided: vLLM's guided_choice holds the answer to one of its texts,
// and guided_json (a schema, or its text) and llama.cpp's json_schema to a
// schema, as response_format json_schema does; two ways at once, or a bad
// one, are a 400.
func TestGuided(t *testing.T) {
	d := startAPIDaemon(t, func(c *configs.Config) { c.Limits.MaxTokens = 200 })
	ask := func(extra string) (int, string, string) {
		t.Helper()
		resp, b := d.do(t, "POST", "/v1/completions", "", `{"model":"`+d.name+`","prompt":"Is it so?","max_tokens":40,"temperature":1,"seed":2`+extra+`}`)
		var r struct {
			Choices []struct {
				Text         string
				FinishReason string `json:"finish_reason"`
			}
		}
		if json.Unmarshal(b, &r) != nil || len(r.Choices) != 1 {
			return resp.StatusCode, string(b), ""
		}
		return resp.StatusCode, r.Choices[0].Text, r.Choices[0].FinishReason
	}
	seen := map[string]bool{}
	for seed := range 6 {
		code, text, finish := ask(fmt.Sprintf(`,"seed":%d,"guided_choice":["yes","no","maybe so"]`, seed))
		if code != 200 || finish != "stop" || !slices.Contains([]string{"yes", "no", "maybe so"}, text) {
			t.Fatalf("guided_choice: %d %q %s", code, text, finish)
		}
		seen[text] = true
	}
	t.Logf("guided_choice answers: %v", seen)
	schema := `{"type":"object","properties":{"ok":{"type":"boolean"},"n":{"type":"integer"}},"required":["ok","n"]}`
	shape := regexp.MustCompile(`^\{ ?"ok": ?(true|false), ?"n": ?-?\d+ ?\}$`)
	for _, extra := range []string{`,"guided_json":` + schema, `,"guided_json":` + mustJSON(schema), `,"json_schema":` + schema} {
		code, text, finish := ask(extra)
		if code != 200 || finish == "stop" && !shape.MatchString(text) || finish == "length" && !strings.HasPrefix(text, "{") {
			t.Errorf("%s: %d %q %s", extra, code, text, finish)
		}
	}
	for extra, param := range map[string]string{
		`,"guided_choice":[]`:                                               "guided_choice",
		`,"guided_choice":["a",""]`:                                         "guided_choice",
		`,"guided_choice":"a"`:                                              "guided_choice",
		`,"guided_json":" "`:                                                "guided_json",
		`,"guided_json":"null"`:                                             "guided_json",
		`,"guided_json":{"type":"string","pattern":"a"}`:                    "guided_json",
		`,"guided_json":` + schema + `,"guided_choice":["a"]`:               "guided_choice",
		`,"response_format":{"type":"json_object"},"json_schema":` + schema: "json_schema",
	} {
		resp, b := d.do(t, "POST", "/v1/completions", "", `{"model":"`+d.name+`","prompt":"x"`+extra+`}`)
		wantError(t, extra, resp, b, 400, param, "")
	}
	d.stop(t)
}

func closingBias(t *testing.T, path string) string {
	t.Helper()
	m, err := model.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	bias := map[string]float64{}
	for id := range int32(m.Tok.Len()) {
		switch strings.TrimSpace(string(m.Tok.TokenBytes(id, false))) {
		case `"`:
			bias[strconv.Itoa(int(id))] = 6
		case `}`:
			bias[strconv.Itoa(int(id))] = 15
		}
	}
	b, _ := json.Marshal(bias)
	return string(b)
}

// TestTokenize: /tokenize gives the ids a completion's prompt or a chat
// request's messages are given (the usage of the same chat request counts
// them alike); /detokenize gives the text back; bad bodies are 4xx.
func TestTokenize(t *testing.T) {
	d := startAPIDaemon(t, nil)
	m, err := model.Load(regexpFind(d.log.String(), `msg="model loaded" .*path=(\S+)`))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	type tokens struct {
		Count       int     `json:"count"`
		MaxModelLen int     `json:"max_model_len"`
		Tokens      []int32 `json:"tokens"`
	}
	tokenize := func(body string) tokens {
		t.Helper()
		resp, b := d.do(t, "POST", "/tokenize", "", body)
		var r tokens
		if resp.StatusCode != 200 || json.Unmarshal(b, &r) != nil || r.Count != len(r.Tokens) {
			t.Fatalf("tokenize %s: %d %s", body, resp.StatusCode, b)
		}
		return r
	}
	const text = "Once upon a time"
	r := tokenize(`{"model":"` + d.name + `","prompt":"` + text + `"}`)
	if want := m.Tok.Encode(text, true, false); !slices.Equal(r.Tokens, want) || r.MaxModelLen != 128 {
		t.Errorf("tokenize: %+v, want %v and 128", r, want)
	}
	bare := tokenize(`{"content":"` + text + `"}`) // llama.cpp's field (no BOS unless add_special); the only model
	if want := m.Tok.Encode(text, false, false); !slices.Equal(bare.Tokens, want) {
		t.Errorf("without BOS: %v, want %v", bare.Tokens, want)
	}
	for _, body := range []string{`{"prompt":"` + text + `","add_special_tokens":false}`, `{"prompt":"` + text + `","add_special":false}`} {
		if got := tokenize(body); !slices.Equal(got.Tokens, bare.Tokens) {
			t.Errorf("%s: %v, want %v", body, got.Tokens, bare.Tokens)
		}
	}
	if got := tokenize(`{"content":"` + text + `","add_special":true}`); !slices.Equal(got.Tokens, r.Tokens) {
		t.Errorf("content with add_special: %v, want %v", got.Tokens, r.Tokens)
	}
	resp, b := d.do(t, "POST", "/detokenize", "", fmt.Sprintf(`{"model":%q,"tokens":%s}`, d.name, mustJSON(bare.Tokens)))
	var back struct{ Prompt, Content string }
	if resp.StatusCode != 200 || json.Unmarshal(b, &back) != nil || back.Prompt != text || back.Content != text {
		t.Errorf("detokenize: %d %s", resp.StatusCode, b)
	}
	messages := `"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]`
	chatTokens := tokenize(`{"model":"` + d.name + `",` + messages + `}`)
	resp, b = d.do(t, "POST", "/v1/chat/completions", "", `{"model":"`+d.name+`",`+messages+`,"max_tokens":1}`)
	var u struct{ Usage usage }
	if resp.StatusCode != 200 || json.Unmarshal(b, &u) != nil || u.Usage.PromptTokens != chatTokens.Count {
		t.Errorf("chat prompt of %d tokens by /tokenize: %d %s", chatTokens.Count, resp.StatusCode, b)
	}
	for _, c := range []struct {
		path, body  string
		status      int
		param, code string
	}{
		{"/tokenize", `{"prompt":"a",` + messages + `}`, 400, "messages", ""},
		{"/tokenize", `{"prompt":"a","content":"a"}`, 400, "content", ""},
		{"/tokenize", `{"prompt":"a","add_special":true,"add_special_tokens":false}`, 400, "add_special", ""},
		{"/tokenize", `{"model":"` + d.name + `"}`, 400, "prompt", ""},
		{"/tokenize", `{` + messages + `,"add_generation_prompt":false}`, 400, "add_generation_prompt", ""},
		{"/tokenize", `{"messages":[{"role":"robot","content":"x"}]}`, 400, "messages[0].role", ""},
		{"/tokenize", `{"prompt":7}`, 400, "prompt", ""},
		{"/tokenize", `{"model":"gpt-4","prompt":"a"}`, 404, "model", "model_not_found"},
		{"/tokenize", ``, 400, "", ""},
		{"/detokenize", `{"tokens":[1,999999]}`, 400, "tokens", ""},
		{"/detokenize", `{"tokens":[-1]}`, 400, "tokens", ""},
		{"/detokenize", `{"model":"` + d.name + `"}`, 400, "tokens", ""},
		{"/detokenize", `{"tokens":"abc"}`, 400, "tokens", ""},
	} {
		resp, b := d.do(t, "POST", c.path, "", c.body)
		wantError(t, c.path+" "+c.body, resp, b, c.status, c.param, c.code)
	}
	resp, b = d.do(t, "POST", "/tokenize", "-", `{"prompt":"a"}`)
	wantError(t, "/tokenize without a key", resp, b, 401, "", "invalid_api_key")
	d.stop(t)
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// TestChoices: n > 1 answers with n choices, choice i sampled with the
// seed plus i (so it is what n = 1 gives with that seed), streamed or not
// alike, each with its own index, finish and logprob offsets; the usage
// counts the prompt once and every choice's tokens.
func TestChoices(t *testing.T) {
	d := startAPIDaemon(t, nil)
	const n = 3
	type whole struct {
		Choices []struct {
			Index        int
			Text         string
			FinishReason string `json:"finish_reason"`
			Logprobs     *struct {
				TextOffset []int `json:"text_offset"`
			}
		}
		Usage usage
	}
	body := func(n, seed int, extra string) string {
		return fmt.Sprintf(`{"model":%q,"prompt":"Once upon a time","max_tokens":6,"temperature":1,"ignore_eos":true,"seed":%d,"n":%d%s}`, d.name, seed, n, extra)
	}
	resp, b := d.do(t, "POST", "/v1/completions", "", body(n, 40, `,"logprobs":1`))
	var w whole
	if resp.StatusCode != 200 || json.Unmarshal(b, &w) != nil || len(w.Choices) != n {
		t.Fatalf("n=%d: %d %s", n, resp.StatusCode, b)
	}
	if w.Usage.CompletionTokens != n*6 || w.Usage.PromptTokens == 0 || w.Usage.TotalTokens != w.Usage.PromptTokens+n*6 {
		t.Errorf("usage %+v", w.Usage)
	}
	distinct := map[string]bool{}
	for i, c := range w.Choices {
		distinct[c.Text] = true
		if c.Index != i || c.FinishReason != "length" || c.Logprobs == nil || len(c.Logprobs.TextOffset) != 6 || c.Logprobs.TextOffset[0] != 0 {
			t.Errorf("choice %d: %+v", i, c)
		}
		// Choice i is the answer of n = 1 with seed 40+i.
		_, b1 := d.do(t, "POST", "/v1/completions", "", body(1, 40+i, ""))
		var one whole
		if json.Unmarshal(b1, &one) != nil || len(one.Choices) != 1 || one.Choices[0].Text != c.Text {
			t.Errorf("choice %d %q; n=1 with seed %d: %s", i, c.Text, 40+i, b1)
		}
	}
	if len(distinct) < 2 {
		t.Errorf("the %d choices are alike: %v", n, distinct)
	}
	// Streamed: the same texts, by index, each with its finishing chunk.
	_, b = d.do(t, "POST", "/v1/completions", "", body(n, 40, `,"stream":true,"stream_options":{"include_usage":true}`))
	texts, finishes := make([]string, n), make([]string, n)
	var u *usage
	for _, ev := range sse(b) {
		var c struct {
			Choices []struct {
				Index        int
				Text         string
				FinishReason *string `json:"finish_reason"`
			}
			Usage *usage
		}
		if json.Unmarshal([]byte(ev), &c) != nil {
			continue
		}
		for _, ch := range c.Choices {
			texts[ch.Index] += ch.Text
			if ch.FinishReason != nil {
				finishes[ch.Index] = *ch.FinishReason
			}
		}
		if c.Usage != nil {
			u = c.Usage
		}
	}
	for i := range n {
		if texts[i] != w.Choices[i].Text || finishes[i] != "length" {
			t.Errorf("streamed choice %d: %q (%s), whole %q", i, texts[i], finishes[i], w.Choices[i].Text)
		}
	}
	if u == nil || *u != w.Usage {
		t.Errorf("streamed usage %v, whole %+v", u, w.Usage)
	}
	// Chat: a role chunk per choice.
	_, b = d.do(t, "POST", "/v1/chat/completions", "", chatReq(d.name, `,"n":2,"stream":true`))
	roles := 0
	for _, ev := range sse(b) {
		if strings.Contains(ev, `"role":"assistant"`) {
			roles++
		}
	}
	if roles != 2 {
		t.Errorf("%d role chunks for n=2: %s", roles, b)
	}
	d.log.wait(t, `msg=request endpoint=completions .*status=200 .*completion_tokens=18 .*finish=length,length,length n=3`, time.Second)
	d.stop(t)
}

// TestCORS: with auth.allowed_origins, a browser's preflight gets the
// methods and headers it asks for without a key, and answers (errors too)
// carry Access-Control-Allow-Origin for an allowed origin only; without
// the setting no answer carries it, and OPTIONS is 204 with Allow.
func TestCORS(t *testing.T) {
	d := startAPIDaemon(t, func(c *configs.Config) {
		c.Auth.AllowedOrigins = []string{"https://app.example.com"}
		c.Limits.MaxBodyBytes = 4096
	})
	req := func(method, path, origin string, headers map[string]string, body string) *http.Response {
		t.Helper()
		r, _ := http.NewRequest(method, "http://"+d.addr+path, strings.NewReader(body))
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		for k, v := range headers {
			r.Header.Set(k, v)
		}
		resp, err := d.hc.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	pre := map[string]string{"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type,x-stainless-os"}
	resp := req("OPTIONS", "/v1/chat/completions", "https://app.example.com", pre, "")
	h := resp.Header
	if resp.StatusCode != 204 || h.Get("Access-Control-Allow-Origin") != "https://app.example.com" || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
		h.Get("Access-Control-Allow-Headers") != "authorization,content-type,x-stainless-os" || h.Get("Access-Control-Max-Age") == "" || !strings.Contains(h.Get("Vary"), "Origin") {
		t.Errorf("preflight: %d %v", resp.StatusCode, h)
	}
	if resp := req("OPTIONS", "/v1/chat/completions", "https://evil.example.com", pre, ""); resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "" ||
		resp.Header.Get("Access-Control-Allow-Methods") != "" {
		t.Errorf("preflight from another origin: %d %v", resp.StatusCode, resp.Header)
	}
	auth := map[string]string{"Authorization": "Bearer k", "Content-Type": "application/json"}
	resp = req("POST", "/v1/chat/completions", "https://app.example.com", auth, chatReq(d.name, ""))
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" || !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "X-Request-Id") {
		t.Errorf("answer: %d %v", resp.StatusCode, resp.Header)
	}
	resp = req("POST", "/v1/chat/completions", "https://app.example.com", nil, chatReq(d.name, ""))
	if resp.StatusCode != 401 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Errorf("401 for an allowed origin: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := req("POST", "/v1/chat/completions", "https://evil.example.com", auth, chatReq(d.name, "")); resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("answer to another origin: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := req("POST", "/v1/chat/completions", "https://evil.example.com", nil, chatReq(d.name, "")); resp.StatusCode != 401 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("error to another origin: %d %v", resp.StatusCode, resp.Header)
	}
	// An answer fasthttp gives before the handler (413) still lets the page read it.
	big := `{"prompt":"` + strings.Repeat("a", 8192) + `"}`
	if resp := req("POST", "/v1/completions", "https://app.example.com", auth, big); resp.StatusCode != 413 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Errorf("413 to an allowed origin: %d %v", resp.StatusCode, resp.Header)
	}
	d.stop(t)

	// "*": the same headers with an Origin or without, so no Vary.
	d = startAPIDaemon(t, func(c *configs.Config) { c.Auth.AllowedOrigins = []string{"*"} })
	for _, origin := range []string{"https://any.example.net", ""} {
		resp := req("GET", "/v1/models", origin, auth, "")
		if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "*" || strings.Contains(resp.Header.Get("Vary"), "Origin") {
			t.Errorf("wildcard, origin %q: %d %v", origin, resp.StatusCode, resp.Header)
		}
	}
	d.stop(t)

	plain := startAPIDaemon(t, nil)
	d = plain
	resp = req("OPTIONS", "/v1/models", "https://app.example.com", pre, "")
	if resp.StatusCode != 204 || resp.Header.Get("Allow") != "GET, HEAD, OPTIONS" || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("without allowed_origins: %d %v", resp.StatusCode, resp.Header)
	}
	d.stop(t)
}

// TestEcho: echo begins a completion's text with its prompt; with
// logprobs, as lm-eval-harness's local-completions asks (a batch of one
// token-id prompt, max_tokens 1), each prompt token after the first has
// its logprob given those before it (the first's is null), the same the
// model gave those tokens when it generated them.
func TestEcho(t *testing.T) {
	d := startAPIDaemon(t, nil)
	type lps struct {
		Tokens        []string
		TokenLogprobs []*float32           `json:"token_logprobs"`
		TopLogprobs   []map[string]float32 `json:"top_logprobs"`
		TextOffset    []int                `json:"text_offset"`
	}
	type answer struct {
		Choices []struct {
			Text     string
			Logprobs *lps
		}
	}
	get := func(body string) answer {
		t.Helper()
		resp, b := d.do(t, "POST", "/v1/completions", "", body)
		var a answer
		if resp.StatusCode != 200 || json.Unmarshal(b, &a) != nil || len(a.Choices) != 1 {
			t.Fatalf("%s: %d %s", body, resp.StatusCode, b)
		}
		return a
	}
	// What the model generates after the prompt, with its logprobs.
	resp, b := d.do(t, "POST", "/tokenize", "", `{"prompt":"Once upon a time"}`)
	var tk struct{ Tokens []int32 }
	if resp.StatusCode != 200 || json.Unmarshal(b, &tk) != nil {
		t.Fatalf("tokenize: %s", b)
	}
	gen := get(`{"prompt":"Once upon a time","max_tokens":3,"temperature":0,"ignore_eos":true,"logprobs":1}`)
	plain := gen.Choices[0].Text
	echo := get(`{"prompt":"Once upon a time","max_tokens":3,"temperature":0,"ignore_eos":true,"echo":true}`)
	if echo.Choices[0].Text != "Once upon a time"+plain {
		t.Errorf("echo: %q, want the prompt then %q", echo.Choices[0].Text, plain)
	}
	// Score the prompt and the two tokens generated after it.
	resp, b = d.do(t, "POST", "/tokenize", "", `{"prompt":`+mustJSON("Once upon a time"+plain)+`}`)
	var full struct{ Tokens []int32 }
	json.Unmarshal(b, &full)
	ids := full.Tokens
	if len(ids) < len(tk.Tokens)+2 || !slices.Equal(ids[:len(tk.Tokens)], tk.Tokens) {
		t.Fatalf("the answer does not extend the prompt's tokens: %v, %v", tk.Tokens, ids)
	}
	ids = ids[:len(tk.Tokens)+2]
	scored := get(`{"prompt":[` + mustJSON(ids) + `],"max_tokens":1,"temperature":0,"logprobs":1,"echo":true}`)
	lp := scored.Choices[0].Logprobs
	if lp == nil || len(lp.TokenLogprobs) != len(ids)+1 || lp.TokenLogprobs[0] != nil || lp.TopLogprobs[0] != nil {
		t.Fatalf("scored: %+v", lp)
	}
	for k := range 2 {
		got, want := lp.TokenLogprobs[len(tk.Tokens)+k], gen.Choices[0].Logprobs.TokenLogprobs[k]
		if got == nil || math.Abs(float64(*got-*want)) > 2e-3 {
			t.Errorf("generated token %d scored %v, generated with %v", k, got, *want)
		}
	}
	if !slices.IsSorted(lp.TextOffset) {
		t.Errorf("offsets %v", lp.TextOffset)
	}
	// The scored continuation ends where the model ends the text: the
	// end-of-generation token still has its entry (no text), as
	// lm-eval-harness counts on (it scores all but the last entry).
	m, err := model.Load(regexpFind(d.log.String(), `msg="model loaded" .*path=(\S+)`))
	if err != nil {
		t.Fatal(err)
	}
	eos := m.Tok.EOS()
	eosText := string(m.Tok.TokenBytes(eos, false)) // as the text renders it
	m.Close()
	for _, stream := range []bool{false, true} {
		body := fmt.Sprintf(`{"prompt":[%s],"max_tokens":1,"temperature":0,"logprobs":1,"echo":true,"logit_bias":{"%d":100},"stream":%v}`, mustJSON(ids), eos, stream)
		resp, b := d.do(t, "POST", "/v1/completions", "", body)
		events := []string{string(b)}
		if stream {
			events = sse(b)
		}
		var text string
		var got lps
		finish := ""
		for _, e := range events {
			var ch struct {
				Choices []struct {
					Text         string
					Logprobs     *lps
					FinishReason *string `json:"finish_reason"`
				}
			}
			if json.Unmarshal([]byte(e), &ch) != nil || len(ch.Choices) != 1 {
				continue
			}
			c := ch.Choices[0]
			text += c.Text
			if c.Logprobs != nil {
				got.Tokens = append(got.Tokens, c.Logprobs.Tokens...)
				got.TokenLogprobs = append(got.TokenLogprobs, c.Logprobs.TokenLogprobs...)
				got.TextOffset = append(got.TextOffset, c.Logprobs.TextOffset...)
			}
			if c.FinishReason != nil {
				finish = *c.FinishReason
			}
		}
		n := len(got.TokenLogprobs)
		if resp.StatusCode != 200 || n != len(ids)+1 || got.Tokens[n-1] != eosText || finish != "stop" ||
			text != scored.Choices[0].Text[:len(text)] || got.TextOffset[n-1] != utf8.RuneCountInString(text) {
			t.Errorf("stream %v: an answer ended by %q: %s", stream, eosText, b)
			continue
		}
		for k := range n - 1 {
			if got.TokenLogprobs[k] == nil && k > 0 || k > 0 && *got.TokenLogprobs[k] != *lp.TokenLogprobs[k] {
				t.Errorf("stream %v: entry %d scored %v, not as without the bias", stream, k, got.TokenLogprobs[k])
			}
		}
	}
	// max_tokens 0 with echo scores the prompt and generates nothing.
	only := get(`{"prompt":[` + mustJSON(ids) + `],"max_tokens":0,"logprobs":0,"echo":true}`)
	if lp0 := only.Choices[0].Logprobs; lp0 == nil || len(lp0.TokenLogprobs) != len(ids) || *lp0.TokenLogprobs[len(ids)-1] != *lp.TokenLogprobs[len(ids)-1] ||
		!strings.HasPrefix(scored.Choices[0].Text, only.Choices[0].Text) {
		t.Errorf("max_tokens 0: %+v", only)
	}
	if resp, b := d.do(t, "POST", "/v1/completions", "", `{"prompt":"a","max_tokens":0}`); resp.StatusCode != 400 || !strings.Contains(string(b), "echo") {
		t.Errorf("max_tokens 0 without echo: %d %s", resp.StatusCode, b)
	}
	// Streamed: the prompt and its logprobs come first.
	resp, b = d.do(t, "POST", "/v1/completions", "", `{"prompt":[`+mustJSON(ids)+`],"max_tokens":2,"temperature":0,"logprobs":1,"echo":true,"stream":true}`)
	events := sse(b)
	var first answer
	if resp.StatusCode != 200 || len(events) < 2 || json.Unmarshal([]byte(events[0]), &first) != nil || len(first.Choices) != 1 ||
		first.Choices[0].Logprobs == nil || len(first.Choices[0].Logprobs.Tokens) != len(ids) || !strings.HasPrefix(scored.Choices[0].Text, first.Choices[0].Text) {
		t.Errorf("streamed echo: %s", b)
	}
	// n choices: one scores the prompt for all; each choice's echo comes
	// before its text, with the same logprobs.
	for _, stream := range []bool{false, true} {
		resp, b := d.do(t, "POST", "/v1/completions", "", fmt.Sprintf(`{"prompt":[%s],"max_tokens":2,"temperature":0.9,"seed":3,"logprobs":1,"echo":true,"n":3,"stream":%v}`, mustJSON(ids), stream))
		events := []string{string(b)}
		if stream {
			events = sse(b)
		}
		texts, entries := make([]string, 3), make([][]*float32, 3)
		for _, e := range events {
			var ch struct {
				Choices []struct {
					Index    int
					Text     string
					Logprobs *lps
				}
			}
			if json.Unmarshal([]byte(e), &ch) != nil {
				continue
			}
			for _, c := range ch.Choices {
				if c.Index < 0 || c.Index > 2 {
					t.Fatalf("choice %d: %s", c.Index, b)
				}
				if texts[c.Index] == "" && c.Text != "" && !strings.HasPrefix(c.Text, only.Choices[0].Text) {
					t.Errorf("stream %v: choice %d begins %q, not with the prompt", stream, c.Index, c.Text)
				}
				texts[c.Index] += c.Text
				if c.Logprobs != nil {
					entries[c.Index] = append(entries[c.Index], c.Logprobs.TokenLogprobs...)
				}
			}
		}
		for i := range 3 {
			if resp.StatusCode != 200 || len(entries[i]) < len(ids) {
				t.Fatalf("stream %v, choice %d: %d %s", stream, i, resp.StatusCode, b)
			}
			for k := 1; k < len(ids); k++ {
				if *entries[i][k] != *lp.TokenLogprobs[k] {
					t.Errorf("stream %v, choice %d: prompt token %d scored %v, alone %v", stream, i, k, *entries[i][k], *lp.TokenLogprobs[k])
				}
			}
		}
	}
	d.stop(t)
}
