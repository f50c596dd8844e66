package daemon

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/octet-dev/octet/configs"
)

// TestRequestIDsAndCounts: every response carries an X-Request-Id (the
// client's when it sent a plain one) that its log line names, every
// answer (refusals before any handler included) is counted in
// octet_requests_total, the build is described, and a removed model's
// series go with it.
func TestRequestIDsAndCounts(t *testing.T) {
	var dir string
	d := startAPIDaemon(t, func(c *configs.Config) { c.Limits.MaxBodyBytes, dir = 2048, c.Models.Dir })
	send := func(method, path, key, rid, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+d.addr+path, strings.NewReader(body))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		if rid != "" {
			req.Header.Set("X-Request-Id", rid)
		}
		resp, err := d.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	chat := `{"model":"` + d.name + `","messages":[{"role":"user","content":"Once"}],"max_tokens":4}`
	for _, c := range []struct {
		method, path, key, rid, body string
		status                       int
		endpoint                     string
	}{
		{"POST", "/v1/chat/completions", "k", "abc-123", chat, 200, "chat"},
		{"POST", "/v1/chat/completions", "", "no-key.1", chat, 401, "chat"},
		{"POST", "/v1/chat/completions", "wrong", "wrong:key", chat, 401, "chat"},
		{"GET", "/v1/chat/completions", "k", "get_chat", "", 405, "chat"},
		{"GET", "/nowhere", "k", "lost", "", 404, "unknown"},
		{"POST", "/v1/completions", "k", "too-big", `{"prompt":"` + strings.Repeat("x", 4096) + `"}`, 413, "http"},
		{"GET", "/v1/models", "k", "", "", 200, "models"},
		{"POST", "/v1/completions", "k", "bad id with spaces", `{`, 400, "completions"},
	} {
		resp := send(c.method, c.path, c.key, c.rid, c.body)
		rid := resp.Header.Get("X-Request-Id")
		if resp.StatusCode != c.status {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.status)
		}
		switch {
		case c.rid != "" && !strings.Contains(c.rid, " ") && rid != c.rid:
			t.Errorf("%s %s: X-Request-Id %q, want the client's %q", c.method, c.path, rid, c.rid)
		case (c.rid == "" || strings.Contains(c.rid, " ")) && !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(rid):
			t.Errorf("%s %s: X-Request-Id %q, want a new one", c.method, c.path, rid)
		}
		if c.status >= 400 || c.endpoint == "chat" {
			d.log.wait(t, `msg=request endpoint=`+c.endpoint+` .*status=`+strconv.Itoa(c.status)+` .*request_id=`+regexp.QuoteMeta(rid)+`$`, 10*time.Second)
		}
	}
	d.log.wait(t, `endpoint=chat model="" status=401 .*error="the API key is not valid" request_id=wrong:key$`, time.Second)
	d.log.wait(t, `endpoint=http model="" status=413 .*remote=127\.0\.0\.1.* request_id=too-big$`, time.Second)

	metrics := func() string {
		resp, b := d.do(t, "GET", "/metrics", "", "")
		if resp.StatusCode != 200 {
			t.Fatalf("metrics: %d", resp.StatusCode)
		}
		return string(b)
	}
	m := metrics()
	for _, want := range []string{
		`octet_requests_total{endpoint="chat",model="` + d.name + `",status="200"} 1`,
		`octet_requests_total{endpoint="chat",model="",status="401"} 2`,
		`octet_requests_total{endpoint="chat",model="",status="405"} 1`,
		`octet_requests_total{endpoint="unknown",model="",status="404"} 1`,
		`octet_requests_total{endpoint="http",model="",status="413"} 1`,
		`octet_requests_total{endpoint="models",model="",status="200"} 1`,
		`octet_requests_total{endpoint="completions",model="",status="400"} 1`,
		`octet_request_errors_total{code="invalid_api_key",endpoint="chat",model=""} 2`,
		`octet_request_errors_total{code="request_too_large",endpoint="http",model=""} 1`,
		`octet_build_info{backend="test-gate",goversion="` + runtime.Version() + `",version="test"} 1`,
		`octet_model_loaded_timestamp_seconds{model="` + d.name + `"}`,
		`octet_model_info{aliases="acme/default",kv_type="`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// The model's file goes while a request runs on it: its series go
	// when that request has ended, and it does not make them again.
	closeGate()
	answered := make(chan int)
	go func() {
		resp, _ := d.do(t, "POST", "/v1/chat/completions", "", chat)
		answered <- resp.StatusCode
	}()
	d.waitRunning(t, 1)
	files, _ := filepath.Glob(filepath.Join(dir, "*.gguf"))
	for _, f := range files {
		os.Remove(f)
	}
	d.log.wait(t, `msg="model removed`, 10*time.Second)
	openGate()
	if code := <-answered; code != 200 {
		t.Errorf("the request running on the removed model: %d", code)
	}
	d.log.wait(t, `msg="model unloaded"`, 10*time.Second)
	if m := metrics(); strings.Contains(m, `model="`+d.name+`"`) {
		t.Errorf("a removed model's series remain:\n%s", grepLines(m, d.name))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
