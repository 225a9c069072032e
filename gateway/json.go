package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/daftka/daftka"
)

// The gateway reads request bodies in two steps: parse the whole body into an
// order-preserving tree of JSON values (syntax, UTF-8, trailing data,
// duplicate keys, nesting depth), then walk the tree with the typed
// accessors below, which name the offending field in every error. Go's
// encoding/json cannot do it in one step: it accepts duplicate keys (the last
// wins), replaces invalid UTF-8 silently, forgets the order of object keys
// (record headers keep theirs), and DisallowUnknownFields does not reach into
// map-typed objects.

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

// parseJSON parses body as exactly one JSON value. Errors are *problem with
// code malformed_json, except a duplicate object key, which is invalid_field.
func parseJSON(body []byte) (jsonValue, *problem) {
	if !utf8.Valid(body) {
		return jsonValue{}, newProblem(daftka.CodeMalformedJSON, "the body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return jsonValue{}, syntaxProblem(err)
	}
	v, p := parseValue(dec, tok, 0)
	if p != nil {
		return jsonValue{}, p
	}
	if _, err := dec.Token(); err != io.EOF {
		return jsonValue{}, newProblem(daftka.CodeMalformedJSON, "trailing data after the JSON value")
	}
	return v, nil
}

func syntaxProblem(err error) *problem {
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return newProblem(daftka.CodeMalformedJSON, "the body ends before the JSON value does")
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return newProblem(daftka.CodeMalformedJSON, fmt.Sprintf("invalid JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: ")))
	}
	return newProblem(daftka.CodeMalformedJSON, "invalid JSON")
}

// parseValue reads the value whose first token is tok.
func parseValue(dec *json.Decoder, tok json.Token, depth int) (jsonValue, *problem) {
	switch t := tok.(type) {
	case nil:
		return jsonValue{kind: jsonNull}, nil
	case bool:
		return jsonValue{kind: jsonBool, b: t}, nil
	case json.Number:
		return jsonValue{kind: jsonNumber, s: string(t)}, nil
	case string:
		return jsonValue{kind: jsonString, s: t}, nil
	case json.Delim:
		if depth >= maxJSONDepth {
			return jsonValue{}, newProblem(daftka.CodeMalformedJSON, fmt.Sprintf("JSON nested deeper than %d levels", maxJSONDepth))
		}
		switch t {
		case '{':
			return parseObject(dec, depth+1)
		case '[':
			return parseArray(dec, depth+1)
		}
	}
	return jsonValue{}, newProblem(daftka.CodeMalformedJSON, "invalid JSON")
}

func parseObject(dec *json.Decoder, depth int) (jsonValue, *problem) {
	v := jsonValue{kind: jsonObject}
	var seen map[string]struct{}
	for {
		tok, err := dec.Token()
		if err != nil {
			return jsonValue{}, syntaxProblem(err)
		}
		if d, ok := tok.(json.Delim); ok && d == '}' {
			return v, nil
		}
		key, ok := tok.(string)
		if !ok { // the decoder reports non-string keys as errors; be safe
			return jsonValue{}, newProblem(daftka.CodeMalformedJSON, "object key is not a string")
		}
		// Linear scan for small objects, a map past that: headers may have
		// thousands of keys.
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
			return jsonValue{}, newProblem(daftka.CodeInvalidField, fmt.Sprintf("duplicate key %q", key))
		}
		tok, err = dec.Token()
		if err != nil {
			return jsonValue{}, syntaxProblem(err)
		}
		val, p := parseValue(dec, tok, depth)
		if p != nil {
			return jsonValue{}, p
		}
		v.obj = append(v.obj, jsonMember{key: key, val: val})
	}
}

func parseArray(dec *json.Decoder, depth int) (jsonValue, *problem) {
	v := jsonValue{kind: jsonArray}
	for {
		tok, err := dec.Token()
		if err != nil {
			return jsonValue{}, syntaxProblem(err)
		}
		if d, ok := tok.(json.Delim); ok && d == ']' {
			if v.arr == nil {
				v.arr = []jsonValue{}
			}
			return v, nil
		}
		val, p := parseValue(dec, tok, depth)
		if p != nil {
			return jsonValue{}, p
		}
		v.arr = append(v.arr, val)
	}
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
