package daemon

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/octet-dev/octet/configs"
)

// rawHTTP sends raw bytes and reads one response.
func rawHTTP(t *testing.T, addr string, raw []byte) (int, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestBadInput: malformed and hostile requests each get the right 4xx with
// an OpenAI-style error object, and the daemon serves the next good request.
func TestBadInput(t *testing.T) {
	dir, name := modelsDir(t)
	cfg := filepath.Join(t.TempDir(), "octet.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[auth]\napi_keys = [\"sha256:%x\"]\n[limits]\nread_timeout = \"1s\"\nmax_tokens = 1000\n", configs.HashKey("k"))), 0o644)
	p := serve(t, nil, "--config", cfg, "--models", dir)
	addr := strings.TrimPrefix(p.url, "http://")
	hc := client("")
	msg := func(content string) string {
		return `{"model":"` + name + `","messages":[{"role":"user","content":` + content + `}],"max_tokens":4}`
	}
	chat := func(fields string) string {
		return `{"model":"` + name + `","messages":[{"role":"user","content":"hi"}],"max_tokens":4` + fields + `}`
	}
	compl := func(fields string) string {
		return `{"model":"` + name + `","max_tokens":4` + fields + `}`
	}
	long := strings.Repeat("once upon a time there was a dog ", 200)
	many := `{"model":"` + name + `","messages":[` + strings.Repeat(`{"role":"user","content":"x"},`, 1500) + `{"role":"user","content":"x"}]}`
	huge := bytes.Repeat([]byte("a"), 10<<20)
	const auth = "Authorization: Bearer k\r\n"
	post := func(path string, body []byte) []byte {
		return []byte(fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, auth, len(body)))
	}
	cases := []struct {
		name   string
		method string
		path   string
		body   string
		key    string // "" for the right key; "-" for none
		raw    func() (int, []byte)
		status int
		code   string // error.code or error.param to find in the body
	}{
		{name: "broken JSON", body: `{"messages":`, status: 400},
		{name: "not JSON", body: `hello`, status: 400},
		{name: "JSON array", body: `[]`, status: 400},
		{name: "JSON string", body: `"x"`, status: 400},
		{name: "empty body", body: ``, status: 400},
		{name: "trailing data", body: chat("") + `{}`, status: 400},
		{name: "NaN literal", body: chat(`,"temperature":NaN`), status: 400},
		{name: "deep nesting", body: strings.Repeat("[", 100000), status: 400},
		{name: "messages a string", body: `{"model":"` + name + `","messages":"hi"}`, status: 400, code: "messages"},
		{name: "messages empty", body: `{"model":"` + name + `","messages":[]}`, status: 400, code: "messages"},
		{name: "messages missing", body: `{"model":"` + name + `"}`, status: 400, code: "messages"},
		{name: "too many messages", body: many, status: 400, code: "messages"},
		{name: "role missing", body: `{"model":"` + name + `","messages":[{"content":"x"}]}`, status: 400, code: "messages[0].role"},
		{name: "role tool", body: `{"model":"` + name + `","messages":[{"role":"tool","content":"x"}]}`, status: 400, code: "messages[0].role"},
		{name: "content a number", body: msg(`42`), status: 400, code: "messages[0].content"},
		{name: "content empty", body: msg(`""`), status: 400, code: "messages[0].content"},
		{name: "content null", body: msg(`null`), status: 400, code: "messages[0].content"},
		{name: "content image part", body: msg(`[{"type":"image_url","image_url":{"url":"x"}}]`), status: 400, code: "messages[0].content[0]"},
		{name: "max_tokens a string", body: chat(`,"max_tokens":"4"`), status: 400, code: "max_tokens"},
		{name: "max_tokens zero", body: chat(`,"max_tokens":0`), status: 400, code: "max_tokens"},
		{name: "max_tokens negative", body: chat(`,"max_tokens":-5`), status: 400, code: "max_tokens"},
		{name: "max_tokens fractional", body: chat(`,"max_tokens":1.5`), status: 400, code: "max_tokens"},
		{name: "max_tokens beyond int64", body: chat(`,"max_tokens":1e400`), status: 400},
		{name: "temperature negative", body: chat(`,"temperature":-1`), status: 400, code: "temperature"},
		{name: "temperature too high", body: chat(`,"temperature":5`), status: 400, code: "temperature"},
		{name: "temperature a string", body: chat(`,"temperature":"hot"`), status: 400, code: "temperature"},
		{name: "top_p above 1", body: chat(`,"top_p":1.5`), status: 400, code: "top_p"},
		{name: "top_k negative", body: chat(`,"top_k":-1`), status: 400, code: "top_k"},
		{name: "frequency_penalty 3", body: chat(`,"frequency_penalty":3`), status: 400, code: "frequency_penalty"},
		{name: "presence_penalty -3", body: chat(`,"presence_penalty":-3`), status: 400, code: "presence_penalty"},
		{name: "n 17", body: chat(`,"n":17`), status: 400, code: "n"},
		{name: "n 0", body: chat(`,"n":0`), status: 400, code: "n"},
		{name: "logprobs a string", body: chat(`,"logprobs":"yes"`), status: 400, code: "logprobs"},
		{name: "top_logprobs 21", body: chat(`,"logprobs":true,"top_logprobs":21`), status: 400, code: "top_logprobs"},
		{name: "top_logprobs without logprobs", body: chat(`,"top_logprobs":2`), status: 400, code: "top_logprobs"},
		{name: "tools", body: chat(`,"tools":[{"type":"function","function":{"name":"f"}}]`), status: 400, code: "tools"},
		{name: "tool_choice required", body: chat(`,"tool_choice":"required"`), status: 400, code: "tool_choice"},
		{name: "response_format json_schema with a pattern", body: chat(`,"response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"string","pattern":"a+"}}}`), status: 400, code: "response_format"},
		{name: "response_format json_schema without a schema", body: chat(`,"response_format":{"type":"json_schema","json_schema":{"name":"a"}}`), status: 400, code: "response_format"},
		{name: "response_format json_schema recursive", body: chat(`,"response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"$defs":{"n":{"type":"array","items":{"$ref":"#/$defs/n"}}},"$ref":"#/$defs/n"}}}`), status: 400, code: "response_format"},
		{name: "logit_bias outside the vocabulary", body: chat(`,"logit_bias":{"50256":-100}`), status: 400, code: "logit_bias"},
		{name: "logit_bias key a word", body: chat(`,"logit_bias":{"the":1}`), status: 400, code: "logit_bias"},
		{name: "logit_bias key 07", body: chat(`,"logit_bias":{"07":1}`), status: 400, code: "logit_bias"},
		{name: "logit_bias key negative", body: chat(`,"logit_bias":{"-1":1}`), status: 400, code: "logit_bias"},
		{name: "logit_bias 101", body: chat(`,"logit_bias":{"7":101}`), status: 400, code: "logit_bias"},
		{name: "logit_bias a string value", body: chat(`,"logit_bias":{"7":"x"}`), status: 400, code: "logit_bias"},
		{name: "logit_bias a list", body: chat(`,"logit_bias":[1]`), status: 400, code: "logit_bias"},
		{name: "five stops", body: chat(`,"stop":["a","b","c","d","e"]`), status: 400, code: "stop"},
		{name: "stop a number", body: chat(`,"stop":7`), status: 400, code: "stop"},
		{name: "stop empty", body: chat(`,"stop":""`), status: 400, code: "stop"},
		{name: "stream a string", body: chat(`,"stream":"yes"`), status: 400, code: "stream"},
		{name: "stream_options without stream", body: chat(`,"stream_options":{"include_usage":true}`), status: 400, code: "stream_options"},
		{name: "seed a string", body: chat(`,"seed":"abc"`), status: 400, code: "seed"},
		{name: "model a number", body: `{"model":5,"messages":[{"role":"user","content":"x"}]}`, status: 400, code: "model"},
		{name: "unknown model", body: `{"model":"gpt-4","messages":[{"role":"user","content":"x"}]}`, status: 404, code: "model_not_found"},
		{name: "invalid UTF-8", body: chat("")[:len(chat(""))-1] + ",\"user\":\"\xff\xfe\"}", status: 400},
		{name: "prompt too long", body: msg(jsonString(long)), status: 400, code: "context_length_exceeded"},
		{name: "completion without prompt", path: "/v1/completions", body: compl(""), status: 400, code: "prompt"},
		{name: "completion prompt empty array", path: "/v1/completions", body: compl(`,"prompt":[]`), status: 400, code: "prompt"},
		{name: "completion prompt two strings", path: "/v1/completions", body: compl(`,"prompt":["a","b"]`), status: 400, code: "prompt"},
		{name: "completion token outside vocab", path: "/v1/completions", body: compl(`,"prompt":[1,999999]`), status: 400, code: "prompt"},
		{name: "completion prompt an object", path: "/v1/completions", body: compl(`,"prompt":{"a":1}`), status: 400, code: "prompt"},
		{name: "completion prompt batch of two", path: "/v1/completions", body: compl(`,"prompt":[[1,2],[3]]`), status: 400, code: "prompt"},
		{name: "completion logprobs 6", path: "/v1/completions", body: compl(`,"prompt":"a","logprobs":6`), status: 400, code: "logprobs"},
		{name: "completion logprobs true", path: "/v1/completions", body: compl(`,"prompt":"a","logprobs":true`), status: 400, code: "logprobs"},
		{name: "completion best_of 3", path: "/v1/completions", body: compl(`,"prompt":"a","best_of":3`), status: 400, code: "best_of"},
		{name: "completion suffix", path: "/v1/completions", body: compl(`,"prompt":"a","suffix":"z"`), status: 400, code: "suffix"},
		{name: "completion prompt too long", path: "/v1/completions", body: compl(`,"prompt":` + jsonString(long)), status: 400, code: "context_length_exceeded"},
		{name: "min_tokens", body: chat(`,"min_tokens":2`), status: 400, code: "min_tokens"},
		{name: "repetition_penalty against repeat_penalty", body: chat(`,"repetition_penalty":1.2,"repeat_penalty":1.1`), status: 400, code: "repetition_penalty"},
		{name: "repetition_penalty 11", body: chat(`,"repetition_penalty":11`), status: 400, code: "repetition_penalty"},
		{name: "GET on chat", method: "GET", status: 405, code: "method_not_allowed"},
		{name: "PUT on models", method: "PUT", path: "/v1/models", status: 405, code: "method_not_allowed"},
		{name: "unknown path", path: "/v1/engines", body: chat(""), status: 404, code: "not_found"},
		{name: "admin over TCP", path: "/admin/drain", status: 404, code: "not_found"},
		{name: "no API key", key: "-", body: chat(""), status: 401, code: "invalid_api_key"},
		{name: "wrong API key", key: "nope", body: chat(""), status: 401, code: "invalid_api_key"},
		{name: "empty bearer", key: " ", body: chat(""), status: 401, code: "invalid_api_key"},
		// A 10 MB body is refused from its Content-Length, before it is
		// read. curl sends it as clients do, with "Expect: 100-continue"; a
		// raw client declares it and sends none (a client that pushes the
		// body regardless may see its connection reset before it reads the
		// answer, as TCP resets a socket closed with unread data).
		{name: "10 MB body (curl)", status: 413, code: "request_too_large", raw: func() (int, []byte) {
			file := filepath.Join(t.TempDir(), "huge.json")
			os.WriteFile(file, huge, 0o644)
			return curl(t, "-H", "Authorization: Bearer k", "--data-binary", "@"+file, p.url+"/v1/chat/completions")
		}},
		{name: "10 MB body declared", status: 413, code: "request_too_large", raw: func() (int, []byte) {
			return rawHTTP(t, addr, post("/v1/chat/completions", huge))
		}},
		{name: "slow client", status: 408, code: "request_timeout", raw: func() (int, []byte) {
			// Headers promise 100 bytes; 10 come; the rest never does.
			h := post("/v1/chat/completions", make([]byte, 100))
			return rawHTTP(t, addr, append(h, `{"model":"`...))
		}},
		{name: "malformed request line", status: 400, code: "bad_http", raw: func() (int, []byte) {
			return rawHTTP(t, addr, []byte("HELLO\r\n\r\n"))
		}},
		{name: "huge header", status: 431, code: "headers_too_large", raw: func() (int, []byte) {
			// Exactly fasthttp's 4096-byte read buffer of headers that do
			// not end: the server reads all of it, so that it closes the
			// connection with nothing unread (no reset before the answer).
			h := "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: "
			return rawHTTP(t, addr, []byte(h+strings.Repeat("b", 4096-len(h))))
		}},
	}
	if len(cases) < 40 {
		t.Fatalf("only %d cases", len(cases))
	}
	t.Logf("%d bad requests, each followed by a good one", len(cases))
	good := func() {
		t.Helper()
		req, _ := http.NewRequest("POST", p.url+"/v1/chat/completions", strings.NewReader(chat("")))
		req.Header.Set("Authorization", "Bearer k")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("good request: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"chat.completion"`)) {
			t.Fatalf("good request: %d %s", resp.StatusCode, b)
		}
	}
	for _, c := range cases {
		var status int
		var body []byte
		if c.raw != nil {
			status, body = c.raw()
		} else {
			method, path := c.method, c.path
			if method == "" {
				method = "POST"
			}
			if path == "" {
				path = "/v1/chat/completions"
			}
			req, _ := http.NewRequest(method, p.url+path, strings.NewReader(c.body))
			switch c.key {
			case "":
				req.Header.Set("Authorization", "Bearer k")
			case "-":
			default:
				req.Header.Set("Authorization", "Bearer "+c.key)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
				continue
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			status = resp.StatusCode
		}
		var e chatResp
		if status != c.status {
			t.Errorf("%s: status %d, want %d: %.300s", c.name, status, c.status, body)
		} else if err := jsonUnmarshal(body, &e); err != nil || e.Error == nil || e.Error.Message == "" || e.Error.Type == "" {
			t.Errorf("%s: body is not an OpenAI error object: %.300s", c.name, body)
		} else if c.code != "" && !bytes.Contains(body, []byte(`"`+c.code+`"`)) {
			t.Errorf("%s: body does not name %q: %.300s", c.name, c.code, body)
		}
		good()
	}
	p.stop(t)
}
