package constrain

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// run feeds text to a fresh state: how many bytes it took, and the state.
func run(text []byte) (int, jsonState) {
	var s jsonState
	for i, b := range text {
		next, ok := s.step(b)
		if !ok {
			return i, s
		}
		s = next
	}
	return len(text), s
}

// wantObject is the twin: encoding/json's Valid, for one object at the top
// with no whitespace after it, in the automaton's bounds.
func wantObject(text []byte) (want, comparable bool) {
	if bytes.Count(text, []byte("{"))+bytes.Count(text, []byte("[")) > maxDepth || longSpace(text) {
		return false, false // outside the bounds: only no panic is asked
	}
	t := bytes.TrimLeft(text, " \t\r\n")
	return json.Valid(text) && utf8.Valid(text) && len(t) > 0 && t[0] == '{' && text[len(text)-1] == '}', true
}

// longSpace reports whitespace the automaton refuses: a run other than one
// space, or a newline and up to maxIndent spaces or tabs. (Inside strings
// it may find some: then the text is only not compared.)
func longSpace(text []byte) bool {
	for _, run := range regexp.MustCompile(`[ \t\r\n]+`).FindAll(text, -1) {
		if string(run) != " " && (run[0] != '\n' || len(run) > 1+maxIndent || bytes.ContainsAny(run[1:], "\r\n")) {
			return true
		}
	}
	return false
}

func TestJSONState(t *testing.T) {
	valid := []string{
		`{}`, ` {"a":1}`, `{"a":[1,-2.5e+3,0,0.0,1E5,-0,true,false,null,"x",{},[]]}`,
		"{\n  \"k\": {\"nested\": [\"\\u00e9\\n\\\"\", \"é日本\U0001F600\"]},\n  \"n\": -12.75e-2\n}",
		`{"a":{"b":{"c":[[[]]]}}}`, `{"":""}`, `{"a" : 1 , "b" : [ 1 , 2 ] }`,
	}
	for _, v := range valid {
		if n, s := run([]byte(v)); n != len(v) || !s.Done() {
			t.Errorf("%q: stopped at byte %d, done %v", v, n, s.Done())
		}
		if want, _ := wantObject([]byte(v)); !want {
			t.Errorf("%q: the twin refuses it", v)
		}
	}
	invalid := []string{
		`[]`, `"a"`, `1`, `{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":1e}`, `{"a":-}`, `{"a":tru}`, `{"a":True}`,
		`{a:1}`, `{"a" 1}`, `{"a":1,}`, `{,}`, `{"a":[1,]}`, `{"a":[1 2]}`, `{"a":"\x"}`, `{"a":"\u12G4"}`,
		"{\"a\":\"\x01\"}", "{\"a\":\"\xff\"}", "{\"a\":\"\xc3\"}",
		"{\"a\":\"\xe0\x80\x80\"}", "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"\xf0\x80\x80\x80\"}", "{\"a\":\"\xf4\x90\x80\x80\"}", "{\"a\":\"\xc0\xaf\"}", `{"a":1]`, `{"a":[1}`, `{} `, `{}{}`,
		"{\n" + strings.Repeat(" ", maxIndent+1) + "}", "{  }", "{\n\n}", "{\r\n}", "{\t}", `{"a":` + strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth) + `}`,
	}
	for _, v := range invalid {
		if n, s := run([]byte(v)); n == len(v) && s.Done() {
			t.Errorf("%q: accepted", v)
		}
	}
	// Unfinished objects are accepted as far as they go, and not done.
	for _, v := range []string{`{`, `{"a`, `{"a":`, `{"a":[1,2`, `{"a":"\u00`, `{"a":-1.5e`, `{"a":nu`} {
		if n, s := run([]byte(v)); n != len(v) || s.Done() {
			t.Errorf("%q: stopped at byte %d, done %v", v, n, s.Done())
		}
	}
}

// FuzzJSONState: the automaton takes a whole text and ends done exactly
// when encoding/json finds it one valid object (within the bounds); it
// takes every prefix of one.
func FuzzJSONState(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":[1,2.5e-3,"x\u00e9"]}`, `{"a":tru}`, `[1]`, "{\"\xc3\xa9\":null}", ` {"a":{"b":-0}} `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		n, s := run(text)
		want, comparable := wantObject(text)
		if !comparable {
			return
		}
		if got := n == len(text) && s.Done(); got != want {
			t.Fatalf("%q: took %d of %d bytes, done %v; encoding/json says valid %v", text, n, len(text), s.Done(), want)
		}
	})
}
