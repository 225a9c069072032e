package gateway

import (
	"os"
	"strings"
	"testing"

	"github.com/daftka/daftka"
)

// TestOpenAPICoversRoutesAndCodes keeps openapi.yaml in step with what is
// served: every route's path and method, and every code of the catalog.
// (A text check: the module has no YAML parser among its direct
// dependencies.)
func TestOpenAPICoversRoutesAndCodes(t *testing.T) {
	raw, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	lines := strings.Split(doc, "\n")
	g := New(nil, Options{}).(*gateway)
	for _, r := range g.routeList() {
		// The path key, then the method key before the next path key.
		at := -1
		for i, l := range lines {
			if l == "  "+r.path+":" {
				at = i
				break
			}
		}
		if at < 0 {
			t.Errorf("openapi.yaml has no path %s", r.path)
			continue
		}
		found := false
		for _, l := range lines[at+1:] {
			if strings.HasPrefix(l, "  /") || strings.HasPrefix(l, "components:") {
				break
			}
			if l == "    "+strings.ToLower(r.method)+":" {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("openapi.yaml: %s has no %s operation", r.path, r.method)
		}
	}
	for _, c := range daftka.Codes() {
		if !strings.Contains(doc, "        - "+string(c)+"\n") {
			t.Errorf("openapi.yaml: code %s is not in the Code enum", c)
		}
	}
}
