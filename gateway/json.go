package gateway

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/daftka/daftka"
)

// The gateway reads request bodies in two steps: parse the whole body into an
// order-preserving tree of JSON values (syntax, UTF-8, trailing data,
// duplicate keys, nesting depth), then walk the tree with the typed
// accessors below, which name the offending field in every error. Go's
// encoding/json cannot do it in one step: it accepts duplicate keys (the last
// wins), replaces invalid UTF-8 and lone surrogates silently, forgets the
// order of object keys (record headers keep theirs), and
// DisallowUnknownFields does not reach into map-typed objects.

// maxJSONDepth bounds the nesting of a request body. The deepest valid
// request (produce → records → record → headers) is 4 levels deep.
const maxJSONDepth = 32

type jsonKind uint8

const (
	jsonNull jsonKind = iota
	jsonBool
	jsonNumber
	jsonString
	jsonObject
	jsonArray
)

func (k jsonKind) String() string {
	return [...]string{"null", "boolean", "number", "string", "object", "array"}[k]
}

// jsonValue is one parsed JSON value.
type jsonValue struct {
	kind jsonKind
	b    bool
	s    string // a string's value, or a number's literal text
	obj  []jsonMember
	arr  []jsonValue
}

// jsonMember is one key of an object, in document order.
type jsonMember struct {
	key string
	val jsonValue
}

// parseJSON parses body as exactly one JSON value (RFC 8259). Errors are
// *problem with code malformed_json, except a duplicate object key, which is
// invalid_field. Strings must be valid UTF-8 and may not hold lone UTF-16
// surrogates (\ud800 alone has no UTF-8 form; encoding/json would replace
// it silently).
func parseJSON(body []byte) (jsonValue, *problem) {
	if !utf8.Valid(body) {
		return jsonValue{}, newProblem(daftka.CodeMalformedJSON, "the body is not valid UTF-8")
	}
	ps := &jsonParser{b: body}
	ps.skipSpace()
	v, p := ps.value(0)
	if p != nil {
		return jsonValue{}, p
	}
	ps.skipSpace()
	if ps.i != len(ps.b) {
		return jsonValue{}, newProblem(daftka.CodeMalformedJSON, fmt.Sprintf("trailing data after the JSON value at byte %d", ps.i))
	}
	return v, nil
}

// jsonParser is a recursive-descent JSON reader over a whole body. It is
// about ten times faster than json.Decoder.Token, which decodes every token
// through reflection.
type jsonParser struct {
	b []byte
	i int
}

func (ps *jsonParser) fail(what string) *problem {
	if ps.i >= len(ps.b) {
		return newProblem(daftka.CodeMalformedJSON, "the body ends before the JSON value does")
	}
	return newProblem(daftka.CodeMalformedJSON, fmt.Sprintf("invalid JSON at byte %d: %s", ps.i, what))
}

func (ps *jsonParser) skipSpace() {
	for ps.i < len(ps.b) {
		switch ps.b[ps.i] {
		case ' ', '\t', '\n', '\r':
			ps.i++
		default:
			return
		}
	}
}

// literal consumes word (true, false, null) or fails.
func (ps *jsonParser) literal(word string) bool {
	if len(ps.b)-ps.i >= len(word) && string(ps.b[ps.i:ps.i+len(word)]) == word {
		ps.i += len(word)
		return true
	}
	return false
}

// value reads one value; the cursor is on its first byte.
func (ps *jsonParser) value(depth int) (jsonValue, *problem) {
	if ps.i >= len(ps.b) {
		return jsonValue{}, ps.fail("")
	}
	switch c := ps.b[ps.i]; {
	case c == '{' || c == '[':
		if depth >= maxJSONDepth {
			return jsonValue{}, newProblem(daftka.CodeMalformedJSON, fmt.Sprintf("JSON nested deeper than %d levels", maxJSONDepth))
		}
		ps.i++
		if c == '{' {
			return ps.object(depth + 1)
		}
		return ps.array(depth + 1)
	case c == '"':
		s, p := ps.str()
		return jsonValue{kind: jsonString, s: s}, p
	case c == '-' || c >= '0' && c <= '9':
		return ps.number()
	case c == 't' && ps.literal("true"):
		return jsonValue{kind: jsonBool, b: true}, nil
	case c == 'f' && ps.literal("false"):
		return jsonValue{kind: jsonBool}, nil
	case c == 'n' && ps.literal("null"):
		return jsonValue{kind: jsonNull}, nil
	}
	return jsonValue{}, ps.fail(fmt.Sprintf("unexpected %q looking for a value", ps.b[ps.i]))
}

func (ps *jsonParser) object(depth int) (jsonValue, *problem) {
	v := jsonValue{kind: jsonObject}
	var seen map[string]struct{}
	ps.skipSpace()
	if ps.i < len(ps.b) && ps.b[ps.i] == '}' {
		ps.i++
		return v, nil
	}
	for {
		if ps.i >= len(ps.b) || ps.b[ps.i] != '"' {
			return jsonValue{}, ps.fail("expected a string key")
		}
		key, p := ps.str()
		if p != nil {
			return jsonValue{}, p
		}
		// Linear scan for small objects, a map past that: headers may
		// have thousands of keys.
		if len(v.obj) >= 8 && seen == nil {
			seen = make(map[string]struct{}, 16)
			for _, m := range v.obj {
				seen[m.key] = struct{}{}
			}
		}
		dup := false
		if seen != nil {
			_, dup = seen[key]
			seen[key] = struct{}{}
		} else {
			for _, m := range v.obj {
				if m.key == key {
					dup = true
					break
				}
			}
		}
		if dup {
			return jsonValue{}, newProblem(daftka.CodeInvalidField, fmt.Sprintf("duplicate key %q", clip(key)))
		}
		ps.skipSpace()
		if ps.i >= len(ps.b) || ps.b[ps.i] != ':' {
			return jsonValue{}, ps.fail("expected ':' after an object key")
		}
		ps.i++
		ps.skipSpace()
		val, p := ps.value(depth)
		if p != nil {
			return jsonValue{}, p
		}
		v.obj = append(v.obj, jsonMember{key: key, val: val})
		end, p := ps.next('}', "expected ',' or '}' in an object")
		if p != nil {
			return jsonValue{}, p
		}
		if end {
			return v, nil
		}
	}
}

// next reads what follows a member or an element: ',' (more follow) or
// close (end is true); anything else fails with msg.
func (ps *jsonParser) next(close byte, msg string) (end bool, p *problem) {
	ps.skipSpace()
	if ps.i >= len(ps.b) {
		return false, ps.fail("")
	}
	switch ps.b[ps.i] {
	case ',':
		ps.i++
		ps.skipSpace()
		return false, nil
	case close:
		ps.i++
		return true, nil
	default:
		return false, ps.fail(msg)
	}
}

func (ps *jsonParser) array(depth int) (jsonValue, *problem) {
	v := jsonValue{kind: jsonArray, arr: []jsonValue{}}
	ps.skipSpace()
	if ps.i < len(ps.b) && ps.b[ps.i] == ']' {
		ps.i++
		return v, nil
	}
	for {
		val, p := ps.value(depth)
		if p != nil {
			return jsonValue{}, p
		}
		v.arr = append(v.arr, val)
		end, p := ps.next(']', "expected ',' or ']' in an array")
		if p != nil {
			return jsonValue{}, p
		}
		if end {
			return v, nil
		}
	}
}

// number reads a number per RFC 8259 §6 and keeps its literal text.
func (ps *jsonParser) number() (jsonValue, *problem) {
	start := ps.i
	b := ps.b
	digits := func() int {
		n := 0
		for ps.i < len(b) && b[ps.i] >= '0' && b[ps.i] <= '9' {
			ps.i++
			n++
		}
		return n
	}
	if b[ps.i] == '-' {
		ps.i++
	}
	switch {
	case ps.i < len(b) && b[ps.i] == '0':
		ps.i++
	case digits() == 0:
		return jsonValue{}, ps.fail("invalid number")
	}
	if ps.i < len(b) && b[ps.i] == '.' {
		ps.i++
		if digits() == 0 {
			return jsonValue{}, ps.fail("invalid number")
		}
	}
	if ps.i < len(b) && (b[ps.i] == 'e' || b[ps.i] == 'E') {
		ps.i++
		if ps.i < len(b) && (b[ps.i] == '+' || b[ps.i] == '-') {
			ps.i++
		}
		if digits() == 0 {
			return jsonValue{}, ps.fail("invalid number")
		}
	}
	return jsonValue{kind: jsonNumber, s: string(b[start:ps.i])}, nil
}

// str reads a string; the cursor is on its opening quote.
func (ps *jsonParser) str() (string, *problem) {
	ps.i++
	b := ps.b
	start := ps.i
	// Fast path: no escapes.
	for ps.i < len(b) {
		c := b[ps.i]
		if c == '"' {
			s := string(b[start:ps.i])
			ps.i++
			return s, nil
		}
		if c == '\\' || c < 0x20 {
			break
		}
		ps.i++
	}
	buf := make([]byte, 0, ps.i-start+16)
	buf = append(buf, b[start:ps.i]...)
	for ps.i < len(b) {
		c := b[ps.i]
		switch {
		case c == '"':
			ps.i++
			return string(buf), nil
		case c < 0x20:
			return "", ps.fail("control character in a string")
		case c != '\\':
			buf = append(buf, c)
			ps.i++
			continue
		}
		ps.i++ // the backslash
		if ps.i >= len(b) {
			break
		}
		e := b[ps.i]
		ps.i++
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := ps.hex4()
			if !ok {
				return "", ps.fail("invalid \\u escape")
			}
			if utf16.IsSurrogate(r) {
				// A high surrogate must be followed by an escaped low one.
				if r >= 0xdc00 || len(b)-ps.i < 6 || b[ps.i] != '\\' || b[ps.i+1] != 'u' {
					return "", ps.fail("lone UTF-16 surrogate in a \\u escape")
				}
				ps.i += 2
				r2, ok := ps.hex4()
				if !ok {
					return "", ps.fail("invalid \\u escape")
				}
				if r2 < 0xdc00 || r2 > 0xdfff {
					return "", ps.fail("lone UTF-16 surrogate in a \\u escape")
				}
				r = utf16.DecodeRune(r, r2)
			}
			buf = utf8.AppendRune(buf, r)
		default:
			ps.i--
			return "", ps.fail("invalid escape in a string")
		}
	}
	return "", ps.fail("")
}

// hex4 reads the four hex digits of a \u escape.
func (ps *jsonParser) hex4() (rune, bool) {
	if len(ps.b)-ps.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range ps.b[ps.i : ps.i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	ps.i += 4
	return r, true
}

// get returns the member key of an object, and whether it is present.
func (v *jsonValue) get(key string) (*jsonValue, bool) {
	for i := range v.obj {
		if v.obj[i].key == key {
			return &v.obj[i].val, true
		}
	}
	return nil, false
}

// opt returns the member key of an object, and whether it is given: an
// optional field written as null is not given (a client's unset value).
func (v *jsonValue) opt(key string) (*jsonValue, bool) {
	m, ok := v.get(key)
	if !ok || m.kind == jsonNull {
		return nil, false
	}
	return m, true
}

// checkKeys rejects a key of object v not in allowed, with code
// unknown_field naming its path.
func checkKeys(v *jsonValue, path string, allowed ...string) *problem {
next:
	for _, m := range v.obj {
		for _, a := range allowed {
			if m.key == a {
				continue next
			}
		}
		return newProblem(daftka.CodeUnknownField, fmt.Sprintf("unknown field %q", joinPath(path, m.key)))
	}
	return nil
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func indexPath(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// wantKind returns a problem with code when v is not of kind k.
func wantKind(v *jsonValue, k jsonKind, code daftka.Code, path string) *problem {
	if v.kind != k {
		return newProblem(code, fmt.Sprintf("%s must be %s %s, not %s", path, article(k), k, v.kind))
	}
	return nil
}

func article(k jsonKind) string {
	if k == jsonObject || k == jsonArray {
		return "an"
	}
	return "a"
}

// intValue reads v as an integer in [lo, hi]. Only the plain integer form is
// an integer: no fraction, no exponent (1.0 and 1e3 are refused), so a
// number is never silently rounded.
func intValue(v *jsonValue, code daftka.Code, path string, lo, hi int64) (int64, *problem) {
	if v.kind != jsonNumber {
		return 0, newProblem(code, fmt.Sprintf("%s must be an integer, not %s", path, v.kind))
	}
	if strings.ContainsAny(v.s, ".eE") {
		return 0, newProblem(code, fmt.Sprintf("%s must be an integer, not %s", path, v.s))
	}
	n, err := strconv.ParseInt(v.s, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, newProblem(code, fmt.Sprintf("%s must be an integer in [%d, %d], not %s", path, lo, hi, v.s))
	}
	return n, nil
}
