// Package constrain restricts what a model may generate, token by token:
// JSON masks the logits of every token whose bytes cannot continue a JSON
// object, for the API's response_format {"type": "json_object"}; Schema
// those that cannot continue a text a JSON schema allows (json_schema).
//
// The automata (json.go; schema.go compiles a schema into a deterministic
// one, nfa.go) read bytes; the tokenizer's trie of token bytes lets one
// walk of them find every token allowed next, visiting each shared prefix
// once instead of running every token alone. Twins: encoding/json's Valid,
// against which the tests and the fuzz targets check the object automaton,
// and a validator of decoded values (schema_test.go) for the schemas'.
package constrain

import (
	"math"
	"sync"

	"github.com/octet-dev/octet/model/tokenizer"
)

// JSON constrains a generation to one JSON object. It is not safe for
// concurrent use.
type JSON struct {
	v      *vocabTable
	st     jsonState
	broken bool   // a token Mask did not allow was taken
	allow  []bool // scratch of Mask, by token id
}

// vocabTable is what JSON needs of a vocabulary, made once per tokenizer
// (tokenizer.Derived): each token's bytes, the end-of-generation tokens,
// and the trie. Inside a string, where the walk would visit most of the
// trie, Mask takes the tokens that may come in any string (plain: ASCII
// but controls, quotes and backslashes, whole escapes and UTF-8
// characters) as a block, and runs the others (a few thousand) alone.
type vocabTable struct {
	trie  *tokenizer.Trie
	bytes [][]byte // by token id
	eog   []int32
	plain []bool

	unitsOnce sync.Once
	units     *units // for Schema's masks in strings (unitTable)
	nonPlain  []int32
}

type vocabKey struct{}

func tableOf(tok *tokenizer.Tokenizer) *vocabTable {
	return tok.Derived(vocabKey{}, func() any {
		n := tok.Len()
		v := &vocabTable{trie: tok.Trie(), bytes: make([][]byte, n), plain: make([]bool, n)}
		for id := range int32(n) {
			v.bytes[id] = tok.TokenBytes(id, false)
			if tok.IsEOG(id) {
				v.eog = append(v.eog, id)
			}
			if stringOnly(v.bytes[id]) {
				v.plain[id] = true
			} else {
				v.nonPlain = append(v.nonPlain, id)
			}
		}
		return v
	}).(*vocabTable)
}

// Prepare makes tok's tables for JSON now, so that the first NewJSON for
// it (in the scheduler's loop) finds them made.
func Prepare(tok *tokenizer.Tokenizer) { tableOf(tok) }

// NewJSON returns a constraint at the start of the answer. The first for
// a tokenizer makes its tables (tens of milliseconds for a 100k-token
// vocabulary on the 2-core dev VM); the others cost an allocation.
func NewJSON(tok *tokenizer.Tokenizer) *JSON {
	v := tableOf(tok)
	return &JSON{v: v, allow: make([]bool, len(v.bytes))}
}

// stringOnly reports whether b, read inside a string, stays inside it at
// every byte and ends outside any escape or character: then it may come
// in any string, whatever the rest of the state.
func stringOnly(b []byte) bool {
	st := jsonState{mode: modeString}
	for _, c := range b {
		next, ok := st.step(c)
		if !ok {
			return false
		}
		switch next.mode {
		case modeString, modeEscape, modeUnicode, modeUTF8:
		default:
			return false
		}
		st = next
	}
	return len(b) > 0 && st.mode == modeString
}

// run returns the state after token id's bytes from st, and false when
// they cannot come (or render to none).
func (j *JSON) run(st jsonState, id int32) (jsonState, bool) {
	b := j.v.bytes[id]
	for _, c := range b {
		next, ok := st.step(c)
		if !ok {
			return st, false
		}
		st = next
	}
	return st, len(b) > 0
}

// Done reports whether the object has closed.
func (j *JSON) Done() bool { return j.st.Done() }

// Over reports whether the answer must end: the object has closed, or no
// token could continue it (a vocabulary without the bytes it needs, or a
// token taken against the mask).
func (j *JSON) Over() bool { return j.st.Done() || j.broken }

// Mask sets the logits of the tokens that cannot come next to -Inf. An
// end-of-generation token may come once the answer is over, and only then.
// When no token may continue the object, Over becomes true.
func (j *JSON) Mask(logits []float32) {
	allow := j.allow[:min(len(j.allow), len(logits))]
	clear(allow)
	found := false
	switch {
	case j.Over():
	case j.st.mode == modeString:
		copy(allow, j.v.plain)
		for _, id := range j.v.nonPlain {
			if _, ok := j.run(j.st, id); ok && int(id) < len(allow) {
				allow[id] = true
			}
		}
	default:
		j.walk(0, j.st)
	}
	if !j.Over() {
		for _, a := range allow {
			if a {
				found = true
				break
			}
		}
		j.broken = !found
	}
	if !found {
		for _, id := range j.v.eog {
			if int(id) < len(allow) {
				allow[id] = true
			}
		}
	}
	inf := float32(math.Inf(-1))
	for id := range logits {
		if id >= len(allow) || !allow[id] {
			logits[id] = inf
		}
	}
}

// walk marks the tokens allowed below trie node n, reached in state st.
func (j *JSON) walk(n int32, st jsonState) {
	for _, id := range j.v.trie.Ends(n) {
		j.allow[id] = true
	}
	for _, e := range j.v.trie.Edges(n) {
		if next, ok := st.step(e.Byte); ok {
			j.walk(e.Node, next)
		}
	}
}

// Accept advances past the token taken.
func (j *JSON) Accept(id int32) {
	if int(id) >= len(j.v.bytes) || len(j.v.bytes[id]) == 0 {
		return // a control token renders to nothing
	}
	if next, ok := j.run(j.st, id); ok {
		j.st = next
	} else {
		j.broken = true
	}
}
