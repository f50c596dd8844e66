package daemon

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/octet-dev/octet/model/sample"
	"github.com/octet-dev/octet/model/tokenizer"
	"github.com/octet-dev/octet/scheduler"
)

// FuzzParseRequest: no body makes the parsers panic; an accepted request
// is within the limits.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"temperature":0.5,"stop":["\n"],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"messages":[{"role":"system","content":[{"type":"text","text":"a"}]},{"role":"user","content":"b"}],"seed":-1,"top_k":3,"min_p":0.1}`,
		`{"model":"m","prompt":"Once upon a time","max_tokens":1,"stop":"x"}`,
		`{"prompt":[1,2,3],"n":1,"logprobs":null}`, `{"prompt":"a","n":3}`,
		`{"prompt":"a","logprobs":3}`, `{"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":5}`,
		`{"prompt":["a"],"echo":false,"best_of":1}`,
		`{"prompt":"a","top_p":0,"max_tokens":99999,"repetition_penalty":1.1,"suffix":"","min_tokens":0}`,
		`{"prompt":"a","logit_bias":{"7":-100,"12":2.5}}`, `{"prompt":"a","logit_bias":{"007":1,"x":1e9}}`,
		`{"messages":"x"}`, `[]`, `{"max_tokens":1e400}`, "\xff", ``,
		`{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object","properties":{"a":{"type":"array","items":{"enum":[1,"x"]}}},"required":["a"]}}}}`,
		`{"prompt":"a","response_format":{"type":"json_object","schema":{"$defs":{"p":{"type":["integer","null"]}},"anyOf":[{"$ref":"#/$defs/p"},{"const":true}]}}}`,
		`{"prompt":"a","max_tokens":0,"echo":true,"logprobs":1}`,
		`{"prompt":"a","guided_choice":["yes","no"]}`, `{"prompt":"a","guided_json":"{\"type\":\"integer\"}"}`,
		`{"prompt":"a","json_schema":{"type":"array","maxItems":2},"guided_choice":null}`,
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
				g.TopLogprobs < 0 || g.TopLogprobs > scheduler.MaxTopLogprobs || (g.TopLogprobs > 0 && !g.Logprobs) ||
				g.N < 1 || g.N > maxChoices {
				t.Fatalf("accepted out of bounds: %+v", g)
			}
			if !slices.IsSortedFunc(g.Sample.LogitBias, func(a, b sample.Bias) int { return cmp.Compare(a.ID, b.ID) }) {
				t.Fatalf("logit_bias out of id order: %v", g.Sample.LogitBias)
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

// TestParseSampling: top_p 0 keeps only the likeliest token (top_k 1),
// whatever top_k says; repetition_penalty is repeat_penalty.
func TestParseSampling(t *testing.T) {
	for _, c := range []struct {
		fields string
		topK   int
		rep    float32
	}{
		{`"top_p":0`, 1, 1},
		{`"top_p":0,"top_k":40`, 1, 1},
		{`"top_p":0.5`, 0, 1},
		{`"top_k":40`, 40, 1},
		{`"repetition_penalty":1.3`, 0, 1.3},
		{`"repeat_penalty":1.3`, 0, 1.3},
		{`"repeat_penalty":1.3,"repetition_penalty":1.3`, 0, 1.3},
	} {
		g, e := parseCompletion([]byte(`{"prompt":"a",`+c.fields+`}`), 100)
		if e != nil || g.Sample.TopK != c.topK || g.Sample.RepeatPenalty != c.rep {
			t.Errorf("%s: %+v %v", c.fields, g, e)
		}
	}
}

// TestParseMaxTokens: more than the server allows is cut to it; less than 1
// is a 400.
func TestParseMaxTokens(t *testing.T) {
	for _, c := range []struct {
		fields string
		want   int // -1: a 400
	}{
		{`"max_tokens":8192`, 100}, {`"max_completion_tokens":16384`, 100}, {`"max_tokens":1000000000000`, 100},
		{`"max_tokens":100`, 100}, {`"max_tokens":7`, 7}, {``, 0},
		{`"max_tokens":0`, -1}, {`"max_completion_tokens":-1`, -1}, {`"max_tokens":1e400`, -1},
	} {
		g, e := parseChat([]byte(`{"messages":[{"role":"user","content":"x"}]`+strings.TrimSuffix(","+c.fields, ",")+`}`), 100)
		switch {
		case c.want < 0 && (e == nil || e.Status != 400):
			t.Errorf("%s: %+v, want a 400", c.fields, g)
		case c.want >= 0 && (e != nil || g.MaxTokens != c.want):
			t.Errorf("%s: %+v %v, want max_tokens %d", c.fields, g, e, c.want)
		}
	}
}

// TestParseRefuses: fields octet cannot honour are a 400 naming the field,
// not ignored.
func TestParseRefuses(t *testing.T) {
	for _, c := range []struct {
		chat   bool
		fields string
		param  string // "": accepted
	}{
		{false, `"suffix":"The end."`, "suffix"},
		{false, `"suffix":""`, ""},
		{false, `"suffix":null`, ""},
		{false, `"min_tokens":5`, "min_tokens"},
		{true, `"min_tokens":5`, "min_tokens"},
		{true, `"min_tokens":0`, ""},
		{true, `"repetition_penalty":1.2,"repeat_penalty":1.1`, "repetition_penalty"},
		{true, `"repetition_penalty":-1`, "repetition_penalty"},
	} {
		body := `{"prompt":"a",` + c.fields + `}`
		parse := parseCompletion
		if c.chat {
			body = `{"messages":[{"role":"user","content":"x"}],` + c.fields + `}`
			parse = parseChat
		}
		g, e := parse([]byte(body), 100)
		switch {
		case c.param == "" && e != nil:
			t.Errorf("%s: %v", body, e)
		case c.param != "" && (e == nil || e.Status != 400 || e.Param != c.param):
			t.Errorf("%s: %+v %+v, want a 400 on %s", body, g, e, c.param)
		}
	}
}

// TestCompletionTextOffset: completions' text_offset counts characters, not
// bytes, also across the chunks of a stream and through a character split
// over byte tokens.
func TestCompletionTextOffset(t *testing.T) {
	tok, err := tokenizer.New(&tokenizer.Vocab{
		Model:  "llama",
		Tokens: []string{"<unk>", "<s>", "</s>", "<0xC3>", "<0xA9>", "▁caf", "é", "▁au", "▁lait"},
		Types: []tokenizer.TokenType{tokenizer.TypeUnknown, tokenizer.TypeControl, tokenizer.TypeControl,
			tokenizer.TypeByte, tokenizer.TypeByte, tokenizer.TypeNormal, tokenizer.TypeNormal, tokenizer.TypeNormal, tokenizer.TypeNormal},
		BOS: 1, EOS: 2, UNK: 0, EOT: -1, EOM: -1, PAD: -1, SEP: -1, CLS: -1, MASK: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	lps := func(ids ...int32) []scheduler.TokenLogprob {
		out := make([]scheduler.TokenLogprob, len(ids))
		for i, id := range ids {
			out[i] = scheduler.TokenLogprob{ID: id}
		}
		return out
	}
	// " caf" + byte C3 + byte A9 (é) + " au" | "é" + " lait": " café au" "é lait".
	first, next := newCompletionLogprobs(tok, lps(5, 3, 4, 7), 0)
	second, end := newCompletionLogprobs(tok, lps(6, 8), next)
	text := strings.Join(append(first.Tokens, second.Tokens...), "")
	if text != " café aué lait" {
		t.Fatalf("tokens make %q", text)
	}
	got := append(first.TextOffset, second.TextOffset...)
	if want := []int{0, 4, 5, 5, 8, 9}; fmt.Sprint(got) != fmt.Sprint(want) || end != utf8.RuneCountInString(text) {
		t.Errorf("text_offset %v, end %d; want %v, %d", got, end, want, utf8.RuneCountInString(text))
	}
}
