package tokenizer

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/octet-dev/octet/model/gguf"
)

// shared is the read-only test data directory, relative to this package.
const shared = "../../../shared"

var vocabDir = filepath.Join(shared, "testdata", "tokenizer", "llama.cpp-vocab")

// readShared returns a shared file, skipping the test when it is absent.
func readShared(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		t.Skipf("shared test data %s is absent", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// vectorCase is one case of a llama.cpp test-tokenizer-0 vector file.
type vectorCase struct {
	text string
	ids  []int32
}

// loadVectors reads X.inp and X.out: inputs separated by
// "\n__ggml_vocab_test__\n" (also terminating the file), one line of ids per
// input.
func loadVectors(t testing.TB, base string) []vectorCase {
	t.Helper()
	inp := string(readShared(t, base+".inp"))
	out := string(readShared(t, base+".out"))
	const sep = "\n__ggml_vocab_test__\n"
	texts := strings.Split(inp, sep)
	if texts[len(texts)-1] != "" {
		t.Fatalf("%s.inp does not end with the separator", base)
	}
	texts = texts[:len(texts)-1]
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(texts) {
		t.Fatalf("%s: %d inputs but %d output lines", base, len(texts), len(lines))
	}
	cases := make([]vectorCase, len(texts))
	for i, line := range lines {
		var ids []int32
		for _, f := range strings.Fields(line) {
			n, err := strconv.ParseInt(f, 10, 32)
			if err != nil {
				t.Fatalf("%s.out line %d: %v", base, i+1, err)
			}
			ids = append(ids, int32(n))
		}
		cases[i] = vectorCase{text: texts[i], ids: ids}
	}
	return cases
}

// Tokenizers are cached across tests: building the large ones takes a
// noticeable part of a second on the test machine.
var (
	tokCacheMu sync.Mutex
	tokCache   = map[string]*Tokenizer{}
)

// ggufTokenizer loads shared/testdata/.../ggml-vocab-NAME.gguf.
func ggufTokenizer(t testing.TB, name string) *Tokenizer {
	t.Helper()
	return loadGGUFTokenizer(t, filepath.Join(vocabDir, "ggml-vocab-"+name+".gguf"))
}

func loadGGUFTokenizer(t testing.TB, path string) *Tokenizer {
	t.Helper()
	tokCacheMu.Lock()
	defer tokCacheMu.Unlock()
	if tk, ok := tokCache[path]; ok {
		return tk
	}
	if _, err := os.Stat(path); os.IsNotExist(err) {
		t.Skipf("shared test data %s is absent", path)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tk, err := FromGGUF(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	tokCache[path] = tk
	return tk
}

// hfVocab imports shared/testdata/tokenizer/hf/DIR.
func hfVocab(t testing.TB, dir string) *Vocab {
	t.Helper()
	base := filepath.Join(shared, "testdata", "tokenizer", "hf", dir)
	tj := readShared(t, filepath.Join(base, "tokenizer.json"))
	cfg, err := os.ReadFile(filepath.Join(base, "tokenizer_config.json"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	v, err := VocabFromHF(string(tj), string(cfg))
	if err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	return v
}

func hfTok(t testing.TB, dir string) *Tokenizer {
	t.Helper()
	key := "hf:" + dir
	tokCacheMu.Lock()
	tk, ok := tokCache[key]
	tokCacheMu.Unlock()
	if ok {
		return tk
	}
	tk, err := New(hfVocab(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	tokCacheMu.Lock()
	tokCache[key] = tk
	tokCacheMu.Unlock()
	return tk
}

func equalIDs(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
