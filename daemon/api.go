package daemon

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/octet-dev/octet/model/chat"
	"github.com/octet-dev/octet/model/constrain"
	"github.com/octet-dev/octet/model/sample"
	"github.com/octet-dev/octet/scheduler"
)

// genRequest is a validated completion or chat request.
type genRequest struct {
	Model         string
	Chat          bool
	Messages      []chat.Message // chat
	Prompt        string         // completions, as text
	PromptTokens  []int32        // completions, as token ids (Prompt is then "")
	MaxTokens     int            // 0: the configured default
	ScoreOnly     bool           // completions: echo with max_tokens 0, the prompt (and its logprobs) and nothing generated
	Sample        sample.Params
	SeedSet       bool
	Stop          []string
	Stream        bool
	IncludeUsage  bool
	IgnoreEOS     bool
	JSON          bool                // response_format json_object or json_schema: the answer is one JSON object
	Schema        *constrain.Compiled // and, with a schema, one it allows
	Echo          bool                // completions: the answer's text (and logprobs) begin with the prompt's
	N             int                 // choices (1 when absent)
	Logprobs      bool                // report each token's log-probability
	TopLogprobs   int                 // and this many likeliest alternatives
	Priority      int                 // lower is admitted first (vLLM's "priority"), under the priority and fair policies
	QueueDeadline time.Duration       // most time to wait in the queue (0: no bound)
}

// params are the fields chat and completion requests share. Pointers tell
// an absent field from a zero one.
type params struct {
	Model               string          `json:"model"`
	MaxTokens           *int64          `json:"max_tokens"`
	MaxCompletionTokens *int64          `json:"max_completion_tokens"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	TopK                *int64          `json:"top_k"`
	MinP                *float64        `json:"min_p"`
	FrequencyPenalty    *float64        `json:"frequency_penalty"`
	PresencePenalty     *float64        `json:"presence_penalty"`
	RepeatPenalty       *float64        `json:"repeat_penalty"`
	RepetitionPenalty   *float64        `json:"repetition_penalty"` // vLLM's name for repeat_penalty
	MinTokens           *int64          `json:"min_tokens"`
	Seed                *int64          `json:"seed"`
	Stop                json.RawMessage `json:"stop"`
	Stream              *bool           `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage *bool `json:"include_usage"`
	} `json:"stream_options"`
	N           *int64          `json:"n"`
	Logprobs    json.RawMessage `json:"logprobs"`
	TopLogprobs *int64          `json:"top_logprobs"`
	Echo        *bool           `json:"echo"`
	BestOf      *int64          `json:"best_of"`
	Tools       json.RawMessage `json:"tools"`
	ToolChoice  json.RawMessage `json:"tool_choice"`
	Functions   json.RawMessage `json:"functions"`
	RespFormat  *struct {
		Type       *string `json:"type"`
		JSONSchema *struct {
			Schema json.RawMessage `json:"schema"`
		} `json:"json_schema"` // OpenAI's
		Schema json.RawMessage `json:"schema"` // llama.cpp's, with json_object
	} `json:"response_format"`
	JSONSchema   json.RawMessage    `json:"json_schema"`   // llama.cpp's
	GuidedJSON   json.RawMessage    `json:"guided_json"`   // vLLM's: a schema, or its text
	GuidedChoice json.RawMessage    `json:"guided_choice"` // vLLM's: the answer is one of these texts
	LogitBias    map[string]float64 `json:"logit_bias"`
	IgnoreEOS    *bool              `json:"ignore_eos"`
	Priority     *int64             `json:"priority"`
	// QueueDeadlineMS bounds the time the request may wait in the queue;
	// past it the request ends with 429 queue_deadline.
	QueueDeadlineMS *int64 `json:"queue_deadline_ms"`
}

type chatBody struct {
	params
	Messages []struct {
		Role    *string         `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
}

type completionBody struct {
	params
	Prompt json.RawMessage `json:"prompt"`
	Suffix *string         `json:"suffix"`
}

// Request limits that do not depend on configuration.
const (
	maxStops       = 4
	maxStopLen     = 256
	maxMessages    = 1024
	maxPromptIDs   = 1 << 20
	maxTemperature = 2
	// maxChoices bounds n: each choice is a sequence of its own in the
	// scheduler (vLLM does not bound it; OpenAI takes up to 128).
	maxChoices = 16
)

// badRequest is a 400 about one field.
func badRequest(param, format string, args ...any) *apiError {
	return &apiError{Status: 400, Type: "invalid_request_error", Param: param, Msg: fmt.Sprintf(format, args...)}
}

// decode unmarshals a JSON object body strictly enough for an API: valid
// UTF-8, one object, no trailing data; unknown fields are ignored (clients
// send many that do not apply).
func decode(body []byte, v any) *apiError {
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("", "the request body is empty; send a JSON object")
	}
	if !utf8.Valid(body) {
		return badRequest("", "the request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te) && te.Field != "":
			field := strings.TrimPrefix(te.Field, "params.") // the embedded struct's name
			return badRequest(field, "%s must be %s, not a JSON %s", field, jsonKind(te.Type.Kind().String()), te.Value)
		case errors.As(err, &te):
			return badRequest("", "the request body must be a JSON object, not a JSON %s", te.Value)
		case errors.As(err, &se):
			return badRequest("", "the request body is not valid JSON: %v (at byte %d)", se, se.Offset)
		default:
			return badRequest("", "the request body is not valid JSON: %v", err)
		}
	}
	if dec.More() {
		return badRequest("", "the request body has data after its JSON object")
	}
	return nil
}

func jsonKind(k string) string {
	switch {
	case strings.HasPrefix(k, "int"), strings.HasPrefix(k, "uint"):
		return "an integer"
	case strings.HasPrefix(k, "float"):
		return "a number"
	case k == "bool":
		return "a boolean"
	case k == "string":
		return "a string"
	case k == "slice":
		return "an array"
	}
	return "an object"
}

// parseChat reads and validates a /v1/chat/completions body.
func parseChat(body []byte, maxTokens int) (*genRequest, *apiError) {
	var b chatBody
	if e := decode(body, &b); e != nil {
		return nil, e
	}
	g := &genRequest{Chat: true}
	if e := b.params.apply(g, maxTokens); e != nil {
		return nil, e
	}
	if b.Messages == nil {
		return nil, badRequest("messages", "messages is required: an array of {role, content}")
	}
	if len(b.Messages) == 0 {
		return nil, badRequest("messages", "messages must not be empty")
	}
	if len(b.Messages) > maxMessages {
		return nil, badRequest("messages", "messages has %d entries; at most %d are accepted", len(b.Messages), maxMessages)
	}
	for i, m := range b.Messages {
		param := fmt.Sprintf("messages[%d]", i)
		if m.Role == nil {
			return nil, badRequest(param+".role", "%s.role is required", param)
		}
		switch *m.Role {
		case "system", "developer", "user", "assistant":
		default:
			return nil, badRequest(param+".role", "%s.role %q is not supported (system, developer, user, assistant)", param, *m.Role)
		}
		text, e := contentText(m.Content, param+".content")
		if e != nil {
			return nil, e
		}
		if text == "" && *m.Role == "user" {
			return nil, badRequest(param+".content", "%s.content must not be empty", param)
		}
		g.Messages = append(g.Messages, chat.Message{Role: *m.Role, Content: text})
	}
	return g, nil
}

// contentText reads a message's content: a string, null, or an array of
// {"type": "text", "text": …} parts.
func contentText(raw json.RawMessage, param string) (string, *apiError) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", badRequest(param, "%s is not a valid string", param)
		}
		return s, nil
	}
	var parts []struct {
		Type *string `json:"type"`
		Text *string `json:"text"`
	}
	if raw[0] != '[' || json.Unmarshal(raw, &parts) != nil {
		return "", badRequest(param, "%s must be a string or an array of text parts", param)
	}
	var b strings.Builder
	for i, p := range parts {
		if p.Type == nil || *p.Type != "text" || p.Text == nil {
			return "", badRequest(fmt.Sprintf("%s[%d]", param, i), "%s[%d]: only parts of type \"text\" with a text field are supported", param, i)
		}
		b.WriteString(*p.Text)
	}
	return b.String(), nil
}

// parseCompletion reads and validates a /v1/completions body.
func parseCompletion(body []byte, maxTokens int) (*genRequest, *apiError) {
	var b completionBody
	if e := decode(body, &b); e != nil {
		return nil, e
	}
	g := &genRequest{Echo: b.Echo != nil && *b.Echo}
	if e := b.params.apply(g, maxTokens); e != nil {
		return nil, e
	}
	if b.BestOf != nil && *b.BestOf != 1 {
		return nil, badRequest("best_of", "best_of must be 1")
	}
	if b.Suffix != nil && *b.Suffix != "" {
		return nil, badRequest("suffix", "suffix (text after the completion) is not supported")
	}
	raw := bytes.TrimSpace(b.Prompt)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, badRequest("prompt", "prompt is required: a string, an array of one string, or an array of token ids")
	}
	switch raw[0] {
	case '"':
		json.Unmarshal(raw, &g.Prompt)
		return g, nil
	case '[':
		var strs []string
		if json.Unmarshal(raw, &strs) == nil {
			if len(strs) != 1 {
				return nil, badRequest("prompt", "prompt as an array must hold exactly one string (batches are not supported), not %d", len(strs))
			}
			g.Prompt = strs[0]
			return g, nil
		}
		var ids []int64
		var batch [][]int64 // a batch of one (lm-eval's local-completions sends one so)
		switch {
		case json.Unmarshal(raw, &ids) == nil:
		case json.Unmarshal(raw, &batch) == nil && len(batch) == 1:
			ids = batch[0]
		case batch != nil:
			return nil, badRequest("prompt", "prompt as an array of token id arrays must hold exactly one (batches are not supported), not %d", len(batch))
		default:
			return nil, badRequest("prompt", "prompt must be a string, an array of one string, or an array of token ids")
		}
		if len(ids) == 0 {
			return nil, badRequest("prompt", "prompt must not be an empty array")
		}
		if len(ids) > maxPromptIDs {
			return nil, badRequest("prompt", "prompt has too many token ids")
		}
		for _, id := range ids {
			if id < 0 || id > math.MaxInt32 {
				return nil, badRequest("prompt", "token id %d is out of range", id)
			}
			g.PromptTokens = append(g.PromptTokens, int32(id))
		}
		return g, nil
	}
	return nil, badRequest("prompt", "prompt must be a string, an array of one string, or an array of token ids")
}

// format reads how the answer is held to a form: response_format (text,
// json_object, OpenAI's json_schema, llama.cpp's json_object with a
// schema), llama.cpp's json_schema, or vLLM's guided_json and
// guided_choice; at most one of them.
func (p *params) format(g *genRequest) *apiError {
	present := func(raw json.RawMessage) bool {
		t := bytes.TrimSpace(raw)
		return len(t) > 0 && string(t) != "null"
	}
	var named []string
	var schema json.RawMessage
	param := "response_format"
	if rf := p.RespFormat; rf != nil && rf.Type != nil {
		switch *rf.Type {
		case "text":
		case "json_object":
			g.JSON, schema = true, rf.Schema
			named = append(named, "response_format")
		case "json_schema":
			if rf.JSONSchema == nil || !present(rf.JSONSchema.Schema) {
				return badRequest("response_format", "response_format json_schema needs json_schema.schema, the JSON schema of the answer")
			}
			g.JSON, schema = true, rf.JSONSchema.Schema
			named = append(named, "response_format")
		default:
			return badRequest("response_format", "response_format %q is not supported (\"text\", \"json_object\" or \"json_schema\")", *rf.Type)
		}
	}
	if present(p.JSONSchema) {
		g.JSON, schema, param = true, p.JSONSchema, "json_schema"
		named = append(named, param)
	}
	if present(p.GuidedJSON) {
		schema, param = p.GuidedJSON, "guided_json"
		var text string
		if json.Unmarshal(schema, &text) == nil { // the schema's text, as vLLM also takes it
			if schema = json.RawMessage(text); !present(schema) {
				return badRequest("guided_json", "guided_json is an empty schema text")
			}
		}
		g.JSON = true
		named = append(named, param)
	}
	if present(p.GuidedChoice) {
		named = append(named, "guided_choice")
	}
	if len(named) > 1 {
		return badRequest(named[1], "%s and %s both hold the answer to a form: send one", named[0], named[1])
	}
	if present(p.GuidedChoice) {
		var choices []string
		if json.Unmarshal(p.GuidedChoice, &choices) != nil || len(choices) == 0 || slices.Contains(choices, "") {
			return badRequest("guided_choice", "guided_choice must be a list of non-empty texts, the answers allowed")
		}
		c, err := constrain.CachedChoice(choices)
		if err != nil {
			return badRequest("guided_choice", "guided_choice: %v", err)
		}
		g.Schema = c
		return nil
	}
	if present(schema) {
		c, err := constrain.CachedSchema(bytes.TrimSpace(schema))
		if err != nil {
			return badRequest(param, "%s's schema: %v", param, err)
		}
		g.Schema = c
	}
	return nil
}

// apply checks the shared fields and copies them into g.
func (p *params) apply(g *genRequest, maxTokens int) *apiError {
	g.Model = p.Model
	for _, mt := range []struct {
		name string
		v    *int64
	}{{"max_tokens", p.MaxTokens}, {"max_completion_tokens", p.MaxCompletionTokens}} {
		if mt.v == nil {
			continue
		}
		switch {
		case *mt.v == 0 && g.Echo: // OpenAI's legacy scoring call
			g.ScoreOnly = true
			continue
		case *mt.v == 0 && !g.Chat:
			return badRequest(mt.name, "%s must be at least 1 (0 only with echo, to score the prompt)", mt.name)
		case *mt.v < 1:
			return badRequest(mt.name, "%s must be at least 1, not %d", mt.name, *mt.v)
		}
		g.MaxTokens = int(min(*mt.v, int64(maxTokens))) // more than the server allows is cut to it
	}
	if p.MinTokens != nil && *p.MinTokens > 0 {
		return badRequest("min_tokens", "min_tokens is not supported")
	}
	sp := sample.Params{Temperature: 1, TopP: 1, RepeatPenalty: 1}
	fl := func(name string, v *float64, lo, hi float64, dst *float32) *apiError {
		if v == nil {
			return nil
		}
		if math.IsNaN(*v) || *v < lo || *v > hi {
			return badRequest(name, "%s must be between %g and %g, not %g", name, lo, hi, *v)
		}
		*dst = float32(*v)
		return nil
	}
	for _, e := range []*apiError{
		fl("temperature", p.Temperature, 0, maxTemperature, &sp.Temperature),
		fl("top_p", p.TopP, 0, 1, &sp.TopP),
		fl("min_p", p.MinP, 0, 1, &sp.MinP),
		fl("frequency_penalty", p.FrequencyPenalty, -2, 2, &sp.FrequencyPenalty),
		fl("presence_penalty", p.PresencePenalty, -2, 2, &sp.PresencePenalty),
		fl("repeat_penalty", p.RepeatPenalty, 0, 10, &sp.RepeatPenalty),
		fl("repetition_penalty", p.RepetitionPenalty, 0, 10, &sp.RepeatPenalty),
	} {
		if e != nil {
			return e
		}
	}
	if p.RepeatPenalty != nil && p.RepetitionPenalty != nil && *p.RepeatPenalty != *p.RepetitionPenalty {
		return badRequest("repetition_penalty", "repetition_penalty %g and repeat_penalty %g differ; they are the same penalty, send one", *p.RepetitionPenalty, *p.RepeatPenalty)
	}
	if p.TopK != nil {
		if *p.TopK < 0 || *p.TopK > math.MaxInt32 {
			return badRequest("top_k", "top_k must be between 0 and %d, not %d", math.MaxInt32, *p.TopK)
		}
		sp.TopK = int(*p.TopK)
	}
	if p.TopP != nil && *p.TopP == 0 {
		sp.TopK = 1 // top_p 0 keeps only the likeliest token (sample takes 0 as no limit)
	}
	if p.Seed != nil {
		sp.Seed = uint64(*p.Seed)
		g.SeedSet = true
	}
	if err := sp.Validate(); err != nil {
		return badRequest("", "%v", err)
	}
	g.Sample = sp
	g.N = 1
	if p.N != nil {
		if *p.N < 1 || *p.N > maxChoices {
			return badRequest("n", "n must be between 1 and %d, not %d", maxChoices, *p.N)
		}
		g.N = int(*p.N)
	}
	if e := p.logprobs(g); e != nil {
		return e
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
	}{{"tools", p.Tools}, {"tool_choice", p.ToolChoice}, {"functions", p.Functions}} {
		switch string(bytes.TrimSpace(f.raw)) {
		case "", "null", "[]", `"none"`:
		default:
			return badRequest(f.name, "%s: tool and function calls are not supported", f.name)
		}
	}
	if e := p.format(g); e != nil {
		return e
	}
	bias, e := logitBias(p.LogitBias)
	if e != nil {
		return e
	}
	g.Sample.LogitBias = bias
	if p.Stream != nil {
		g.Stream = *p.Stream
	}
	if p.StreamOptions != nil {
		if !g.Stream {
			return badRequest("stream_options", "stream_options is only allowed with stream: true")
		}
		if p.StreamOptions.IncludeUsage != nil {
			g.IncludeUsage = *p.StreamOptions.IncludeUsage
		}
	}
	if p.IgnoreEOS != nil {
		g.IgnoreEOS = *p.IgnoreEOS
	}
	if p.Priority != nil {
		if *p.Priority < -1000 || *p.Priority > 1000 {
			return badRequest("priority", "priority must be between -1000 and 1000, not %d", *p.Priority)
		}
		g.Priority = int(*p.Priority)
	}
	if p.QueueDeadlineMS != nil {
		if *p.QueueDeadlineMS < 1 || *p.QueueDeadlineMS > 86_400_000 {
			return badRequest("queue_deadline_ms", "queue_deadline_ms must be between 1 and 86400000, not %d", *p.QueueDeadlineMS)
		}
		g.QueueDeadline = time.Duration(*p.QueueDeadlineMS) * time.Millisecond
	}
	stops, e := parseStop(p.Stop)
	if e != nil {
		return e
	}
	g.Stop = stops
	return nil
}

// Most top alternatives per token: OpenAI's limits.
const (
	maxTopLogprobsChat       = scheduler.MaxTopLogprobs
	maxTopLogprobsCompletion = 5
)

// logprobs reads the two shapes of the option: chat's logprobs (a boolean)
// with top_logprobs (0 to 20), and completions' logprobs (an integer 0 to 5,
// the number of alternatives).
// logitBias reads OpenAI's logit_bias: token ids (the object's keys, in
// decimal) to a bias in [-100, 100] added to their logits; in id order, so
// that a request samples alike however its object was ordered. prepare
// checks the ids against the model's vocabulary.
func logitBias(m map[string]float64) ([]sample.Bias, *apiError) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make([]sample.Bias, 0, len(m))
	for k, v := range m {
		id, err := strconv.ParseInt(k, 10, 32)
		if err != nil || id < 0 || strconv.FormatInt(id, 10) != k {
			return nil, badRequest("logit_bias", "logit_bias keys are token ids in decimal, not %q", k)
		}
		if math.IsNaN(v) || v < -100 || v > 100 {
			return nil, badRequest("logit_bias", "logit_bias for token %d must be between -100 and 100, not %g", id, v)
		}
		out = append(out, sample.Bias{ID: int32(id), Value: float32(v)})
	}
	slices.SortFunc(out, func(a, b sample.Bias) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

func (p *params) logprobs(g *genRequest) *apiError {
	raw := bytes.TrimSpace(p.Logprobs)
	absent := len(raw) == 0 || string(raw) == "null"
	if !g.Chat {
		if p.TopLogprobs != nil {
			return badRequest("top_logprobs", "top_logprobs belongs to chat completions; here logprobs is the number of alternatives (0 to %d)", maxTopLogprobsCompletion)
		}
		if absent {
			return nil
		}
		var n int64
		if json.Unmarshal(raw, &n) != nil || n < 0 || n > maxTopLogprobsCompletion {
			return badRequest("logprobs", "logprobs must be an integer from 0 to %d (the alternatives per token), not %s", maxTopLogprobsCompletion, raw)
		}
		g.Logprobs, g.TopLogprobs = true, int(n)
		return nil
	}
	if !absent && json.Unmarshal(raw, &g.Logprobs) != nil {
		return badRequest("logprobs", "logprobs must be a boolean, not %s", raw)
	}
	if p.TopLogprobs != nil {
		if n := *p.TopLogprobs; n < 0 || n > maxTopLogprobsChat {
			return badRequest("top_logprobs", "top_logprobs must be from 0 to %d, not %d", maxTopLogprobsChat, n)
		}
		if *p.TopLogprobs > 0 && !g.Logprobs {
			return badRequest("top_logprobs", "top_logprobs needs logprobs: true")
		}
		g.TopLogprobs = int(*p.TopLogprobs)
	}
	return nil
}

// parseStop reads stop: absent, null, a string, or an array of strings.
func parseStop(raw json.RawMessage) ([]string, *apiError) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var stops []string
	var one string
	if json.Unmarshal(raw, &one) == nil {
		stops = []string{one}
	} else if json.Unmarshal(raw, &stops) != nil {
		return nil, badRequest("stop", "stop must be a string or an array of strings")
	}
	if len(stops) > maxStops {
		return nil, badRequest("stop", "stop has %d strings; at most %d are allowed", len(stops), maxStops)
	}
	for _, s := range stops {
		if s == "" {
			return nil, badRequest("stop", "stop strings must not be empty")
		}
		if len(s) > maxStopLen {
			return nil, badRequest("stop", "a stop string is longer than %d bytes", maxStopLen)
		}
	}
	return stops, nil
}

// modelsPrefix is the route of GET /v1/models/{id}: everything after it is
// the id (a name or an alias may hold a slash).
const modelsPrefix = "/v1/models/"

// routeOf finds the route of path: its entry in routes, or else the entry
// of a prefix ending in "/" that path extends (/v1/models/ for
// /v1/models/{id}).
func routeOf(path string) (route, bool) {
	if r, ok := routes[path]; ok {
		return r, true
	}
	for p, r := range routes {
		if strings.HasSuffix(p, "/") && len(path) > len(p) && strings.HasPrefix(path, p) {
			return r, true
		}
	}
	return route{}, false
}

// getModel serves GET /v1/models/{id} (OpenAI's models.retrieve): the
// model's entry of /v1/models, found by its name or an alias as requests
// find it.
func (s *server) getModel(ctx *fasthttp.RequestCtx) {
	id := strings.TrimPrefix(string(ctx.Path()), modelsPrefix)
	if l, ok := s.models.Acquire(id); ok {
		name := l.Name
		l.Release()
		for _, m := range s.modelInfos() {
			if m.ID == name {
				writeJSON(ctx, 200, m)
				return
			}
		}
	}
	errModelNotFound(id, s.models.Names()).write(ctx)
}
