package gateway

import (
	"os"
	"strings"
	"testing"

	"github.com/daftka/daftka"
)

// openAPIPaths splits openapi.yaml's paths section into path blocks, and
// each into its operation blocks (keyed by method, lower case). A text
// split: the module has no YAML parser among its direct dependencies, and
// the document keeps a fixed layout (paths at two spaces, operations at
// four, responses at eight).
func openAPIPaths(t *testing.T) (doc string, paths map[string]map[string][]string) {
	t.Helper()
	raw, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc = string(raw)
	paths = map[string]map[string][]string{}
	var ops map[string][]string
	op := ""
	inPaths := false
	for _, l := range strings.Split(doc, "\n") {
		switch {
		case l == "paths:":
			inPaths = true
			continue
		case !inPaths:
			continue
		case l != "" && !strings.HasPrefix(l, " "):
			inPaths = false // the next top-level key
			continue
		case strings.HasPrefix(l, "  /") && strings.HasSuffix(l, ":"):
			ops = map[string][]string{}
			paths[strings.TrimSuffix(strings.TrimSpace(l), ":")] = ops
			op = ""
			continue
		case strings.HasPrefix(l, "    ") && !strings.HasPrefix(l, "     ") && strings.HasSuffix(l, ":"):
			op = strings.TrimSuffix(strings.TrimSpace(l), ":")
			if op == "parameters" {
				op = ""
			}
			continue
		}
		if ops != nil && op != "" {
			ops[op] = append(ops[op], l)
		}
	}
	return doc, paths
}

// TestOpenAPICoversRoutesAndCodes keeps openapi.yaml in step with what is
// served: every route's path and method (HEAD with every GET), and every
// code of the catalog.
func TestOpenAPICoversRoutesAndCodes(t *testing.T) {
	doc, paths := openAPIPaths(t)
	g := New(nil, Options{}).(*gateway)
	for _, r := range g.routeList() {
		ops, ok := paths[r.path]
		if !ok {
			t.Errorf("openapi.yaml has no path %s", r.path)
			continue
		}
		methods := []string{strings.ToLower(r.method)}
		if r.method == "GET" {
			methods = append(methods, "head") // served by every GET route
		}
		for _, m := range methods {
			if _, ok := ops[m]; !ok {
				t.Errorf("openapi.yaml: %s has no %s operation", r.path, m)
			}
		}
	}
	for _, c := range daftka.Codes() {
		if !strings.Contains(doc, "        - "+string(c)+"\n") {
			t.Errorf("openapi.yaml: code %s is not in the Code enum", c)
		}
	}
}

// TestOpenAPIDocumentsServedAnswers — api-v1.md: "405 for a method a known
// path does not serve", which every path of the gateway does (with Allow):
// every operation lists the 405 answer. And the headers every JSON,
// problem and stream answer carries (Cache-Control: no-store; a stream's
// X-Accel-Buffering: no) are declared where they are served.
func TestOpenAPIDocumentsServedAnswers(t *testing.T) {
	doc, paths := openAPIPaths(t)
	const ref405 = `        "405": { $ref: "#/components/responses/MethodNotAllowed" }`
	for p, ops := range paths {
		for m, lines := range ops {
			has405, status := false, ""
			for i, l := range lines {
				if l == ref405 {
					has405 = true
				}
				if strings.HasPrefix(l, `        "`) || strings.HasPrefix(l, "        default:") {
					status = strings.TrimSpace(l)[:5]
				}
				// A response's own headers: X-Request-Id, then
				// Cache-Control, on everything but a 204.
				if l == `            X-Request-Id: { $ref: "#/components/headers/X-Request-Id" }` && status != `"204"` {
					if i+1 >= len(lines) || lines[i+1] != `            Cache-Control: { $ref: "#/components/headers/Cache-Control" }` {
						t.Errorf("openapi.yaml: %s %s, response %s: no Cache-Control", m, p, status)
					}
				}
			}
			if !has405 {
				t.Errorf("openapi.yaml: %s %s does not list the 405 answer", m, p)
			}
			if strings.HasSuffix(p, "/stream") && !strings.Contains(strings.Join(lines, "\n"), `X-Accel-Buffering: { $ref: "#/components/headers/X-Accel-Buffering" }`) {
				t.Errorf("openapi.yaml: %s %s: no X-Accel-Buffering", m, p)
			}
		}
	}
	// Every problem response component declares Cache-Control.
	comp := doc[strings.Index(doc, "\n  responses:\n"):strings.Index(doc, "\n  schemas:\n")]
	if n, c := strings.Count(comp, "X-Request-Id: {"), strings.Count(comp, "Cache-Control: {"); n == 0 || n != c {
		t.Errorf("openapi.yaml: %d problem responses, %d with Cache-Control", n, c)
	}
}
