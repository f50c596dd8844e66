package constrain

// jsonState is where a JSON text stands after some bytes: a value type of
// a few words, so that walking the vocabulary copies it at every step
// instead of undoing changes. It accepts exactly the prefixes of a JSON
// object (RFC 8259, one object at the top level) whose containers nest at
// most maxDepth deep and whose whitespace between tokens is one space, or a
// newline and at most maxIndent spaces or tabs (llama.cpp's JSON grammar
// bounds it alike), so that a model cannot pad forever.
type jsonState struct {
	stack  uint64 // bit i: the container at depth i+1 is an object (else an array)
	depth  uint8
	mode   mode
	sub    uint8 // the mode's step: a literal's next byte, hex digits left, UTF-8 bytes left
	lit    uint8 // the literal being read (litTrue, litFalse, litNull)
	key    bool  // the string being read is an object's key
	spaces uint8 // whitespace bytes in the current run (spaceFull: no more)
	lo, hi uint8 // the range of a UTF-8 character's next byte (modeUTF8)
}

type mode uint8

const (
	modeStart      mode = iota // before the top-level object
	modeValue                  // a value must come (after ':' or ',' in an array)
	modeFirstKey               // after '{': a key or '}'
	modeKey                    // after ',' in an object: a key
	modeFirstValue             // after '[': a value or ']'
	modeColon                  // after a key: ':'
	modeAfter                  // after a value: ',' or the container's end
	modeString                 // in a string
	modeEscape                 // after '\' in a string
	modeUnicode                // in \uXXXX; sub hex digits left
	modeUTF8                   // in a multi-byte character; sub bytes left
	modeLiteral                // in true, false or null; sub bytes read
	modeMinus                  // a number after '-'
	modeZero                   // a number's integer part is 0
	modeInt                    // in a number's integer digits (not a leading 0)
	modeDot                    // after the '.'
	modeFrac                   // in the fraction's digits
	modeExp                    // after 'e' or 'E'
	modeExpSign                // after the exponent's sign
	modeExpInt                 // in the exponent's digits
	modeDone                   // the top-level object has closed
)

const (
	// maxDepth is the deepest nesting of objects and arrays accepted.
	maxDepth = 64
	// maxIndent bounds the spaces and tabs after a newline: room for the
	// indentation of pretty-printed JSON.
	maxIndent = 20
	spaceFull = 255
)

// The literals, indexed by jsonState.lit.
const (
	litTrue = iota
	litFalse
	litNull
)

var literals = [...]string{litTrue: "true", litFalse: "false", litNull: "null"}

// Done reports whether the top-level object has closed.
func (s jsonState) Done() bool { return s.mode == modeDone }

// step returns the state after byte b, and false when b cannot come next.
func (s jsonState) step(b byte) (jsonState, bool) {
	switch s.mode {
	case modeString:
		return s.inString(b)
	case modeEscape:
		switch b {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			s.mode = modeString
			return s, true
		case 'u':
			s.mode, s.sub = modeUnicode, 4
			return s, true
		}
		return s, false
	case modeUnicode:
		if !isHex(b) {
			return s, false
		}
		if s.sub--; s.sub == 0 {
			s.mode = modeString
		}
		return s, true
	case modeUTF8:
		if b < s.lo || b > s.hi {
			return s, false
		}
		s.lo, s.hi = 0x80, 0xbf
		if s.sub--; s.sub == 0 {
			s.mode = modeString
		}
		return s, true
	case modeLiteral:
		if b != literals[s.lit][s.sub] {
			return s, false
		}
		if s.sub++; int(s.sub) == len(literals[s.lit]) {
			s.mode = modeAfter
		}
		return s, true
	case modeMinus:
		return s.number(b == '0', modeZero, isDigit(b), modeInt)
	case modeZero:
		return s.numberEnd(b)
	case modeInt, modeFrac, modeExpInt:
		if isDigit(b) {
			return s, true
		}
		if s.mode == modeExpInt {
			return s.after(b)
		}
		return s.numberEnd(b)
	case modeDot:
		return s.number(isDigit(b), modeFrac, false, 0)
	case modeExp:
		return s.number(b == '+' || b == '-', modeExpSign, isDigit(b), modeExpInt)
	case modeExpSign:
		return s.number(isDigit(b), modeExpInt, false, 0)
	case modeDone:
		return s, false
	}
	if isSpace(b) {
		return s.space(b)
	}
	s.spaces = 0
	switch s.mode {
	case modeStart:
		if b != '{' {
			return s, false
		}
		return s.open(true)
	case modeFirstKey, modeKey:
		switch {
		case b == '"':
			s.mode, s.key = modeString, true
			return s, true
		case b == '}' && s.mode == modeFirstKey:
			return s.close()
		}
		return s, false
	case modeColon:
		if b != ':' {
			return s, false
		}
		s.mode = modeValue
		return s, true
	case modeFirstValue:
		if b == ']' {
			return s.close()
		}
		return s.value(b)
	case modeValue:
		return s.value(b)
	case modeAfter:
		return s.after(b)
	}
	return s, false
}

// inString takes a byte of a string: ASCII but controls, the start of a
// well-formed UTF-8 sequence (RFC 3629: the second byte's range excludes
// overlong forms, surrogates and code points past U+10FFFF), an escape or
// the closing quote.
func (s jsonState) inString(b byte) (jsonState, bool) {
	switch {
	case b == '"':
		if s.key {
			s.mode, s.key = modeColon, false
		} else {
			s.mode = modeAfter
		}
		return s, true
	case b == '\\':
		s.mode = modeEscape
		return s, true
	case b < 0x20:
		return s, false
	case b < 0x80:
		return s, true
	case b >= 0xc2 && b <= 0xdf:
		s.mode, s.sub = modeUTF8, 1
	case b >= 0xe0 && b <= 0xef:
		s.mode, s.sub = modeUTF8, 2
	case b >= 0xf0 && b <= 0xf4:
		s.mode, s.sub = modeUTF8, 3
	default: // a continuation byte without a lead, or a lead never valid
		return s, false
	}
	s.lo, s.hi = 0x80, 0xbf
	switch b {
	case 0xe0:
		s.lo = 0xa0 // not overlong
	case 0xed:
		s.hi = 0x9f // not a surrogate
	case 0xf0:
		s.lo = 0x90 // not overlong
	case 0xf4:
		s.hi = 0x8f // not past U+10FFFF
	}
	return s, true
}

// value starts a value with b.
func (s jsonState) value(b byte) (jsonState, bool) {
	switch b {
	case '{':
		return s.open(true)
	case '[':
		return s.open(false)
	case '"':
		s.mode = modeString
		return s, true
	case '-':
		s.mode = modeMinus
		return s, true
	case '0':
		s.mode = modeZero
		return s, true
	case 't':
		s.mode, s.sub, s.lit = modeLiteral, 1, litTrue
		return s, true
	case 'f':
		s.mode, s.sub, s.lit = modeLiteral, 1, litFalse
		return s, true
	case 'n':
		s.mode, s.sub, s.lit = modeLiteral, 1, litNull
		return s, true
	}
	if isDigit(b) {
		s.mode = modeInt
		return s, true
	}
	return s, false
}

// number moves to m1 when ok1, else to m2 when ok2.
func (s jsonState) number(ok1 bool, m1 mode, ok2 bool, m2 mode) (jsonState, bool) {
	switch {
	case ok1:
		s.mode = m1
	case ok2:
		s.mode = m2
	default:
		return s, false
	}
	return s, true
}

// numberEnd takes the byte after a number's integer or fraction digits: a
// fraction, an exponent, or what may follow a value.
func (s jsonState) numberEnd(b byte) (jsonState, bool) {
	switch {
	case b == '.' && s.mode != modeFrac:
		s.mode = modeDot
		return s, true
	case b == 'e' || b == 'E':
		s.mode = modeExp
		return s, true
	}
	return s.after(b)
}

// after takes the byte after a complete value: whitespace, a comma or the
// end of the container.
func (s jsonState) after(b byte) (jsonState, bool) {
	if isSpace(b) {
		s.mode = modeAfter
		return s.space(b)
	}
	s.spaces = 0
	if s.depth == 0 { // (values sit in containers: not reached from the start)
		return s, false
	}
	inObject := s.stack>>(s.depth-1)&1 == 1
	switch {
	case b == ',' && inObject:
		s.mode = modeKey
	case b == ',':
		s.mode = modeValue
	case b == '}' && inObject, b == ']' && !inObject:
		return s.close()
	default:
		return s, false
	}
	return s, true
}

// space takes a whitespace byte between tokens: one space, or a newline
// then up to maxIndent spaces or tabs.
func (s jsonState) space(b byte) (jsonState, bool) {
	switch {
	case s.spaces == 0 && b == ' ':
		s.spaces = spaceFull
	case s.spaces == 0 && b == '\n':
		s.spaces = 1
	case s.spaces > 0 && s.spaces <= maxIndent && (b == ' ' || b == '\t'):
		s.spaces++
	default:
		return s, false
	}
	return s, true
}

// open enters an object or an array.
func (s jsonState) open(object bool) (jsonState, bool) {
	if s.depth == maxDepth {
		return s, false
	}
	s.stack &^= 1 << s.depth
	s.mode = modeFirstValue
	if object {
		s.stack |= 1 << s.depth
		s.mode = modeFirstKey
	}
	s.depth++
	return s, true
}

// close leaves the innermost container.
func (s jsonState) close() (jsonState, bool) {
	s.depth--
	s.mode = modeAfter
	if s.depth == 0 {
		s.mode = modeDone
	}
	return s, true
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }
func isHex(b byte) bool   { return isDigit(b) || b|0x20 >= 'a' && b|0x20 <= 'f' }
func isSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }
