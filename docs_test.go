package nginxmesh_test

import (
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nginx-mesh/nginx-mesh/controller/app"
	"github.com/nginx-mesh/nginx-mesh/hooks/cli"
	"github.com/nginx-mesh/nginx-mesh/internal/cliutil"
	"github.com/spf13/cobra"
)

// docFiles are the repository's documents: every Markdown file and the chart's NOTES.txt (what
// helm prints after an install).
func docFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "bin" || p == filepath.Join("ci", "tools")) {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".md") || d.Name() == "NOTES.txt") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// A documented command line: where it is, and the words after the binary's name.
type docCommand struct {
	where  string // file:line
	binary string
	args   []string
	text   string
}

var (
	codeSpan    = regexp.MustCompile("`([^`]+)`")
	placeholder = regexp.MustCompile(`<[^<>]*>`)
	optional    = regexp.MustCompile(`\[([^\[\]]*)\]`)
	template    = regexp.MustCompile(`\{\{[^}]*\}\}`)
	binaries    = map[string]bool{"nginx-mesh-hooks": true, "nginx-mesh-controller": true}
)

// commandOf reads the command line that starts at a binary's name in text (a code span, a
// line of a code block or of NOTES.txt), or nil. How placeholders read: `<a value>` and
// `{{ .Release.Namespace }}` are a value; `[-n shop]` is an optional part, kept; `[flags]` and
// "…" are synopsis, dropped; a shell operator or comment ends the line.
func commandOf(text string) (binary string, args []string, ok bool) {
	text = template.ReplaceAllString(text, "NS")
	words := strings.Fields(text)
	start := -1
	for i, w := range words {
		if binaries[path.Base(w)] {
			start = i
			break
		}
	}
	if start < 0 || start == len(words)-1 {
		return "", nil, false // not there, or the binary's name alone
	}
	binary = path.Base(words[start])
	rest := strings.Join(words[start+1:], " ")
	if strings.HasPrefix(rest, "<") {
		return "", nil, false // a synopsis: `nginx-mesh-hooks <command> [flags]`
	}
	rest = placeholder.ReplaceAllString(rest, "X")
	rest = optional.ReplaceAllStringFunc(rest, func(m string) string {
		if inner := m[1 : len(m)-1]; strings.HasPrefix(inner, "-") {
			return inner
		}
		return ""
	})
	for _, w := range strings.Fields(rest) {
		if w == "|" || w == "||" || w == "&&" || w == ";" || w == "#" || strings.HasPrefix(w, ">") || strings.HasPrefix(w, "2>") {
			break
		}
		if w == "…" || w == "..." || w == "\\" {
			continue
		}
		args = append(args, w)
	}
	return binary, args, true
}

// documentedCommands extracts every command line of the two binaries from the documents:
// code spans (a span may wrap lines within a paragraph), lines of fenced code blocks (with
// `\` continuations), and lines of NOTES.txt.
func documentedCommands(t *testing.T) []docCommand {
	t.Helper()
	var out []docCommand
	add := func(where, text string) {
		if b, args, ok := commandOf(text); ok {
			out = append(out, docCommand{where: where, binary: b, args: args, text: strings.TrimSpace(text)})
		}
	}
	for _, f := range docFiles(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(data), "\n")
		if filepath.Base(f) == "NOTES.txt" {
			for i, l := range lines {
				add(f+":"+itoa(i+1), l)
			}
			continue
		}
		inFence, output, para, paraStart, cont := false, false, "", 0, ""
		flush := func() {
			for _, m := range codeSpan.FindAllStringSubmatch(para, -1) {
				add(f+":"+itoa(paraStart), m[1])
			}
			para = ""
		}
		for i, l := range lines {
			trimmed := strings.TrimSpace(l)
			if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
				flush()
				inFence = !inFence
				// A ```text block is a program's output: only its `$ ` lines are commands.
				output = inFence && strings.TrimLeft(trimmed, "`~") == "text"
				continue
			}
			if inFence && output && !strings.HasPrefix(trimmed, "$ ") {
				continue
			}
			if inFence {
				if strings.HasSuffix(trimmed, "\\") {
					cont += strings.TrimSuffix(trimmed, "\\") + " "
					continue
				}
				add(f+":"+itoa(i+1), cont+trimmed)
				cont = ""
				continue
			}
			if trimmed == "" || strings.HasPrefix(trimmed, "|") || strings.HasPrefix(trimmed, "#") {
				flush()
				if strings.HasPrefix(trimmed, "|") { // a table row is a paragraph of its own
					para, paraStart = trimmed, i+1
					flush()
				}
				continue
			}
			if para == "" {
				paraStart = i + 1
			}
			para += " " + trimmed
		}
		flush()
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }

// roots are the real command trees of the two binaries.
func roots(binary string) *cobra.Command {
	if binary == "nginx-mesh-hooks" {
		return cli.New(cli.Deps{Stdout: io.Discard, Stderr: io.Discard})
	}
	return app.NewCommand(strings.NewReader(""), io.Discard, io.Discard)
}

// Issue 20 item 8: every command line the documents give (README, NOTES.txt, hooks/README.md,
// docs/…) is read by the binary's real command tree: the command exists and its flags are
// valid. Nothing runs, no cluster is touched.
func TestDocumentedCommandsParse(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "")
	cmds := documentedCommands(t)
	perFile := map[string]int{}
	for _, c := range cmds {
		perFile[strings.SplitN(c.where, ":", 2)[0]]++
		if err := cliutil.Check(roots(c.binary), c.args); err != nil {
			t.Errorf("%s: `%s` (read as %s %q): %v", c.where, c.text, c.binary, c.args, err)
		}
	}
	// The extraction must find the lines the issue was about, or the test proves nothing.
	for _, f := range []string{"README.md", "hooks/README.md", "docs/design.md", "controller/README.md", "charts/nginx-mesh/README.md", "charts/nginx-mesh/templates/NOTES.txt"} {
		if perFile[filepath.FromSlash(f)] == 0 {
			t.Errorf("no command line of the binaries found in %s", f)
		}
	}
	if len(cmds) < 20 {
		t.Errorf("only %d documented command lines found", len(cmds))
	}
	t.Logf("%d documented command lines checked", len(cmds))
}

// The extraction reads what the documents write.
func TestCommandOf(t *testing.T) {
	for _, c := range []struct {
		text string
		want string // "" = not a command
	}{
		{"nginx-mesh-hooks cleanup --wait -n NS", "cleanup --wait -n NS"},
		{"bin/linux_amd64/nginx-mesh-hooks version", "version"},
		{"nginx-mesh-hooks cleanup [--dry-run] [--force]", "cleanup --dry-run --force"},
		{"nginx-mesh-controller inject -f deployment.yaml [-n shop] [--required-scc x]", "inject -f deployment.yaml -n shop --required-scc x"},
		{"nginx-mesh-hooks pre-delete -n <namespace> --image <a pullable hooks image>", "pre-delete -n X --image X"},
		{"then nginx-mesh-hooks cleanup --wait -n {{ .Release.Namespace }}", "cleanup --wait -n NS"},
		{"nginx-mesh-hooks status -o json | jq .release", "status -o json"},
		{"nginx-mesh-hooks <command> [flags]", ""},
		{"nginx-mesh-hooks", ""},
		{"helm uninstall --no-hooks", ""},
	} {
		_, args, ok := commandOf(c.text)
		if got := strings.Join(args, " "); ok != (c.want != "") || got != c.want {
			t.Errorf("%q: read %q (ok %v), want %q", c.text, got, ok, c.want)
		}
	}
}

var (
	mdLink    = regexp.MustCompile(`\[[^\]]*\]\(([^)\s]+)\)`)
	htmlID    = regexp.MustCompile(`<a (?:id|name)="([^"]+)"`)
	slugStrip = regexp.MustCompile(`[^\p{L}\p{N} _-]`)
)

// slug is GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens.
func slug(heading string) string {
	s := strings.ToLower(strings.TrimSpace(heading))
	s = strings.ReplaceAll(s, "`", "")
	s = slugStrip.ReplaceAllString(s, "")
	return strings.ReplaceAll(s, " ", "-")
}

// anchors are the fragment targets of a Markdown file: its headings (with GitHub's -1, -2 for
// repeats) and explicit <a id>/<a name>.
func anchors(data string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	inFence := false
	for _, l := range strings.Split(data, "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "```") || strings.HasPrefix(t, "~~~") {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		for _, m := range htmlID.FindAllStringSubmatch(l, -1) {
			out[m[1]] = true
		}
		if !strings.HasPrefix(l, "#") {
			continue
		}
		s := slug(strings.TrimLeft(l, "#"))
		if n := seen[s]; n > 0 {
			out[s+"-"+strconv.Itoa(n)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}

// withoutCode blanks fenced blocks and code spans: a link there is an example, not a link.
func withoutCode(data string) string {
	var b strings.Builder
	inFence := false
	for _, l := range strings.Split(data, "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "```") || strings.HasPrefix(t, "~~~") {
			inFence = !inFence
			b.WriteString("\n")
			continue
		}
		if !inFence {
			b.WriteString(codeSpan.ReplaceAllString(l, "``"))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Issue 20 item 9: every relative link of the documents reaches a file of the repository, and
// every #fragment a heading or anchor of its target (docs/design.md's contents had two that
// did not).
func TestDocLinksResolve(t *testing.T) {
	checked := 0
	for _, f := range docFiles(t) {
		if !strings.HasSuffix(f, ".md") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, l := range strings.Split(withoutCode(string(data)), "\n") {
			for _, m := range mdLink.FindAllStringSubmatch(l, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				file, frag, _ := strings.Cut(target, "#")
				p := f
				if file != "" {
					p = filepath.Join(filepath.Dir(f), filepath.FromSlash(file))
				}
				checked++
				st, err := os.Stat(p)
				if err != nil {
					t.Errorf("%s:%d: link %s: %s does not exist", f, i+1, target, p)
					continue
				}
				if frag == "" {
					continue
				}
				if st.IsDir() || !strings.HasSuffix(p, ".md") {
					t.Errorf("%s:%d: link %s: a #fragment into %s, which is no Markdown file", f, i+1, target, p)
					continue
				}
				td, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if !anchors(string(td))[frag] {
					t.Errorf("%s:%d: link %s: %s has no heading or anchor #%s", f, i+1, target, p, frag)
				}
			}
		}
	}
	if checked < 30 {
		t.Errorf("only %d links checked", checked)
	}
	t.Logf("%d links checked", checked)
}

func TestSlug(t *testing.T) {
	for in, want := range map[string]string{
		" Mutual TLS between workloads: ports and peers":                    "mutual-tls-between-workloads-ports-and-peers",
		" 11. Joining the mesh: nginx-mesh-controller and nginx-mesh-proxy": "11-joining-the-mesh-nginx-mesh-controller-and-nginx-mesh-proxy",
		" `make push` (CI)": "make-push-ci",
	} {
		if got := slug(in); got != want {
			t.Errorf("slug(%q) = %q, want %q", in, got, want)
		}
	}
}

var (
	measure   = regexp.MustCompile(`\d[\d,.]*(–[\d.]+)?\s?(ms|µs|s|min|MiB|MB|GB|KB|pairs/s)\b`)
	runBy     = regexp.MustCompile("`(make|go|ci/|\\.ci/run|E2E_RUN=)[^`]*`")
	atCommit  = regexp.MustCompile("at `([0-9a-f]{7,40})`")
	tableRule = regexp.MustCompile(`^\|[-| :]+\|$`)
)

// Issue 20 item 9: a measured number in a table of the README (and of ci/README's "Measured
// times") carries the command that measured it and the commit it was recorded at, in its last
// column, so that a stale one can be seen (the demo's 49 s predated the proxy flow; "about 10
// min" for the e2e suite predated four scenarios).
func TestReadmeNumbersCarryTheirCommand(t *testing.T) {
	for _, doc := range []struct {
		file, section string // section: only the tables under this heading; "" = all
		min           int
	}{{"README.md", "", 30}, {filepath.Join("ci", "README.md"), "## Measured times", 20}} {
		data, err := os.ReadFile(doc.file)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(withoutFences(string(data)), "\n")
		rows, in := 0, doc.section == ""
		for i, l := range lines {
			if doc.section != "" && strings.HasPrefix(l, "#") {
				in = strings.TrimSpace(l) == doc.section
			}
			if !in || !strings.HasPrefix(l, "|") || tableRule.MatchString(l) || i+1 < len(lines) && tableRule.MatchString(lines[i+1]) {
				continue // not a table row, a separator, or a header
			}
			cells := strings.Split(strings.Trim(l, "|"), "|")
			if len(cells) < 2 || !measure.MatchString(strings.Join(cells[1:], "|")) {
				continue
			}
			rows++
			last := cells[len(cells)-1]
			if !runBy.MatchString(last) || !atCommit.MatchString(last) {
				t.Errorf("%s:%d: a measured number without its command and commit (last column \"`command` at `commit`\"): %s", doc.file, i+1, l)
				continue
			}
			if c := atCommit.FindStringSubmatch(last)[1]; gitHas != nil && !gitHas(c) {
				t.Errorf("%s:%d: commit %s is not in this repository's history", doc.file, i+1, c)
			}
		}
		if rows < doc.min {
			t.Errorf("only %d measured rows found in %s", rows, doc.file)
		}
	}
}

// gitHas tells whether a commit exists, or is nil when git or the history is not there (a
// tarball, a shallow clone).
var gitHas = func() func(string) bool {
	if out, err := exec.Command("git", "rev-parse", "--is-shallow-repository").Output(); err != nil || strings.TrimSpace(string(out)) != "false" {
		return nil
	}
	return func(c string) bool { return exec.Command("git", "cat-file", "-e", c+"^{commit}").Run() == nil }
}()

// withoutFences blanks fenced code blocks (keeping line numbers).
func withoutFences(data string) string {
	lines := strings.Split(data, "\n")
	in := false
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "```") || strings.HasPrefix(t, "~~~") {
			in = !in
			lines[i] = ""
			continue
		}
		if in {
			lines[i] = ""
		}
	}
	return strings.Join(lines, "\n")
}
