package daftka_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestSemanticsNamesRealTests: every test docs/semantics.md cites as the
// one asserting a promise exists, so the document cannot point at a test
// that was renamed or removed.
func TestSemanticsNamesRealTests(t *testing.T) {
	doc, err := os.ReadFile("docs/semantics.md")
	if err != nil {
		t.Fatal(err)
	}
	cited := regexp.MustCompile("`(?:[a-z]+/)?[a-z]+\\.(Test[A-Za-z0-9_]+)`").FindAllStringSubmatch(string(doc), -1)
	if len(cited) < 10 {
		t.Fatalf("docs/semantics.md cites only %d tests", len(cited))
	}
	var defined strings.Builder
	err = filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		defined.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cited {
		if !strings.Contains(defined.String(), "func "+c[1]+"(") {
			t.Errorf("docs/semantics.md cites %s, which no test file defines", c[0])
		}
	}
}
