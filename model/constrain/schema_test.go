package constrain

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// schemas are the fuzz target's and the generation test's schemas.
var schemas = []string{
	`{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"tags":{"type":"array","items":{"enum":["a","b"]}}},"required":["name"]}`,
	`{"$defs":{"P":{"type":"object","properties":{"x":{"type":"number"},"y":{"type":"number"}},"required":["x","y"]}},"type":"object","properties":{"at":{"$ref":"#/$defs/P"},"path":{"type":"array","items":{"$ref":"#/$defs/P"},"minItems":1}},"required":["at","path"]}`,
	`{"type":"object","properties":{"ok":{"type":"boolean"},"v":{"anyOf":[{"type":"integer"},{"type":"null"},{"const":"none"}]},"kind":{"type":["string","null"]}},"required":["ok","v"]}`,
	`{"type":"object","additionalProperties":{"type":"integer"}}`,
	`{"type":"object","properties":{"meta":{},"list":{"type":"array"},"obj":{"type":"object"}}}`,
	`{"type":"array","items":{"type":"boolean"}}`,
	`{"type":"object","properties":{"code":{"type":"string","minLength":2,"maxLength":4},"ids":{"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":3},"rest":{"type":"array","minItems":2}},"required":["code","ids"]}`,
}

// accepts runs text through c's automaton and reports whether all of it
// came and makes a complete value.
func accepts(c *Compiled, text []byte) bool {
	st := int32(0)
	for _, b := range text {
		if st = c.d.step(st, b); st < 0 {
			return false
		}
	}
	return c.d.accept[st]
}

// TestSchemaTexts: texts a schema allows (in the compact form, properties
// in order, optional ones left out) are taken; others are not.
func TestSchemaTexts(t *testing.T) {
	for _, c := range []struct {
		schema   string
		yes, not []string
	}{
		{schemas[0],
			[]string{`{"name":"x"}`, `{"name": "x", "age": 3}`, `{"name":"x","tags":["a", "b"]}`, `{ "name":"é\n\u00e9"}`, `{"name":"","age":-0,"tags":[]}`, `{"name":"x" }`},
			[]string{`{"age":3}`, `{"name":"x","age":3.5}`, `{"age":3,"name":"x"}`, `{"name":"x","tags":["c"]}`, `{"name":"x","extra":1}`, `{"name":"x",}`, `{"name":"x"}x`, `{"name" :"x"}`, `{"name":"x",  "age":1}`, `{"name":"\x01"}`, "{\"name\":\"\xff\"}", `{"name":"x","age":01}`}},
		{schemas[1],
			[]string{`{"at":{"x":1,"y":2.5e3},"path":[{"x":0,"y":-1}]}`},
			[]string{`{"at":{"x":1,"y":2},"path":[]}`, `{"at":{"x":1},"path":[{"x":0,"y":-1}]}`}},
		{schemas[2],
			[]string{`{"ok":true,"v":3}`, `{"ok":false,"v":null,"kind":"k"}`, `{"ok":true,"v":"none","kind":null}`},
			[]string{`{"ok":true}`, `{"ok":1,"v":3}`, `{"ok":true,"v":"some"}`, `{"ok":true,"v":3,"kind":3}`}},
		{schemas[3],
			[]string{`{}`, `{"a":1}`, `{"a": 1, "b": -2}`},
			[]string{`{"a":"x"}`, `{"a":1.5}`, `[]`}},
		{schemas[4],
			[]string{`{"meta":{"a":[1,{"b":null}]},"list":[1,"x",[]],"obj":{"k":{"l":true}}}`, `{"meta":"x"}`},
			[]string{`{"meta":[[[[1]]]]}`, `{"list":{}}`}},
		{schemas[5],
			[]string{`[]`, `[true,false]`, `[ true]`},
			[]string{`[1]`, `{}`, `[true,]`}},
		{schemas[6],
			[]string{`{"code":"ab","ids":[1]}`, `{"code":"a\u00e9\né","ids":[1,2, 3]}`, `{"code":"abc","ids":[0],"rest":[1,"x"]}`, `{"code":"ab","ids":[1],"rest":[1,2,3,4]}`},
			[]string{`{"code":"a","ids":[1]}`, `{"code":"abcde","ids":[1]}`, `{"code":"ab","ids":[]}`, `{"code":"ab","ids":[1,2,3,4]}`, `{"code":"ab","ids":[1],"rest":[1]}`, `{"code":"ab","ids":[1],"rest":[]}`}},
		{`{"type":"array","maxItems":0}`, []string{`[]`, `[ ]`}, []string{`[1]`}},
		{`{"type":"object","properties":{"<a&b>":{"enum":["x<y","é",{"k":"<>"}]}},"required":["<a&b>"]}`,
			[]string{`{"<a&b>":"x<y"}`, `{"<a&b>":"é"}`, `{"<a&b>":{"k":"<>"}}`}, []string{`{"\u003ca\u0026b\u003e":"x<y"}`}},
		{`{"enum":[1,"two",{"three":3},[4],null]}`,
			[]string{`1`, `"two"`, `{"three":3}`, `[4]`, `null`},
			[]string{`2`, `"three"`, `{"three": 3}`}},
		{`{"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false,"required":[]}`,
			[]string{`{}`, `{"a":"b"}`}, []string{`{"b":"a"}`}},
		{`true`, []string{`{"any":[1]}`, `"s"`, `-1.5E+7`}, []string{`tru`, `{"a":}`}},
	} {
		comp, err := CompileSchema([]byte(c.schema))
		if err != nil {
			t.Fatalf("%s: %v", c.schema, err)
		}
		for _, s := range c.yes {
			if !accepts(comp, []byte(s)) {
				t.Errorf("%s: %s refused", c.schema, s)
			}
		}
		for _, s := range c.not {
			if accepts(comp, []byte(s)) {
				t.Errorf("%s: %s taken", c.schema, s)
			}
		}
	}
}

// TestSchemaAsserts: every keyword holds: those beside anyOf, oneOf,
// allOf, enum, const and $ref too (the parts' automata intersected), and
// keywords of one type without "type" (which leave other types free);
// required names without properties; an escaped surrogate pair is one
// character; '<' and U+2028 in an enum are matched as written.
func TestSchemaAsserts(t *testing.T) {
	for _, c := range []struct {
		schema   string
		yes, not []string
	}{
		{`{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a"],"anyOf":[{"required":["b"]}]}`,
			[]string{`{"a":1,"b":2}`}, []string{`{"b":1}`, `{"a":1}`}},
		{`{"type":"string","anyOf":[{"type":"integer"},{"maxLength":1}]}`, []string{`"a"`}, []string{`1`, `"ab"`}},
		{`{"type":"string","maxLength":2,"oneOf":[{"maxLength":5}]}`, []string{`"ab"`}, []string{`"abcd"`}},
		{`{"$defs":{"Base":{"type":"object","properties":{"id":{"type":"integer"},"extra":{"type":"integer"}},"required":["id"]}},"allOf":[{"$ref":"#/$defs/Base"}],"required":["id","extra"],"properties":{"id":{},"extra":{}}}`,
			[]string{`{"id":1,"extra":2}`}, []string{`{"id":1}`}},
		{`{"type":"string","enum":["a",1]}`, []string{`"a"`}, []string{`1`}},
		{`{"type":"string","maxLength":1,"const":"abc"}`, nil, nil}, // contradicts: refused below
		{`{"enum":["a","b"],"anyOf":[{"const":"a"}]}`, []string{`"a"`}, []string{`"b"`}},
		{`{"$defs":{"S":{"type":"string"}},"$ref":"#/$defs/S","maxLength":2}`, []string{`"ab"`}, []string{`"abcdef"`}},
		{`{"maxLength":3}`, []string{`"abc"`, `12345`, `[1]`}, []string{`"abcdef"`}},
		{`{"minItems":2}`, []string{`[1,2]`, `"x"`}, []string{`[]`, `[1]`}},
		{`{"additionalProperties":{"type":"integer"}}`, []string{`{"a":1}`, `"x"`}, []string{`{"a":"x"}`}},
		{`{"additionalProperties":false}`, []string{`{}`, `[]`}, []string{`{"a":1}`}},
		{`{"type":"object","required":["a","b"]}`, []string{`{"a":1,"b":[true]}`, `{"c":0,"b":1,"a":{}}`}, []string{`{}`, `{"a":1}`, `{"b":1,"c":1}`}},
		{`{"additionalProperties":{"type":"integer"},"required":["a"]}`, []string{`{"b":2,"a":1}`}, []string{`{"b":2}`, `{"a":"x"}`}},
		{`{"type":"string","minLength":2}`, []string{`"ab"`, `"\ud83d\ude00\u00e9"`}, []string{`"\ud83d\ude00"`, `"\ud83d"`, `"a"`}},
		{`{"type":"string","maxLength":1}`, []string{`"\ud83d\ude00"`, `"\udc00"`}, []string{`"\ud83d\ude00x"`}},
		{`{"enum":["a<b&c","x` + "\u2028" + `y"]}`, []string{`"a<b&c"`, `"x` + "\u2028" + `y"`}, []string{`"a\u003cb\u0026c"`}},
	} {
		comp, err := CompileSchema([]byte(c.schema))
		if c.yes == nil {
			if err == nil || !strings.Contains(err.Error(), "contradict") {
				t.Errorf("%s: %v, want a contradiction", c.schema, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.schema, err)
		}
		dec := json.NewDecoder(strings.NewReader(c.schema))
		dec.UseNumber()
		rv, _ := decodeOrdered(dec, 0)
		root := rv.(*obj)
		for _, s := range c.yes {
			v, _ := decodeText([]byte(s))
			if !accepts(comp, []byte(s)) || !validates(v, root, root) {
				t.Errorf("%s: %s refused (twin: %v)", c.schema, s, validates(v, root, root))
			}
		}
		for _, s := range c.not {
			if accepts(comp, []byte(s)) {
				t.Errorf("%s: %s taken", c.schema, s)
			}
		}
	}
	// A schema nested deep (a valid one) compiles.
	deep := `{"type":"string"}`
	for range 40 {
		deep = `{"type":"object","properties":{"a":` + deep + `}}`
	}
	if _, err := CompileSchema([]byte(deep)); err != nil {
		t.Errorf("a schema 41 objects deep: %v", err)
	}
}

// TestChoice: an answer held to choices is one of them exactly; one that
// begins another may end or go on.
func TestChoice(t *testing.T) {
	c, err := CompileChoice([]string{"yes", "no", "yes, but", "ünï ✓"})
	if err != nil {
		t.Fatal(err)
	}
	for text, want := range map[string]bool{"yes": true, "no": true, "yes, but": true, "ünï ✓": true, "ye": false, "yes,": false, "No": false, `"yes"`: false, "": false} {
		if got := accepts(c, []byte(text)); got != want {
			t.Errorf("%q: taken %v, want %v", text, got, want)
		}
	}
	st := int32(0)
	for _, b := range []byte("yes") {
		st = c.d.step(st, b)
	}
	if !c.d.accept[st] || c.d.final[st] {
		t.Errorf("after yes: accepting %v, final %v; want an end or more", c.d.accept[st], c.d.final[st])
	}
}

// TestSchemaRefused: a schema the automaton cannot honour is an error that
// says why.
func TestSchemaRefused(t *testing.T) {
	for schema, why := range map[string]string{
		`{"type":"string","pattern":"^a"}`:                                                 `"pattern" is not supported`,
		`{"type":"integer","minimum":0}`:                                                   `"minimum" is not supported`,
		`{"type":"array","minItems":65}`:                                                   "minItems must be a count from 0 to 64",
		`{"type":"string","maxLength":-1}`:                                                 "maxLength must be a count",
		`{"$ref":"#/$defs/missing","$defs":{}}`:                                            "names nothing",
		`{"$defs":{"N":{"type":"array","items":{"$ref":"#/$defs/N"}}},"$ref":"#/$defs/N"}`: "recursive",
		`{"$ref":"http://example.com/s.json"}`:                                             "only",
		`{"type":"date"}`:                                                                  "not a JSON type",
		`{"allOf":[{"type":"string"},{"type":"integer"}]}`:                                 "contradict each other",
		`false`: "allows no value",
		`{"type":"object","properties":{"a":{}},"required":["b"]}`: "not among its properties",
		`[1]`: "an object or a boolean",
		`{"type":"object","properties":{"a":{"type":"string","minLength":5,"maxLength":3}}}`: "properties/a: minLength 5 is more than maxLength 3",
	} {
		_, err := CompileSchema([]byte(schema))
		if err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("%s: %v, want an error saying %q", schema, err, why)
		}
	}
	// A schema whose automaton grows past its bound is refused, not built.
	var b strings.Builder
	b.WriteString(`{"type":"object","properties":{`)
	for i := range 40 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"p` + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `":{"type":"object"}`)
	}
	b.WriteString(`}}`)
	if _, err := CompileSchema([]byte(b.String())); err == nil || !strings.Contains(err.Error(), "simplify") {
		t.Errorf("a huge schema: %v", err)
	}
	// So is one of many parts, each within the bounds: the parts' automata
	// count together.
	part := `{"type":"object","properties":{"a":{"type":"string","maxLength":100},"b":{}}}`
	many := `{"allOf":[` + strings.Repeat(part+",", 300) + part + `]}`
	if _, err := CompileSchema([]byte(many)); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("301 parts: %v", err)
	}
}

// validates is the twin: whether the decoded value v (objects as *obj, so
// that their keys keep their order) is one schema s allows, as the
// compiler reads schemas; root resolves $refs.
func validates(v, s any, root *obj) bool {
	switch s := s.(type) {
	case bool:
		return s && nesting(v) <= anyDepth
	case *obj:
		parts := 0 // every keyword is asserted
		if ref, ok := s.m["$ref"].(string); ok {
			parts++
			target := any(root)
			if ref != "#" {
				table, name, _ := strings.Cut(strings.TrimPrefix(ref, "#/"), "/")
				target = root.m[table].(*obj).m[name]
			}
			if !validates(v, target, root) {
				return false
			}
		}
		if c, ok := s.m["const"]; ok {
			parts++
			if compact(v) != compact(c) {
				return false
			}
		}
		if e, ok := s.m["enum"]; ok {
			parts++
			if !slices.ContainsFunc(e.([]any), func(c any) bool { return compact(v) == compact(c) }) {
				return false
			}
		}
		if list, ok := s.m["allOf"].([]any); ok {
			parts++
			for _, sub := range list {
				if !validates(v, sub, root) {
					return false
				}
			}
		}
		for _, k := range []string{"anyOf", "oneOf"} { // (oneOf as anyOf)
			if list, ok := s.m[k].([]any); ok {
				parts++
				if !slices.ContainsFunc(list, func(sub any) bool { return validates(v, sub, root) }) {
					return false
				}
			}
		}
		switch t := s.m["type"].(type) {
		case string:
			parts++
			if !typed(v, t, s, root) {
				return false
			}
		case []any:
			parts++
			if !slices.ContainsFunc(t, func(x any) bool { return typed(v, x.(string), s, root) }) {
				return false
			}
		case nil:
			if slices.ContainsFunc(s.keys, func(k string) bool { return typeOf[k] != "" }) {
				parts++ // keywords of one type constrain values of that type only
				if !typed(v, typeName(v), s, root) {
					return false
				}
			}
		}
		return parts > 0 || nesting(v) <= anyDepth
	}
	return false
}

// typeName is the JSON type of a decoded value.
func typeName(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case *obj:
		return "object"
	}
	return "null"
}

func typed(v any, t string, s, root *obj) bool {
	switch t {
	case "string":
		str, ok := v.(string)
		n := utf8.RuneCountInString(str)
		return ok && n >= limit(s, "minLength", 0) && n <= limit(s, "maxLength", math.MaxInt)
	case "number", "integer":
		n, ok := v.(json.Number)
		return ok && (t == "number" || !strings.ContainsAny(string(n), ".eE"))
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "null":
		return v == nil
	case "array":
		list, ok := v.([]any)
		if !ok || len(list) < limit(s, "minItems", 0) || len(list) > limit(s, "maxItems", math.MaxInt) {
			return false
		}
		items, ok := s.m["items"]
		if !ok {
			items = true
		}
		for _, x := range list {
			if !validates(x, items, root) {
				return false
			}
		}
		return true
	case "object":
		o, ok := v.(*obj)
		if !ok {
			return false
		}
		props, ok := s.m["properties"].(*obj)
		if r, isList := s.m["required"].([]any); isList && !ok { // any order, each name there
			for _, x := range r {
				if _, has := o.m[x.(string)]; !has {
					return false
				}
			}
		}
		if !ok {
			values, ok := s.m["additionalProperties"]
			if !ok {
				values = true
			}
			if values == false {
				return len(o.keys) == 0
			}
			for _, k := range o.keys {
				if !validates(o.m[k], values, root) {
					return false
				}
			}
			return true
		}
		required := map[string]bool{}
		if r, ok := s.m["required"].([]any); ok {
			for _, x := range r {
				required[x.(string)] = true
			}
		}
		i := 0
		for _, k := range props.keys { // the instance's keys: in this order, a subsequence
			if i < len(o.keys) && o.keys[i] == k {
				if !validates(o.m[k], props.m[k], root) {
					return false
				}
				i++
			} else if required[k] {
				return false
			}
		}
		return i == len(o.keys)
	}
	return false
}

// limit is a count keyword of s, or def.
func limit(s *obj, key string, def int) int {
	n, ok := s.m[key].(json.Number)
	if !ok {
		return def
	}
	k, _ := n.Int64()
	return int(k)
}

// nesting is how deep v's objects and arrays nest.
func nesting(v any) int {
	d := 0
	switch v := v.(type) {
	case *obj:
		for _, k := range v.keys {
			d = max(d, nesting(v.m[k]))
		}
		return d + 1
	case []any:
		for _, x := range v {
			d = max(d, nesting(x))
		}
		return d + 1
	}
	return 0
}

func compact(v any) string {
	b, _ := marshal(v)
	return string(b)
}

// decodeText decodes text as the twin reads it (ok false when it is not
// one JSON value).
func decodeText(text []byte) (any, bool) {
	if !json.Valid(text) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	v, err := decodeOrdered(dec, 0)
	return v, err == nil
}

// FuzzSchema: for each schema, a text the automaton takes is valid JSON
// that the twin validates (and has no key twice); and a text the twin
// validates, written compactly, is one the automaton takes.
func FuzzSchema(f *testing.F) {
	for i, s := range schemas {
		f.Add(uint8(i), []byte(s))
	}
	f.Add(uint8(0), []byte(`{"name":"x","age":12,"tags":["a"]}`))
	f.Add(uint8(1), []byte(`{"at":{"x":1,"y":2},"path":[{"x":0.5,"y":-1e3}]}`))
	f.Add(uint8(2), []byte(`{"ok":true,"v":null,"kind":"k"}`))
	f.Add(uint8(3), []byte(`{"a":1,"b":2}`))
	f.Add(uint8(4), []byte(`{"meta":{"a":[1,{"b":null}]},"obj":{}}`))
	f.Add(uint8(5), []byte(`[true, false]`))
	f.Add(uint8(6), []byte(`{"code":"abc","ids":[1,2],"rest":[{},[]]}`))
	compiled := make([]*Compiled, len(schemas))
	roots := make([]*obj, len(schemas))
	for i, s := range schemas {
		c, err := CompileSchema([]byte(s))
		if err != nil {
			f.Fatal(err)
		}
		compiled[i] = c
		dec := json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		root, _ := decodeOrdered(dec, 0)
		roots[i] = root.(*obj)
	}
	f.Fuzz(func(t *testing.T, which uint8, text []byte) {
		i := int(which) % len(schemas)
		c, root := compiled[i], roots[i]
		v, ok := decodeText(text)
		if accepts(c, text) {
			if !ok || !validates(v, root, root) || dupKeys(v) {
				t.Fatalf("schema %d takes %q, which it does not allow", i, text)
			}
		}
		if ok && validates(v, root, root) && !dupKeys(v) {
			if b := []byte(compact(v)); !accepts(c, b) {
				t.Fatalf("schema %d refuses %s (from %q), which it allows", i, b, text)
			}
		}
	})
}

func dupKeys(v any) bool {
	switch v := v.(type) {
	case *obj:
		if len(v.keys) != len(v.m) {
			return true
		}
		for _, k := range v.keys {
			if dupKeys(v.m[k]) {
				return true
			}
		}
	case []any:
		for _, x := range v {
			if dupKeys(x) {
				return true
			}
		}
	}
	return false
}

// TestSchemaGenerates: on two real vocabularies, answers drawn from random
// logits under a schema's mask are texts the schema allows: every step
// allows exactly the tokens whose bytes run alone from its state (and an
// end-of-generation token where the text is complete).
func TestSchemaGenerates(t *testing.T) {
	for _, name := range []string{"llama-spm", "deepseek-llm"} {
		t.Run(name, func(t *testing.T) {
			tok := vocab(t, name)
			rng := rand.New(rand.NewPCG(3, 4))
			logits := make([]float32, tok.Len())
			noise := make([]float32, 2*tok.Len())
			for i := range noise {
				noise[i] = float32(rng.NormFloat64() * 3)
			}
			quote := tok.Encode(`"`, false, false)
			done := 0
			for k, schema := range schemas {
				c, err := CachedSchema([]byte(schema))
				if err != nil {
					t.Fatal(err)
				}
				dec := json.NewDecoder(strings.NewReader(schema))
				dec.UseNumber()
				rv, _ := decodeOrdered(dec, 0)
				root := rv.(*obj)
				for answer := range 3 {
					s := c.Start(tok)
					var text []byte
					for step := 0; step < 300; step++ {
						copy(logits, noise[rng.IntN(tok.Len()):])
						for _, id := range quote {
							logits[id] += 6 // strings end now and then
						}
						s.Mask(logits)
						if answer == 0 && step < 12 {
							for id := range int32(tok.Len()) {
								want := runsAlone(c, s.st, s.v.bytes[id]) || c.d.accept[s.st] && tok.IsEOG(id)
								if got := !math.IsInf(float64(logits[id]), -1); got != want {
									t.Fatalf("schema %d, step %d after %q: token %d (%q) allowed %v, alone %v", k, step, text, id, tok.TokenBytes(id, false), got, want)
								}
							}
						}
						id := argmax(logits)
						if math.IsInf(float64(logits[id]), -1) {
							t.Fatalf("schema %d: after %q nothing is allowed", k, text)
						}
						if tok.IsEOG(id) {
							break
						}
						s.Accept(id)
						text = append(text, tok.TokenBytes(id, false)...)
						if s.Done() {
							break
						}
					}
					if c.d.accept[s.st] {
						done++
						if v, ok := decodeText(text); !ok || !validates(v, root, root) {
							t.Errorf("schema %d: answer %q is not one it allows", k, text)
						}
					}
				}
			}
			if done < len(schemas) {
				t.Errorf("only %d of %d answers complete in 300 tokens", done, 3*len(schemas))
			}
			t.Logf("%d of %d answers complete", done, 3*len(schemas))
		})
	}
}

// runsAlone is the mask's twin: token bytes b run from st one by one.
func runsAlone(c *Compiled, st int32, b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, x := range b {
		if st = c.d.step(st, x); st < 0 {
			return false
		}
	}
	return true
}

// BenchmarkSchemaMask: one step's mask under a schema inside a string
// value, where nearly every token is allowed: the first time in that state
// (made from the plain block) and after (the kept mask), and, as the
// baseline, the json_object automaton's mask in a string.
func BenchmarkSchemaMask(b *testing.B) {
	for _, name := range []string{"llama-spm", "deepseek-llm"} {
		tok := vocab(b, name)
		c, err := CompileSchema([]byte(schemas[0]))
		if err != nil {
			b.Fatal(err)
		}
		text := []byte(`{"name":"b`)
		st := int32(0)
		for _, x := range text {
			st = c.d.step(st, x)
		}
		logits := make([]float32, tok.Len())
		b.Run(name+"/first", func(b *testing.B) {
			for b.Loop() {
				s := c.Start(tok)
				s.st = st
				s.m = &masks{by: map[int32][]uint64{}}
				s.Mask(logits)
			}
		})
		b.Run(name+"/kept", func(b *testing.B) {
			s := c.Start(tok)
			s.st = st
			for b.Loop() {
				s.Mask(logits)
			}
		})
		b.Run(name+"/json_object", func(b *testing.B) {
			j := NewJSON(tok)
			_, j.st = run([]byte(`{"a":"b`))
			for b.Loop() {
				j.Mask(logits)
			}
		})
	}
}

// BenchmarkCompileSchema: compiling a schema of fixed fields, and one
// with a value left free (its automaton nests any JSON anyDepth deep).
func BenchmarkCompileSchema(b *testing.B) {
	for i, s := range []string{schemas[1], schemas[4]} {
		b.Run([]string{"fields", "free"}[i], func(b *testing.B) {
			for b.Loop() {
				if _, err := CompileSchema([]byte(s)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestSchemaStringMask: inside a free string the mask is made from the
// vocabulary's plain block (stringLoop) and equals the trie walk's; a
// string held to an enum, or a place outside strings, is not taken for
// one.
func TestSchemaStringMask(t *testing.T) {
	c, err := CompileSchema([]byte(schemas[0]))
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range []struct {
		text string
		loop bool
	}{{`{"name":"`, true}, {`{"name":"ab\n\u00e9`, true}, {`{"name":"x","tags":["`, false}, {`{"name":`, false}, {`{"na`, false}} {
		st := int32(0)
		for i := range len(at.text) {
			st = c.d.step(st, at.text[i])
		}
		if st < 0 || c.d.stringLoop(st) != at.loop {
			t.Errorf("after %q: state %d, in a free string %v, want %v", at.text, st, st >= 0 && c.d.stringLoop(st), at.loop)
			continue
		}
		for _, name := range []string{"llama-spm", "deepseek-llm"} {
			tok := vocab(t, name)
			s := c.Start(tok)
			s.st = st
			s.m = &masks{by: map[int32][]uint64{}}
			walked := make([]uint64, (tok.Len()+63)/64)
			s.walk(walked, 0, st)
			if got := s.allowed(); !slices.Equal(got, walked) {
				t.Errorf("%s after %q: the mask differs from the walk's", name, at.text)
			}
		}
	}
}
