package charts

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The README's parameter table is what `make docs` (helm-docs) generates from values.yaml now.
func TestReadmeUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go tool helm-docs")
	}
	// The same tool and flags as `make docs`, in dry-run mode: it prints the README it would write.
	cmd := exec.Command("go", "tool", "helm-docs", "--chart-search-root", ".", "--chart-to-generate", chartDir, "--dry-run", "--log-level", "error")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm-docs: %v\n%s", err, stderr.String())
	}
	if got, want := string(out), readFile(t, filepath.Join(chartDir, "README.md")); got != want {
		t.Errorf("charts/nginx-mesh/README.md is stale: run `make docs`.\n%s", firstDiff(want, got))
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d:\n  README:    %q\n  generated: %q", i+1, x, y)
		}
	}
	return ""
}

// leaves lists the documented keys helm-docs shows: scalars, lists and empty maps.
func leaves(prefix string, v any, out *[]string) {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		*out = append(*out, prefix)
		return
	}
	for k, c := range m {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		leaves(key, c, out)
	}
}

// Every value has a `# --` comment, so every leaf is a row of the README's table.
func TestEveryValueDocumented(t *testing.T) {
	var values map[string]any
	if err := yaml.Unmarshal([]byte(readFile(t, filepath.Join(chartDir, "values.yaml"))), &values); err != nil {
		t.Fatal(err)
	}
	var keys []string
	leaves("", values, &keys)
	sort.Strings(keys)
	readme := readFile(t, filepath.Join(chartDir, "README.md"))
	documented := func(k string) bool {
		// A map with a `# --` comment of its own (a default such as proxy.resources) is one row.
		parts := strings.Split(k, ".")
		for i := range parts {
			if strings.Contains(readme, "\n| "+strings.Join(parts[:i+1], ".")+" | ") {
				return true
			}
		}
		return false
	}
	for _, k := range keys {
		if !documented(k) {
			t.Errorf("value %s has no row in the README table: give it a `# --` comment in values.yaml and run `make docs`", k)
		}
	}
}

// Each value's comment is one line: `# -- text` directly above the key.
func TestValueCommentsAreOneLine(t *testing.T) {
	lines := strings.Split(readFile(t, filepath.Join(chartDir, "values.yaml")), "\n")
	for i, l := range lines {
		if !strings.HasPrefix(strings.TrimSpace(l), "# --") {
			continue
		}
		if i+1 >= len(lines) || strings.HasPrefix(strings.TrimSpace(lines[i+1]), "#") || !strings.Contains(lines[i+1], ":") {
			t.Errorf("values.yaml:%d: the `# --` comment must be one line directly above its key", i+1)
		}
	}
}
