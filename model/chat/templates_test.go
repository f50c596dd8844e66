package chat

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// templateFixtures are the real templates in testdata (README.md there says
// where each comes from) and the family each must be detected as.
var templateFixtures = []struct {
	file string
	want Family
}{
	{"mixtral-8x7b-instruct-v0.1.jinja", Mistral},
	{"mistral-7b-instruct-v0.1.jinja", Mistral01},
	{"mistral-7b-instruct-v0.2-revised.jinja", MistralV1},
	{"mistral-instruct-v0.3-last-system.jinja", MistralV3Untrimmed},
	{"mistral-nemo-instruct-2407.jinja", MistralTekken},
	{"mistral-large-instruct-2411.jinja", MistralV7},
	{"mistral-small-3.1-24b-instruct-2503.jinja", MistralV7Tekken},
	{"gemma-2-it.jinja", Gemma},
	{"gemma-3-it.jinja", Gemma3},
	{"phi-3.5-mini-instruct.jinja", Phi35},
}

// deliberate holds, by template file and conversation, what octet renders
// where it departs on purpose from what the template renders.
var deliberate = map[string]map[string]string{
	// No default system prompt (the template writes Mistral Small's, dated).
	"mistral-small-3.1-24b-instruct-2503.jinja": {
		"user":             "[INST]Hi[/INST]",
		"no-system":        "[INST]Hi[/INST]Hello!</s>[INST]Name a color.[/INST]",
		"padded-no-system": "[INST]\n Hi [/INST]  Hello! </s>[INST] Name a color. [/INST]",
	},
	// A system prompt alone is kept as a user turn (these templates write
	// nothing of it).
	"mistral-7b-instruct-v0.2-revised.jinja":  {"only-system": " [INST] Be brief. [/INST]"},
	"mistral-instruct-v0.3-last-system.jinja": {"only-system": "[INST] Be brief.[/INST]"},
	"mistral-nemo-instruct-2407.jinja":        {"only-system": "[INST]Be brief.[/INST]"},
	"gemma-3-it.jinja":                        {"only-system": "<start_of_turn>user\nBe brief.<end_of_turn>\n<start_of_turn>model\n"},
}

// golden is testdata/golden.json, which testdata/golden.py writes with
// jinja2 from the templates there.
type golden struct {
	Conversations map[string][]Message
	Renders       map[string]map[string]string
}

func readGolden(t *testing.T) golden {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatalf("golden.json: %v", err)
	}
	return g
}

// TestDetectTemplates: each real template is detected as its family.
func TestDetectTemplates(t *testing.T) {
	for _, c := range templateFixtures {
		text, err := os.ReadFile(filepath.Join("testdata", c.file))
		if err != nil {
			t.Fatal(err)
		}
		if f, ok := Detect(string(text)); f != c.want || !ok {
			t.Errorf("%s: Detect = %s, %v; want %s", c.file, f, ok, c.want)
		}
	}
}

// TestRenderTemplates compares Render with jinja2's rendering of the real
// templates, for every conversation the template accepts; the conversations
// in deliberate are compared with octet's own rendering instead.
func TestRenderTemplates(t *testing.T) {
	g := readGolden(t)
	for _, c := range templateFixtures {
		renders, ok := g.Renders[c.file]
		if !ok {
			t.Errorf("%s: not in golden.json", c.file)
			continue
		}
		names := make([]string, 0, len(renders))
		for name := range renders {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			want := renders[name]
			if w, ok := deliberate[c.file][name]; ok {
				want = w
			}
			got, err := Template{Family: c.want, BOS: "<s>", EOS: "</s>"}.Render(g.Conversations[name])
			if err != nil || got != want {
				t.Errorf("%s, %s: %v\n got %q\nwant %q", c.file, name, err, got, want)
			}
		}
	}
}
