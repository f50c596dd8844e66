package constrain

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// A JSON schema (the API's response_format json_schema) is compiled to a
// deterministic automaton over bytes that accepts exactly the JSON texts
// the schema allows, written compactly (one space or none after '{', '[',
// ',' and ':', and before '}' and ']'). An object's properties come in the
// order the schema lists them, required ones always, others when the model
// writes them; no other property comes (as OpenAI's strict mode).
//
// Every keyword of a schema is asserted, as JSON Schema has it: $ref,
// enum, const, each allOf element, anyOf, oneOf and the type's keywords
// are parts of it, each compiled to an automaton of its own and the
// automata intersected (a product of their states) when there are several.
// A keyword of one type without "type" (maxLength, items, properties, …)
// constrains values of that type and leaves the others free.
//
// Supported: type (one or a list), properties, required (names without
// properties come in their order, with values of additionalProperties),
// additionalProperties (a schema for the values of an object without
// properties), items, minItems and maxItems (up to 64), minLength and
// maxLength (up to 256 characters; an escape is one, an escaped surrogate
// pair one), enum, const, anyOf, oneOf (taken as anyOf: a text two of its
// branches allow is not refused), allOf, $ref to "#", "#/$defs/…" or
// "#/definitions/…" (not recursive), true and {} (any value, nested at
// most anyDepth deep). enum and const values are matched as written
// (compact, only '"', '\\' and controls escaped; 1.0 is not 1), and an
// integer has no fraction or exponent. Annotations (title, description,
// default, examples, format, …) are ignored. A keyword that would bound a
// value in a way the automaton does not honour (pattern, minimum,
// uniqueItems, minProperties, …) is an error naming it, not silently
// dropped.

const (
	// anyDepth bounds the nesting of a value the schema leaves free.
	anyDepth = 3
	// maxStates bounds a compiled schema's automaton (a row of 4-byte entries, one per byte class, each).
	maxStates = 16384
	// maxRefs bounds how many $refs a schema may expand (each is a copy).
	maxRefs = 256
	// maxLength and maxItems bound the counts a schema may set: each
	// character or item they tell apart is a copy in the automaton.
	maxLength = 256
	maxItems  = 64
)

// ignored are keywords that do not constrain the text.
var ignored = map[string]bool{
	"title": true, "description": true, "default": true, "examples": true, "format": true,
	"$schema": true, "$id": true, "$comment": true, "$defs": true, "definitions": true,
	"deprecated": true, "readOnly": true, "writeOnly": true, "strict": true,
}

// supported are the keywords compile reads.
var supported = map[string]bool{
	"type": true, "properties": true, "required": true, "additionalProperties": true, "items": true,
	"minItems": true, "maxItems": true, "minLength": true, "maxLength": true, "enum": true, "const": true, "anyOf": true, "oneOf": true, "allOf": true, "$ref": true,
}

// compiler builds the automaton of one schema.
type compiler struct {
	n    nfa
	root *obj
	refs []string // the $refs being expanded (recursion)
	used *int     // $refs expanded, by this compiler and those it forked
	made *int     // states of the automata its forks built, all together
}

// fork is a compiler of a part of the schema into an automaton of its own.
func (c *compiler) fork() *compiler {
	return &compiler{root: c.root, refs: slices.Clone(c.refs), used: c.used, made: c.made}
}

// Compiled is a JSON schema as an automaton; safe for concurrent use.
type Compiled struct {
	d *dfa

	mu    sync.Mutex
	masks map[*vocabTable]*masks
}

// CompileSchema compiles the JSON schema in raw, or says why it cannot.
func CompileSchema(raw []byte) (*Compiled, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := decodeOrdered(dec, 0)
	if err == nil && dec.More() {
		err = fmt.Errorf("data after the schema")
	}
	switch {
	case errors.Is(err, errNesting):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("the schema is not JSON: %v", err)
	}
	c := &compiler{used: new(int), made: new(int)}
	if m, ok := v.(*obj); ok {
		c.root = m
	}
	f, err := c.value(v, "")
	if err != nil {
		return nil, err
	}
	d, err := c.n.dfa(f.in, f.out, maxStates)
	if err != nil {
		return nil, err
	}
	return &Compiled{d: d}, nil
}

// value builds the piece for schema s found at path (for errors).
func (c *compiler) value(s any, path string) (frag, error) {
	if len(c.n.eps) > maxNFA {
		return frag{}, fmt.Errorf("the schema is too large for an automaton (more than %d states before it is made deterministic): lower its maxLength or maxItems, or simplify it", maxNFA)
	}
	at := func(format string, args ...any) error {
		where := "the schema"
		if path != "" {
			where = "the schema at " + path
		}
		return fmt.Errorf("%s: %s", where, fmt.Sprintf(format, args...))
	}
	switch s := s.(type) {
	case bool:
		if !s {
			return frag{}, at("false allows no value")
		}
		return c.n.any(anyDepth), nil
	case *obj:
		return c.schema(s, path, at)
	}
	return frag{}, at("a schema is an object or a boolean")
}

// typeOf names the type that each keyword of one type constrains: such a
// keyword without "type" leaves values of other types free (as JSON Schema
// has it).
var typeOf = map[string]string{
	"properties": "object", "required": "object", "additionalProperties": "object",
	"items": "array", "minItems": "array", "maxItems": "array",
	"minLength": "string", "maxLength": "string",
}

// allTypes are the types a value without "type" may have ("integer" is
// among the numbers).
var allTypes = []string{"string", "number", "boolean", "null", "array", "object"}

func (c *compiler) schema(s *obj, path string, at func(string, ...any) error) (frag, error) {
	for _, k := range s.keys {
		if !supported[k] && !ignored[k] {
			return frag{}, at("%q is not supported", k)
		}
	}
	// The schema's parts: a value must meet each (JSON Schema's keywords
	// are all asserted).
	var parts []func(c *compiler) (frag, error)
	if ref, ok := s.m["$ref"]; ok {
		parts = append(parts, func(c *compiler) (frag, error) { return c.ref(ref, path, at) })
	}
	if v, ok := s.m["const"]; ok {
		parts = append(parts, func(c *compiler) (frag, error) { return c.literals([]any{v}, at) })
	}
	if v, ok := s.m["enum"]; ok {
		list, ok := v.([]any)
		if !ok || len(list) == 0 {
			return frag{}, at("enum must be a list of values")
		}
		parts = append(parts, func(c *compiler) (frag, error) { return c.literals(list, at) })
	}
	for _, k := range []string{"anyOf", "oneOf", "allOf"} {
		v, ok := s.m[k]
		if !ok {
			continue
		}
		list, ok := v.([]any)
		if !ok || len(list) == 0 {
			return frag{}, at("%s must be a list of schemas", k)
		}
		for i, sub := range list {
			if _, ok := sub.(*obj); !ok {
				if _, ok := sub.(bool); !ok {
					return frag{}, at("%s[%d] is not a schema", k, i)
				}
			}
			if k == "allOf" {
				parts = append(parts, func(c *compiler) (frag, error) { return c.value(sub, fmt.Sprintf("%s/%s/%d", path, k, i)) })
			}
		}
		if k == "allOf" {
			continue
		}
		parts = append(parts, func(c *compiler) (frag, error) {
			var alts []frag
			for i, sub := range list {
				if sub == false {
					continue
				}
				f, err := c.value(sub, fmt.Sprintf("%s/%s/%d", path, k, i))
				if err != nil {
					return frag{}, err
				}
				alts = append(alts, f)
			}
			if len(alts) == 0 {
				return frag{}, at("%s allows no value", k)
			}
			return c.n.alt(alts...), nil
		})
	}
	if typed, ok := c.typedPart(s, path, at); ok {
		parts = append(parts, typed)
	}
	if len(parts) == 0 {
		return c.n.any(anyDepth), nil
	}
	return c.all(parts, at)
}

// all builds the piece of the texts every part takes: the part itself when
// there is one, else each made deterministic on its own and the automata
// intersected.
func (c *compiler) all(parts []func(c *compiler) (frag, error), at func(string, ...any) error) (frag, error) {
	if len(parts) == 1 {
		return parts[0](c)
	}
	var d *dfa
	for _, part := range parts {
		sub := c.fork()
		f, err := part(sub)
		if err != nil {
			return frag{}, err
		}
		if *c.made += len(sub.n.eps); *c.made > maxNFA { // (many parts, each within the bound)
			return frag{}, at("%v", errTooLarge)
		}
		pd, err := sub.n.dfa(f.in, f.out, maxStates)
		if err == nil && d != nil {
			pd, err = intersect(d, pd, maxStates)
		}
		if err == nil {
			*c.made += len(pd.accept)
		}
		if err != nil {
			return frag{}, at("%v", err)
		}
		d = pd
	}
	return c.n.embed(d), nil
}

// typedPart is the part of s that its type and the keywords of one type
// make, if it has any.
func (c *compiler) typedPart(s *obj, path string, at func(string, ...any) error) (func(c *compiler) (frag, error), bool) {
	var types []string
	switch t := s.m["type"].(type) {
	case nil:
		for _, k := range s.keys {
			if typeOf[k] != "" {
				types = allTypes
				break
			}
		}
		if types == nil {
			return nil, false
		}
	case string:
		types = []string{t}
	case []any:
		for _, x := range t {
			name, ok := x.(string)
			if !ok {
				return func(*compiler) (frag, error) { return frag{}, at("type must be a name or a list of names") }, true
			}
			types = append(types, name)
		}
		if len(types) == 0 {
			return func(*compiler) (frag, error) { return frag{}, at("an empty type list allows no value") }, true
		}
	default:
		return func(*compiler) (frag, error) { return frag{}, at("type must be a name or a list of names") }, true
	}
	return func(c *compiler) (frag, error) {
		var alts []frag
		for _, name := range types {
			f, err := c.typed(s, name, path, at)
			if err != nil {
				return frag{}, err
			}
			alts = append(alts, f)
		}
		if len(alts) == 1 {
			return alts[0], nil
		}
		return c.n.alt(alts...), nil
	}, true
}

// typed builds the piece for s as a value of the type name.
func (c *compiler) typed(s *obj, name, path string, at func(string, ...any) error) (frag, error) {
	n := &c.n
	switch name {
	case "string":
		min, max, err := bounds(s, "minLength", "maxLength", maxLength, at)
		if err != nil {
			return frag{}, err
		}
		return n.boundedStr(min, max), nil
	case "number":
		return n.number(false), nil
	case "integer":
		return n.number(true), nil
	case "boolean":
		return n.alt(n.lit("true"), n.lit("false")), nil
	case "null":
		return n.lit("null"), nil
	case "array":
		min, max, err := bounds(s, "minItems", "maxItems", maxItems, at)
		if err != nil {
			return frag{}, err
		}
		items, ok := s.m["items"]
		if !ok {
			items = true
		}
		item := func() frag {
			f, e := c.value(items, path+"/items")
			if e != nil && err == nil {
				err = e
			}
			return f
		}
		f := n.array(item, min, max)
		return f, err
	case "object":
		return c.object(s, path, at)
	}
	return frag{}, at("type %q is not a JSON type", name)
}

// object builds an object's piece: its properties in order (required ones
// always, the others optional), or, without properties, any keys with
// values of additionalProperties.
func (c *compiler) object(s *obj, path string, at func(string, ...any) error) (frag, error) {
	n := &c.n
	props, _ := s.m["properties"].(*obj)
	if _, ok := s.m["properties"]; ok && props == nil {
		return frag{}, at("properties must be an object")
	}
	if r, ok := s.m["required"].([]any); ok && props == nil && len(r) > 0 {
		// Required names without properties: an object of any keys (in
		// any order) that has each of them.
		parts := []func(c *compiler) (frag, error){func(c *compiler) (frag, error) { return c.object(without(s, "required"), path, at) }}
		for _, x := range r {
			name, ok := x.(string)
			if !ok {
				return frag{}, at("required must be a list of names")
			}
			parts = append(parts, func(c *compiler) (frag, error) { return c.n.containing(name), nil })
		}
		return c.all(parts, at)
	}
	if props == nil {
		values, ok := s.m["additionalProperties"]
		switch {
		case values == false:
			return n.seq(n.lit("{"), n.ws(), n.lit("}")), nil
		case !ok:
			values = true
		}
		var err error
		build := func() frag {
			f, e := c.value(values, path+"/additionalProperties")
			if e != nil {
				err = e
			}
			return f
		}
		f := n.object(build)
		return f, err
	}
	required := map[string]bool{}
	if r, ok := s.m["required"]; ok {
		list, ok := r.([]any)
		if !ok {
			return frag{}, at("required must be a list of names")
		}
		for _, x := range list {
			name, ok := x.(string)
			if !ok {
				return frag{}, at("required must be a list of names")
			}
			if _, ok := props.m[name]; !ok {
				return frag{}, at("required names %q, which is not among its properties", name)
			}
			required[name] = true
		}
	}
	// States: before property k, with or without a property written yet.
	open := n.seq(n.lit("{"), n.ws())
	none, some := open.out, n.state()
	for _, name := range props.keys { // in the order of the schema's text
		key, _ := marshal(name)
		value, err := c.value(props.m[name], path+"/properties/"+name)
		if err != nil {
			return frag{}, err
		}
		member := n.seq(n.lit(string(key)+":"), n.ws(), value)
		first := n.empty()
		n.link(none, first.in)
		n.link(first.out, member.in)
		next := n.seq(n.lit(","), n.ws())
		n.link(some, next.in)
		n.link(next.out, member.in)
		none2, some2 := n.state(), n.state()
		n.link(member.out, some2)
		if !required[name] {
			n.link(none, none2)
			n.link(some, some2)
		}
		none, some = none2, some2
	}
	end := n.lit("}")
	n.link(none, end.in)
	tail := n.seq(n.ws(), end)
	n.link(some, tail.in)
	return frag{open.in, end.out}, nil
}

// literals matches any of the values, as compact JSON.
func (c *compiler) literals(values []any, at func(string, ...any) error) (frag, error) {
	var alts []frag
	for _, v := range values {
		b, err := marshal(v)
		if err != nil {
			return frag{}, at("%v", err)
		}
		if len(c.n.eps)+len(b) > maxNFA {
			return frag{}, at("its values are too many or too long for an automaton")
		}
		alts = append(alts, c.n.lit(string(b)))
	}
	return c.n.alt(alts...), nil
}

// ref expands a $ref into the root's definitions (a copy each time).
func (c *compiler) ref(v any, path string, at func(string, ...any) error) (frag, error) {
	ref, ok := v.(string)
	if !ok {
		return frag{}, at("$ref must be a string")
	}
	if slices.Contains(c.refs, ref) {
		return frag{}, at("$ref %q is recursive, which is not supported", ref)
	}
	if *c.used++; *c.used > maxRefs {
		return frag{}, at("more than %d $refs to expand", maxRefs)
	}
	var target any
	switch {
	case ref == "#":
		target = c.root
	case strings.HasPrefix(ref, "#/$defs/"), strings.HasPrefix(ref, "#/definitions/"):
		table, name, _ := strings.Cut(strings.TrimPrefix(ref, "#/"), "/")
		if defs, ok := c.root.get(table).(*obj); ok {
			target = defs.m[strings.ReplaceAll(strings.ReplaceAll(name, "~1", "/"), "~0", "~")]
		}
	default:
		return frag{}, at("$ref %q: only \"#\", \"#/$defs/…\" and \"#/definitions/…\" are supported", ref)
	}
	if target == nil {
		return frag{}, at("$ref %q names nothing", ref)
	}
	c.refs = append(c.refs, ref)
	defer func() { c.refs = c.refs[:len(c.refs)-1] }()
	return c.value(target, ref)
}

// bounds reads a pair of count keywords (max -1 when absent), each at
// most limit.
func bounds(s *obj, minKey, maxKey string, limit int, at func(string, ...any) error) (min, max int, err error) {
	max = -1
	for _, k := range []struct {
		key string
		v   *int
	}{{minKey, &min}, {maxKey, &max}} {
		raw, ok := s.m[k.key]
		if !ok {
			continue
		}
		n, err := count(raw)
		if err != nil || n > limit {
			return 0, 0, at("%s must be a count from 0 to %d", k.key, limit)
		}
		*k.v = n
	}
	if max >= 0 && min > max {
		return 0, 0, at("%s %d is more than %s %d", minKey, min, maxKey, max)
	}
	return min, max, nil
}

// count reads a non-negative integer keyword.
func count(v any) (int, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("not a number")
	}
	k, err := n.Int64()
	if err != nil || k < 0 {
		return 0, fmt.Errorf("not a count")
	}
	return int(k), nil
}

// obj is a JSON object that keeps its keys' order (a schema's properties
// come in it).
type obj struct {
	keys []string
	m    map[string]any
}

func (o *obj) get(k string) any {
	if o == nil {
		return nil
	}
	return o.m[k]
}

// marshal writes v (a decoded schema value) as compact JSON the way a
// model writes it: only '"', '\\' and control characters escaped
// (encoding/json also escapes '<', '>', '&', U+2028 and U+2029).
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := writeValue(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func writeValue(b *bytes.Buffer, v any) error {
	switch v := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(map[bool]string{true: "true", false: "false"}[v])
	case json.Number:
		b.WriteString(string(v))
	case string:
		writeString(b, v)
	case []any:
		b.WriteByte('[')
		for i, x := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeValue(b, x); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case *obj:
		b.WriteByte('{')
		for i, k := range v.keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeString(b, k)
			b.WriteByte(':')
			if err := writeValue(b, v.m[k]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	default:
		return fmt.Errorf("cannot write a %T", v)
	}
	return nil
}

func writeString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for _, r := range s { // (invalid UTF-8 reads as U+FFFD, as encoding/json decodes it)
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20:
			fmt.Fprintf(b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}

// maxNesting bounds the nesting of a schema's JSON text.
const maxNesting = 128

var errNesting = fmt.Errorf("the schema's JSON nests more than %d levels deep", maxNesting)

// decodeOrdered reads one JSON value, its objects as *obj (a repeated key
// keeps its last value, at its first place).
func decodeOrdered(dec *json.Decoder, depth int) (any, error) {
	if depth > maxNesting {
		return nil, errNesting
	}
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t {
	case json.Delim('{'):
		o := &obj{m: map[string]any{}}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			k := kt.(string)
			v, err := decodeOrdered(dec, depth+1)
			if err != nil {
				return nil, err
			}
			if _, dup := o.m[k]; !dup {
				o.keys = append(o.keys, k)
			}
			o.m[k] = v
		}
		_, err := dec.Token()
		return o, err
	case json.Delim('['):
		list := []any{}
		for dec.More() {
			v, err := decodeOrdered(dec, depth+1)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		_, err := dec.Token()
		return list, err
	}
	return t, nil
}

func without(s *obj, key string) *obj {
	o := &obj{m: make(map[string]any, len(s.m))}
	for _, k := range s.keys {
		if k != key {
			o.keys = append(o.keys, k)
			o.m[k] = s.m[k]
		}
	}
	return o
}

// merge is the keywords of a with those of b over them.
func merge(a, b *obj) *obj {
	o := without(a, "")
	for _, k := range b.keys {
		if _, ok := o.m[k]; !ok {
			o.keys = append(o.keys, k)
		}
		o.m[k] = b.m[k]
	}
	return o
}

// cacheSize is how many compiled schemas CachedSchema keeps: a client
// sends the same schema with each request, and a compiled schema keeps the
// masks its generations made.
const cacheSize = 16

var cache struct {
	sync.Mutex
	by    map[string]compiled
	order []string // oldest first
}

// compiled is a kept compilation: its automaton, or why there is none (a
// refused schema sent again is refused at once).
type compiled struct {
	c   *Compiled
	err error
}

// compiling bounds the compilations running at once: a request's schema
// is compiled while its request is read, before any queue.
var compiling = make(chan struct{}, 2)

// CachedSchema is CompileSchema, kept for the next request with the same
// schema text.
func CachedSchema(raw []byte) (*Compiled, error) {
	return cached("schema\x00"+string(raw), func() (*Compiled, error) { return CompileSchema(raw) })
}

// CachedChoice is CompileChoice, kept alike.
func CachedChoice(choices []string) (*Compiled, error) {
	return cached("choice\x00"+strings.Join(choices, "\x00"), func() (*Compiled, error) { return CompileChoice(choices) })
}

// CompileChoice compiles the texts an answer may be (vLLM's
// guided_choice): exactly one of them, as written.
func CompileChoice(choices []string) (*Compiled, error) {
	var n nfa
	alts := make([]frag, len(choices))
	for i, c := range choices {
		alts[i] = n.lit(c)
	}
	f := n.alt(alts...)
	d, err := n.dfa(f.in, f.out, maxStates)
	if err != nil {
		return nil, fmt.Errorf("the choices make too large an automaton: %d of them, %d bytes in all", len(choices), len(strings.Join(choices, "")))
	}
	return &Compiled{d: d}, nil
}

func cached(key string, compile func() (*Compiled, error)) (*Compiled, error) {
	cache.Lock()
	k, ok := cache.by[key]
	cache.Unlock()
	if ok {
		return k.c, k.err
	}
	compiling <- struct{}{}
	c, err := compile()
	<-compiling
	cache.Lock()
	defer cache.Unlock()
	if cache.by == nil {
		cache.by = map[string]compiled{}
	}
	if _, ok := cache.by[key]; !ok {
		if len(cache.order) == cacheSize {
			delete(cache.by, cache.order[0])
			cache.order = cache.order[1:]
		}
		cache.by[key] = compiled{c, err}
		cache.order = append(cache.order, key)
	}
	return c, err
}
