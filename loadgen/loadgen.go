// Package loadgen is `octet bench --url/--unix`: a load generator for any
// OpenAI-compatible server (octet, llama.cpp's server, vLLM), so they can
// be measured on the same work.
//
// Each concurrency level runs Requests streaming completions from that
// many concurrent clients, each client sending its next request when the
// previous one ends. A prompt is an array of token ids (the completions
// API accepts one), so its length in tokens is exact whatever the server's
// tokenizer; answers are MaxTokens long (ignore_eos). With SharedPrefix,
// every prompt starts with the same tokens (a system prompt), which a
// server with a prefix cache computes once.
//
// Measured per request: time to first token (from sending the request to
// the first streamed text), inter-token latency (between successive text
// chunks, as vLLM's benchmark measures it: a token each from octet,
// llama.cpp and vLLM without speculative decoding), end-to-end latency
// (to the end of the stream), and tokens/s from the first text chunk to
// the last (completion tokens by the server's usage report when it sends
// them, else the count of text chunks). Per level: percentiles of those,
// aggregate completion tokens/s over the level's wall time, and errors by
// HTTP status, or "timeout", "transport" (the connection failed) and
// "stream: …" (an error event, a malformed or cut stream). A stream that
// ends without "data: [DONE]" after a finish_reason counts as complete
// (some servers leave it out). The prompts come from Seed: the same seed
// sends the same prompts, which a server's prefix cache then holds.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options describe a load test.
type Options struct {
	URL  string // base URL of the server: http://host:port (no /v1)
	Unix string // or a Unix socket path
	// Model is the "model" field of each request ("" leaves it out).
	Model  string
	APIKey string

	Concurrency  []int // levels, run in order
	Requests     int   // requests per level
	PromptTokens int
	MaxTokens    int
	SharedPrefix int // leading prompt tokens common to every request
	Vocab        int // prompt token ids are drawn from [10, Vocab)
	// Temperature is each request's sampling temperature (0: greedy).
	Temperature float64
	Timeout     time.Duration
	Seed        uint64

	// Progress, when set, is called after each request ends, one call at a
	// time.
	Progress func()
}

// Validate checks the options.
func (o *Options) Validate() error {
	switch {
	case (o.URL == "") == (o.Unix == ""):
		return errors.New("loadgen: give exactly one of a URL and a Unix socket")
	case len(o.Concurrency) == 0:
		return errors.New("loadgen: no concurrency level")
	case o.Requests < 1:
		return errors.New("loadgen: --requests must be at least 1")
	case o.PromptTokens < 1 || o.MaxTokens < 1:
		return errors.New("loadgen: --prompt-tokens and --max-tokens must be at least 1")
	case o.SharedPrefix < 0 || o.SharedPrefix >= o.PromptTokens:
		return fmt.Errorf("loadgen: --shared-prefix %d must be below --prompt-tokens %d", o.SharedPrefix, o.PromptTokens)
	case o.Vocab <= 10:
		return fmt.Errorf("loadgen: --vocab %d must be above 10", o.Vocab)
	case !(o.Temperature >= 0 && o.Temperature <= 2):
		return fmt.Errorf("loadgen: --temperature %g: want 0…2", o.Temperature)
	}
	for _, c := range o.Concurrency {
		if c < 1 || c > 4096 {
			return fmt.Errorf("loadgen: concurrency %d: want 1…4096", c)
		}
	}
	if o.URL != "" && !strings.HasPrefix(o.URL, "http://") && !strings.HasPrefix(o.URL, "https://") {
		return fmt.Errorf("loadgen: URL %q must start with http:// or https://", o.URL)
	}
	return nil
}

// Level is the result of one concurrency level. Times are milliseconds.
type Level struct {
	Concurrency int            `json:"concurrency"`
	Requests    int            `json:"requests"`
	Errors      int            `json:"errors"`
	ErrorsBy    map[string]int `json:"errors_by_status,omitempty"`
	TTFTP50     float64        `json:"ttft_p50_ms"`
	TTFTP90     float64        `json:"ttft_p90_ms"`
	TTFTP99     float64        `json:"ttft_p99_ms"`
	ITLP50      float64        `json:"itl_p50_ms"`
	ITLP99      float64        `json:"itl_p99_ms"`
	E2EP50      float64        `json:"e2e_p50_ms"`
	E2EP99      float64        `json:"e2e_p99_ms"`
	TokensPerS  float64        `json:"tokens_per_s"`             // completion tokens of the level ÷ its wall time
	PerReqTokS  float64        `json:"per_request_tokens_per_s"` // median over requests, from the first text chunk to the last
	Completion  int            `json:"completion_tokens"`
	WallSeconds float64        `json:"wall_s"`
}

// sample is one request's measurements.
type sample struct {
	status string // "" for success
	detail string // what went wrong, for the warm-up's error
	ttft   time.Duration
	itls   []time.Duration
	gen    time.Duration // from the first text chunk to the last
	e2e    time.Duration
	tokens int
	retry  time.Duration // a 429's or 503's Retry-After
}

// Run runs every level in order, after one warm-up request.
func Run(ctx context.Context, o Options) ([]Level, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	c := newClient(o)
	rng := rand.New(rand.NewPCG(o.Seed, 0x6f63746574))
	prefix := make([]int, o.SharedPrefix)
	for i := range prefix {
		prefix[i] = 10 + rng.IntN(o.Vocab-10)
	}
	prompt := func() []int {
		p := slices.Clone(prefix)
		for len(p) < o.PromptTokens {
			p = append(p, 10+rng.IntN(o.Vocab-10))
		}
		return p
	}
	if err := c.warmUp(ctx, prompt()); err != nil {
		return nil, err
	}
	var levels []Level
	for _, conc := range o.Concurrency {
		prompts := make([][]int, o.Requests)
		for i := range prompts {
			prompts[i] = prompt()
		}
		var mu sync.Mutex
		var samples []sample
		next := 0
		start := time.Now()
		var wg sync.WaitGroup
		for range conc {
			wg.Go(func() {
				for {
					mu.Lock()
					i := next
					next++
					mu.Unlock()
					if i >= len(prompts) || ctx.Err() != nil {
						return
					}
					s := c.do(ctx, prompts[i])
					mu.Lock()
					samples = append(samples, s)
					if o.Progress != nil {
						o.Progress()
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return levels, err
		}
		levels = append(levels, summarize(conc, samples, time.Since(start)))
	}
	return levels, nil
}

func summarize(conc int, samples []sample, wall time.Duration) Level {
	l := Level{Concurrency: conc, Requests: len(samples), WallSeconds: wall.Seconds()}
	var ttft, itl, e2e, rate []float64
	for _, s := range samples {
		if s.status != "" {
			l.Errors++
			if l.ErrorsBy == nil {
				l.ErrorsBy = map[string]int{}
			}
			l.ErrorsBy[s.status]++
			continue
		}
		l.Completion += s.tokens
		ttft = append(ttft, ms(s.ttft))
		e2e = append(e2e, ms(s.e2e))
		for _, d := range s.itls {
			itl = append(itl, ms(d))
		}
		if s.gen > 0 && s.tokens > 1 {
			rate = append(rate, float64(s.tokens-1)/s.gen.Seconds())
		}
	}
	l.TTFTP50, l.TTFTP90, l.TTFTP99 = Percentile(ttft, 50), Percentile(ttft, 90), Percentile(ttft, 99)
	l.ITLP50, l.ITLP99 = Percentile(itl, 50), Percentile(itl, 99)
	l.E2EP50, l.E2EP99 = Percentile(e2e, 50), Percentile(e2e, 99)
	l.PerReqTokS = Percentile(rate, 50)
	if wall > 0 {
		l.TokensPerS = float64(l.Completion) / wall.Seconds()
	}
	return l
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Percentile is the nearest-rank p-th percentile of xs (0 when empty).
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// warmUp sends one request before the levels, so that they do not time
// the server's first request (a graph capture, a cold cache); a 429 or 503
// is retried after its Retry-After (at most 30 s each, five times).
func (c *client) warmUp(ctx context.Context, prompt []int) error {
	for try := 0; ; try++ {
		s := c.do(ctx, prompt)
		switch {
		case s.status == "":
			return nil
		case (s.status == "429" || s.status == "503") && try < 5:
			wait := min(max(s.retry, time.Second), 30*time.Second)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
			continue
		}
		hint := ""
		if s.status == "400" && strings.Contains(s.detail, "vocabulary") {
			hint = fmt.Sprintf(" (prompts are token ids below --vocab %d: set it to the model's vocabulary size)", c.o.Vocab)
		}
		return fmt.Errorf("loadgen: the warm-up request to %s failed: %s: %s%s", c.target(), s.status, s.detail, hint)
	}
}

// client sends streaming completions.
type client struct {
	o    Options
	hc   *http.Client
	base string
}

// target names the server, for messages.
func (c *client) target() string {
	if c.o.Unix != "" {
		return c.o.Unix
	}
	return c.o.URL
}

func newClient(o Options) *client {
	tr := &http.Transport{MaxIdleConnsPerHost: 4096, DisableCompression: true}
	base := strings.TrimSuffix(o.URL, "/")
	if o.Unix != "" {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", o.Unix)
		}
		base = "http://unix"
	}
	return &client{o: o, hc: &http.Client{Transport: tr}, base: base}
}

// do runs one request and measures it.
func (c *client) do(ctx context.Context, prompt []int) sample {
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	body := map[string]any{
		"prompt": prompt, "max_tokens": c.o.MaxTokens, "stream": true, "temperature": c.o.Temperature,
		"ignore_eos": true, "stream_options": map[string]any{"include_usage": true},
	}
	if c.o.Model != "" {
		body["model"] = c.o.Model
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+"/v1/completions", bytes.NewReader(b))
	if err != nil {
		return sample{status: "transport", detail: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	if c.o.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.o.APIKey)
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		return failed(ctx, "transport", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		io.Copy(io.Discard, resp.Body)
		s := sample{status: strconv.Itoa(resp.StatusCode), detail: strings.TrimSpace(string(b))}
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
			s.retry = time.Duration(secs) * time.Second
		}
		return s
	}
	s, err := readStream(resp.Body, start)
	if err != nil {
		return failed(ctx, "transport", err)
	}
	// The rest of the body (the chunked encoding's end) is read, so that
	// the connection goes back to the pool: a new one would be timed in
	// the next request's TTFT.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return s
}

// failed is the sample of a request that failed with err: "timeout" when
// its deadline (--timeout) passed, else status.
func failed(ctx context.Context, status string, err error) sample {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return sample{status: "timeout", detail: err.Error()}
	}
	return sample{status: status, detail: err.Error()}
}

// chunk is the part of a streamed completion chunk loadgen reads.
type chunk struct {
	Choices []struct {
		Text  string `json:"text"`
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
		FinishReason string `json:"finish_reason"` // "" for null
	} `json:"choices"`
	Usage *struct {
		CompletionTokens *int `json:"completion_tokens"`
	} `json:"usage"`
	Error json.RawMessage `json:"error"`
}

// readStream reads server-sent events to [DONE] (or to the end of a
// stream that gave a finish_reason), timing the text chunks. The error is
// the connection's, when reading failed.
func readStream(r io.Reader, start time.Time) (sample, error) {
	var s sample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	sc.Split(scanLines)
	var first, last time.Time
	chunks, usage, finished := 0, -1, false
	end := func(now time.Time) sample {
		s.ttft, s.e2e, s.gen = first.Sub(start), now.Sub(start), last.Sub(first)
		s.tokens = chunks
		if usage >= 0 {
			s.tokens = usage
		}
		if chunks == 0 {
			s.status = "stream: no text"
		}
		return s
	}
	for sc.Scan() {
		now := time.Now() // when the chunk arrived, before decoding it
		line := sc.Bytes()
		if e, ok := bytes.CutPrefix(line, []byte("error:")); ok { // llama.cpp's server
			return sample{status: "stream: error event", detail: string(bytes.TrimSpace(e))}, nil
		}
		data, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			continue
		}
		data = bytes.TrimSpace(data)
		if string(data) == "[DONE]" {
			return end(now), nil
		}
		var ch chunk
		if err := json.Unmarshal(data, &ch); err != nil {
			return sample{status: "stream: bad chunk", detail: fmt.Sprintf("%v: %.200q", err, data)}, nil
		}
		if len(ch.Error) > 0 && string(ch.Error) != "null" {
			status := "stream: error event"
			var e struct {
				Code any `json:"code"`
			}
			if json.Unmarshal(ch.Error, &e) == nil && e.Code != nil {
				status = fmt.Sprintf("stream: error event (%v)", e.Code)
			}
			return sample{status: status, detail: string(ch.Error)}, nil
		}
		if ch.Usage != nil && ch.Usage.CompletionTokens != nil {
			usage = *ch.Usage.CompletionTokens
		}
		text := false
		for _, c := range ch.Choices {
			text = text || c.Text != "" || c.Delta.Content != ""
			finished = finished || c.FinishReason != ""
		}
		if !text {
			continue
		}
		if chunks == 0 {
			first = now
		} else {
			s.itls = append(s.itls, now.Sub(last))
		}
		last = now
		chunks++
	}
	if err := sc.Err(); err != nil {
		return sample{}, err
	}
	if finished {
		return end(time.Now()), nil
	}
	return sample{status: "stream: ended without [DONE]"}, nil
}

// scanLines splits server-sent events into lines, which end with "\r\n",
// "\n" or "\r" alone (the SSE format allows all three).
func scanLines(data []byte, atEOF bool) (int, []byte, error) {
	i := bytes.IndexAny(data, "\r\n")
	switch {
	case i < 0 && atEOF && len(data) > 0:
		return len(data), data, nil
	case i < 0:
		return 0, nil, nil
	case data[i] == '\n':
		return i + 1, data[:i], nil
	case i+1 < len(data):
		if data[i+1] == '\n' {
			return i + 2, data[:i], nil
		}
		return i + 1, data[:i], nil
	case atEOF:
		return i + 1, data[:i], nil
	}
	return 0, nil, nil // a "\r" last: a "\n" may follow
}
