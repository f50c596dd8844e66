package loadgen

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The stream shapes of servers that cannot run here (llama.cpp's server,
// vLLM, servers that leave out [DONE]), from a server that writes them:
// what each counts as, and what it measures.
func TestStreamShapes(t *testing.T) {
	text := func(s string) string { return `data: {"choices":[{"text":"` + s + `","finish_reason":null}]}` }
	for _, c := range []struct {
		name   string
		events []string // written with a 30 ms pause before each
		nl     string
		status string // the level's only error class ("" for success)
		tokens int    // completion tokens per request
	}{
		{"openai", []string{`data: {"choices":[{"delta":{"role":"assistant"}}]}`, text("a"), text("b"), text("c"),
			`data: {"choices":[{"text":"","finish_reason":"length"}]}`, `data: {"choices":[],"usage":{"completion_tokens":3}}`, "data: [DONE]"}, "\n\n", "", 3},
		{"crlf and pings", []string{": ping", text("a"), text("b"), "data: [DONE]"}, "\r\n\r\n", "", 2},
		{"bare cr", []string{text("a"), text("b"), "data: [DONE]"}, "\r\r", "", 2},
		{"no [DONE] after finish_reason", []string{text("a"), text("b"), `data: {"choices":[{"text":"","finish_reason":"stop"}]}`}, "\n\n", "", 2},
		{"no [DONE], no finish", []string{text("a"), text("b")}, "\n\n", "stream: ended without [DONE]", 0},
		{"usage without completion_tokens", []string{text("a"), text("b"), `data: {"choices":[],"usage":{"prompt_tokens":4}}`, "data: [DONE]"}, "\n\n", "", 2},
		{"llama.cpp error line", []string{text("a"), `error: {"code":500,"message":"boom"}`}, "\n\n", "stream: error event", 0},
		{"error event with a code", []string{text("a"), `data: {"error":{"message":"late","code":"request_timeout"}}`}, "\n\n", "stream: error event (request_timeout)", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			var conns atomic.Int32
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				for _, e := range c.events {
					time.Sleep(30 * time.Millisecond)
					fmt.Fprint(w, e+c.nl)
					w.(http.Flusher).Flush()
				}
			}))
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			srv.Start()
			defer srv.Close()
			o := Options{URL: srv.URL, Concurrency: []int{1}, Requests: 4, PromptTokens: 4, MaxTokens: 3, Vocab: 100, Timeout: 10 * time.Second}
			levels, err := Run(context.Background(), o)
			if c.status != "" {
				// The warm-up fails on a stream that fails.
				if err == nil || !strings.Contains(err.Error(), c.status) {
					t.Fatalf("err %v, want %q", err, c.status)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			l := levels[0]
			if l.Errors != 0 || l.Completion != 4*c.tokens {
				t.Fatalf("level %+v", l)
			}
			// 30 ms between text chunks; TTFT after the events before the
			// first text; the rate from the first text to the last.
			if l.ITLP50 < 25 || l.ITLP50 > 200 {
				t.Errorf("ITL p50 %.1f ms, want about 30", l.ITLP50)
			}
			if want := 1000 / 30.0; l.PerReqTokS < want/3 || l.PerReqTokS > want*1.5 {
				t.Errorf("per-request rate %.1f tok/s, want about %.0f", l.PerReqTokS, want)
			}
			// One connection for the warm-up and the four requests: each
			// body is read to its end.
			if n := conns.Load(); n != 1 {
				t.Errorf("%d connections for 5 requests in a row", n)
			}
		})
	}
}

// A request past --timeout is a "timeout", not a transport failure, and a
// warm-up refused with 429 is tried again after its Retry-After.
func TestTimeoutAndWarmUpRetry(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(429)
			fmt.Fprint(w, `{"error":{"message":"busy","code":"queue_full"}}`)
			return
		case 2:
			fmt.Fprint(w, "data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: [DONE]\n\n")
			return
		}
		time.Sleep(2 * time.Second) // past the timeout
	}))
	defer srv.Close()
	start := time.Now()
	levels, err := Run(context.Background(), Options{URL: srv.URL, Concurrency: []int{1}, Requests: 2, PromptTokens: 4, MaxTokens: 1, Vocab: 100, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("the warm-up was retried after %s, before its Retry-After", d)
	}
	if l := levels[0]; l.ErrorsBy["timeout"] != 2 {
		t.Errorf("level %+v", l)
	}
	var table strings.Builder
	WriteTable(&table, levels)
	if !strings.Contains(table.String(), " – ") {
		t.Errorf("a level with no answer shows figures:\n%s", table.String())
	}
}
