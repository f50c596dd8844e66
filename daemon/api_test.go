package daemon

import (
	"testing"

	"github.com/octet-dev/octet/scheduler"
)

// FuzzParseRequest: no body makes the parsers panic; an accepted request
// is within the limits.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"temperature":0.5,"stop":["\n"],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"messages":[{"role":"system","content":[{"type":"text","text":"a"}]},{"role":"user","content":"b"}],"seed":-1,"top_k":3,"min_p":0.1}`,
		`{"model":"m","prompt":"Once upon a time","max_tokens":1,"stop":"x"}`,
		`{"prompt":[1,2,3],"n":1,"logprobs":null}`,
		`{"prompt":"a","logprobs":3}`, `{"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":5}`,
		`{"prompt":["a"],"echo":false,"best_of":1}`,
		`{"messages":"x"}`, `[]`, `{"max_tokens":1e400}`, "\xff", ``,
	} {
		f.Add([]byte(s))
	}
	const limit = 1000
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, parse := range []func([]byte, int) (*genRequest, *apiError){parseChat, parseCompletion} {
			g, e := parse(body, limit)
			if (g == nil) == (e == nil) {
				t.Fatalf("request %v and error %v", g, e)
			}
			if e != nil {
				if e.Status != 400 || e.Msg == "" || len(e.body()) == 0 {
					t.Fatalf("bad error %+v", e)
				}
				continue
			}
			if g.MaxTokens < 0 || g.MaxTokens > limit || len(g.Stop) > maxStops || g.Sample.Validate() != nil ||
				g.Sample.Temperature > maxTemperature || (g.IncludeUsage && !g.Stream) ||
				g.TopLogprobs < 0 || g.TopLogprobs > scheduler.MaxTopLogprobs || (g.TopLogprobs > 0 && !g.Logprobs) {
				t.Fatalf("accepted out of bounds: %+v", g)
			}
			if g.Chat && len(g.Messages) == 0 || g.PromptTokens != nil && len(g.PromptTokens) == 0 {
				t.Fatalf("accepted without input: %+v", g)
			}
		}
	})
}

func TestParseAccepts(t *testing.T) {
	g, e := parseChat([]byte(`{"model":"m","messages":[{"role":"developer","content":"d"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":null}],"max_completion_tokens":7,"stop":"END","seed":3,"stream":true,"stream_options":{"include_usage":true},"user":"u","unknown_field":1}`), 100)
	if e != nil {
		t.Fatal(e)
	}
	if g.Model != "m" || len(g.Messages) != 3 || g.Messages[1].Content != "ab" || g.MaxTokens != 7 || g.Stop[0] != "END" ||
		!g.SeedSet || g.Sample.Seed != 3 || !g.IncludeUsage || g.Sample.Temperature != 1 || g.Sample.TopP != 1 {
		t.Errorf("%+v", g)
	}
	g, e = parseCompletion([]byte(`{"prompt":[5,6],"temperature":0}`), 100)
	if e != nil || len(g.PromptTokens) != 2 || g.Sample.Temperature != 0 || g.Model != "" || g.Logprobs {
		t.Errorf("%+v %v", g, e)
	}
	// The two shapes of logprobs, and what clients send by default.
	for _, c := range []struct {
		chat bool
		body string
		lp   bool
		top  int
	}{
		{true, `{"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":3}`, true, 3},
		{true, `{"messages":[{"role":"user","content":"x"}],"logprobs":false,"top_logprobs":0,"tools":[],"tool_choice":"none","response_format":{"type":"text"},"logit_bias":{}}`, false, 0},
		{false, `{"prompt":"a","logprobs":0}`, true, 0},
		{false, `{"prompt":"a","logprobs":5}`, true, 5},
		{false, `{"prompt":"a","logprobs":null}`, false, 0},
	} {
		parse := parseCompletion
		if c.chat {
			parse = parseChat
		}
		g, e := parse([]byte(c.body), 100)
		if e != nil || g.Logprobs != c.lp || g.TopLogprobs != c.top {
			t.Errorf("%s: %+v %v", c.body, g, e)
		}
	}
}
