package gateway

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/daftka/daftka"
	"pgregory.net/rapid"
)

// The strict JSON reader is checked against encoding/json, the simple
// model: on every input both accept, they must read the same value; where
// only encoding/json accepts, the reader must name one of its deliberate
// refusals (invalid UTF-8, lone surrogates, nesting past maxJSONDepth,
// duplicate keys).

// toAny converts a parsed tree to what json.Unmarshal (with UseNumber)
// makes of the same text.
func toAny(v jsonValue) any {
	switch v.kind {
	case jsonNull:
		return nil
	case jsonBool:
		return v.b
	case jsonNumber:
		return json.Number(v.s)
	case jsonString:
		return v.s
	case jsonArray:
		out := make([]any, len(v.arr))
		for i, e := range v.arr {
			out[i] = toAny(e)
		}
		return out
	default:
		out := make(map[string]any, len(v.obj))
		for _, m := range v.obj {
			out[m.key] = toAny(m.val)
		}
		return out
	}
}

func refDecode(data []byte) (any, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	if _, err := dec.Token(); err == nil || dec.More() {
		return nil, false
	}
	return v, json.Valid(data)
}

func checkAgainstModel(t interface{ Fatalf(string, ...any) }, data []byte) {
	got, p := parseJSON(data)
	want, ok := refDecode(data)
	if p == nil {
		if !ok {
			t.Fatalf("accepted what encoding/json refuses: %q", data)
		}
		if g := toAny(got); !reflect.DeepEqual(g, want) {
			t.Fatalf("read %#v, encoding/json reads %#v, from %q", g, want, data)
		}
		return
	}
	if !ok {
		return
	}
	switch {
	case !utf8.Valid(data),
		p.Code == daftka.CodeInvalidField && strings.HasPrefix(p.Detail, "duplicate key"),
		strings.Contains(p.Detail, "surrogate"),
		strings.Contains(p.Detail, "nested deeper"):
	default:
		t.Fatalf("refused %q (%s), which encoding/json reads", data, p.Detail)
	}
}

func FuzzParseJSON(f *testing.F) {
	for _, s := range []string{
		`{}`, `[]`, `null`, `true`, `-0.5e+10`, `"a\u00e9\ud83d\ude00\n"`, `{"a":[1,{"b":null}],"c":"d"}`,
		`{"a":1,"a":2}`, `"\ud800"`, `[1,]`, `{"a" 1}`, "\"\xff\"", ` [ 1 , 2 ] `, `01`, `1.`, `.5`, `"\x01"`,
		strings.Repeat("[", 33) + strings.Repeat("]", 33),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkAgainstModel(t, data)
	})
}

// jsonGen generates JSON values as encoding/json would produce them from
// Go values, to be written out with random formatting.
func jsonGen(depth int) *rapid.Generator[any] {
	return rapid.Custom(func(t *rapid.T) any {
		kinds := 6
		if depth <= 0 {
			kinds = 4
		}
		switch rapid.IntRange(0, kinds-1).Draw(t, "kind") {
		case 0:
			return nil
		case 1:
			return rapid.Bool().Draw(t, "b")
		case 2:
			return json.Number(rapid.SampledFrom([]string{"0", "-1", "12345678901234567890", "1.5", "-2e-3", "7E+2"}).Draw(t, "n"))
		case 3:
			return rapid.String().Draw(t, "s")
		case 4:
			return rapid.SliceOfN(jsonGen(depth-1), 0, 4).Draw(t, "arr")
		default:
			m := map[string]any{}
			for _, k := range rapid.SliceOfNDistinct(rapid.String(), 0, 4, func(s string) string { return s }).Draw(t, "keys") {
				m[k] = jsonGen(depth-1).Draw(t, "v")
			}
			return m
		}
	})
}

// TestParseJSONMatchesEncodingJSON: generated documents, marshalled by
// encoding/json with and without indentation and \u escapes, read the same.
func TestParseJSONMatchesEncodingJSON(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		v := jsonGen(3).Draw(t, "v")
		var data []byte
		var err error
		if rapid.Bool().Draw(t, "indent") {
			data, err = json.MarshalIndent(v, "", "\t")
		} else {
			data, err = json.Marshal(v) // escapes <, >, & as \u003c etc.
		}
		if err != nil {
			t.Fatal(err)
		}
		checkAgainstModel(t, data)
		if _, p := parseJSON(data); p != nil {
			t.Fatalf("refused %q: %s", data, p.Detail)
		}
	})
}
