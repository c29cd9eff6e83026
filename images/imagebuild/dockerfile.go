// Package imagebuild turns the project's Dockerfiles into OCI images without a container engine:
// it reads the small Dockerfile subset the images use (FROM scratch, COPY, USER, ENTRYPOINT, CMD,
// ENV, LABEL, WORKDIR) and writes image tarballs that `ctr images import` accepts. The Dockerfile
// stays the single description of each image; this package only executes it.
package imagebuild

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// Copy is one COPY instruction: Src is relative to the build context, Dest is absolute in the image.
type Copy struct {
	Src  string
	Dest string
	Mode int64 // from --chmod; 0 keeps the source file's mode
	UID  int   // from --chown (numeric only); default 0
	GID  int
	Line int
}

// Spec is what a Dockerfile describes, in the order the instructions gave it.
type Spec struct {
	Copies     []Copy
	User       string
	Entrypoint []string
	Cmd        []string
	Env        []string // KEY=value, later entries override earlier ones of the same key
	Labels     map[string]string
	WorkingDir string
	// Publish is what the file's `# nginx-mesh-image:` comment says about where the image goes.
	Publish Publish
}

// DirectivePrefix starts the comment line that tells the builder and `make push` where an image
// goes. It is a comment, so the Dockerfile stays valid for any other builder:
//
//	# nginx-mesh-image: repository=spiffe/spire-server tag=1.13.3 platforms=build
const DirectivePrefix = "# nginx-mesh-image:"

// Publish holds the directive's settings; the zero value is a product image: repository
// nginx-mesh/<dir>, the product tag, every platform of `make push`, pushed.
type Publish struct {
	Repository string // repository below the registry ("" = nginx-mesh/<dir>)
	Tag        string // fixed tag, e.g. an upstream version ("" = the product tag)
	BuildOnly  bool   // platforms=build: only the build machine's platform (e.g. cgo binaries)
	NoPush     bool   // push=false: the local cluster's own image (pause, test workloads)
}

// ParseError names the file, line and instruction that could not be used, and what to do instead.
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// Parse reads a Dockerfile. name is used in error messages only.
func Parse(name string, r io.Reader) (*Spec, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	pub, err := parseDirectives(name, string(data))
	if err != nil {
		return nil, err
	}
	lines, err := logicalLines(strings.NewReader(string(data)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	spec := &Spec{Labels: map[string]string{}, Publish: pub}
	sawFrom := false
	for _, ll := range lines {
		fail := func(format string, a ...any) error {
			return &ParseError{File: name, Line: ll.num, Msg: fmt.Sprintf(format, a...)}
		}
		instr, rest, _ := strings.Cut(ll.text, " ")
		instr = strings.ToUpper(instr)
		rest = strings.TrimSpace(rest)
		if !sawFrom && instr != "FROM" {
			return nil, fail("%s before FROM: the first instruction must be FROM scratch", instr)
		}
		switch instr {
		case "FROM":
			if sawFrom {
				return nil, fail("second FROM: multi-stage builds are not supported; build the binary with `make build` and COPY it")
			}
			if !strings.EqualFold(rest, "scratch") {
				return nil, fail("FROM %q: only FROM scratch is supported (the builder is offline and has no base images)", rest)
			}
			sawFrom = true
		case "COPY":
			c, err := parseCopy(rest)
			if err != nil {
				return nil, fail("COPY: %v", err)
			}
			c.Line = ll.num
			spec.Copies = append(spec.Copies, c)
		case "USER":
			if rest == "" || strings.ContainsAny(rest, " \t") {
				return nil, fail("USER needs exactly one value (uid, uid:gid or name), got %q", rest)
			}
			spec.User = rest
		case "ENTRYPOINT", "CMD":
			args, err := execForm(rest)
			if err != nil {
				return nil, fail("%s: %v", instr, err)
			}
			if instr == "ENTRYPOINT" {
				spec.Entrypoint = args
			} else {
				spec.Cmd = args
			}
		case "ENV":
			kvs, err := keyValues(rest, true)
			if err != nil {
				return nil, fail("ENV: %v", err)
			}
			for _, kv := range kvs {
				spec.Env = setEnv(spec.Env, kv[0], kv[1])
			}
		case "LABEL":
			kvs, err := keyValues(rest, false)
			if err != nil {
				return nil, fail("LABEL: %v", err)
			}
			for _, kv := range kvs {
				spec.Labels[kv[0]] = kv[1]
			}
		case "WORKDIR":
			if !path.IsAbs(rest) {
				return nil, fail("WORKDIR %q must be an absolute path", rest)
			}
			spec.WorkingDir = path.Clean(rest)
		default:
			return nil, fail("instruction %s is not supported by the offline builder (supported: FROM scratch, COPY, USER, ENTRYPOINT, CMD, ENV, LABEL, WORKDIR)", instr)
		}
	}
	if !sawFrom {
		return nil, &ParseError{File: name, Line: 0, Msg: "no FROM instruction: start the file with FROM scratch"}
	}
	if len(spec.Copies) == 0 {
		return nil, &ParseError{File: name, Line: 0, Msg: "no COPY instruction: a scratch image needs at least one file"}
	}
	return spec, nil
}

// parseDirectives reads the `# nginx-mesh-image:` comment lines (at most one of each key).
func parseDirectives(name, data string) (Publish, error) {
	var p Publish
	seen := map[string]bool{}
	for i, line := range strings.Split(data, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), DirectivePrefix)
		if !ok {
			continue
		}
		fail := func(format string, a ...any) error {
			return &ParseError{File: name, Line: i + 1, Msg: fmt.Sprintf(format, a...)}
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return p, fail("empty %s directive: give key=value (repository, tag, platforms, push)", DirectivePrefix)
		}
		for _, f := range fields {
			k, v, ok := strings.Cut(f, "=")
			if !ok || v == "" {
				return p, fail("directive %q is not key=value", f)
			}
			if seen[k] {
				return p, fail("directive key %q given twice", k)
			}
			seen[k] = true
			switch k {
			case "repository":
				if !repositoryRE.MatchString(v) {
					return p, fail("repository %q: want lower-case path segments like nginx-mesh/hooks", v)
				}
				p.Repository = v
			case "tag":
				if !tagRE.MatchString(v) {
					return p, fail("tag %q is not a valid image tag", v)
				}
				p.Tag = v
			case "platforms":
				switch v {
				case "all":
				case "build":
					p.BuildOnly = true
				default:
					return p, fail("platforms=%s: want all (every platform of make push) or build (the build machine's only)", v)
				}
			case "push":
				b, err := strconv.ParseBool(v)
				if err != nil {
					return p, fail("push=%s: want true or false", v)
				}
				p.NoPush = !b
			default:
				return p, fail("unknown directive key %q (known: repository, tag, platforms, push)", k)
			}
		}
	}
	return p, nil
}

// The distribution spec's grammar for repository paths and tags.
var (
	repositoryRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE        = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
)

type logicalLine struct {
	num  int // line number where the instruction starts
	text string
}

// logicalLines drops comments and blank lines and joins backslash continuations.
func logicalLines(r io.Reader) ([]logicalLine, error) {
	var out []logicalLine
	sc := bufio.NewScanner(r)
	n := 0
	var cur strings.Builder
	start := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(line, `\`) {
			cur.WriteString(strings.TrimSpace(strings.TrimSuffix(line, `\`)))
			cur.WriteString(" ")
			continue
		}
		cur.WriteString(line)
		out = append(out, logicalLine{num: start, text: strings.TrimSpace(cur.String())})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("line %d: file ends inside a backslash continuation", start)
	}
	return out, nil
}

func parseCopy(rest string) (Copy, error) {
	var c Copy
	fields := strings.Fields(rest)
	var args []string
	for _, f := range fields {
		switch {
		case strings.HasPrefix(f, "--chmod="):
			m, err := strconv.ParseInt(strings.TrimPrefix(f, "--chmod="), 8, 32)
			if err != nil || m <= 0 || m > 0o7777 {
				return c, fmt.Errorf("--chmod wants an octal mode like 0755, got %q", f)
			}
			c.Mode = m
		case strings.HasPrefix(f, "--chown="):
			u, g, hasG := strings.Cut(strings.TrimPrefix(f, "--chown="), ":")
			uid, err := strconv.Atoi(u)
			if err != nil || uid < 0 {
				return c, fmt.Errorf("--chown wants numeric uid[:gid], got %q", f)
			}
			gid := uid
			if hasG {
				if gid, err = strconv.Atoi(g); err != nil || gid < 0 {
					return c, fmt.Errorf("--chown wants numeric uid[:gid], got %q", f)
				}
			}
			c.UID, c.GID = uid, gid
		case strings.HasPrefix(f, "--"):
			return c, fmt.Errorf("flag %q is not supported (only --chmod and --chown)", f)
		default:
			args = append(args, f)
		}
	}
	if strings.HasPrefix(strings.TrimSpace(strings.Join(args, " ")), "[") {
		return c, fmt.Errorf("the JSON form is not supported; write COPY <src> <dest>")
	}
	if len(args) != 2 {
		return c, fmt.Errorf("want exactly one source and one destination, got %d arguments", len(args))
	}
	src, dest := args[0], args[1]
	if path.IsAbs(src) || strings.HasPrefix(path.Clean(src), "..") {
		return c, fmt.Errorf("source %q must be relative to the build context and stay inside it", src)
	}
	if strings.ContainsAny(src, "*?[") {
		return c, fmt.Errorf("source %q: wildcards are not supported; name one file", src)
	}
	if !path.IsAbs(dest) {
		return c, fmt.Errorf("destination %q must be absolute", dest)
	}
	if strings.HasSuffix(dest, "/") {
		dest = path.Join(dest, path.Base(src))
	}
	c.Src, c.Dest = path.Clean(src), path.Clean(dest)
	if c.Dest == "/" {
		return c, fmt.Errorf("destination %q must name a file", args[1])
	}
	return c, nil
}

// execForm parses ["a", "b"]. The shell form needs /bin/sh, which a scratch image does not have.
func execForm(rest string) ([]string, error) {
	if !strings.HasPrefix(rest, "[") {
		return nil, fmt.Errorf("use the exec form [\"/binary\", \"arg\"]; the shell form needs /bin/sh, which a scratch image lacks")
	}
	var args []string
	if err := json.Unmarshal([]byte(rest), &args); err != nil {
		return nil, fmt.Errorf("exec form is not a JSON array of strings: %v", err)
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("empty exec form")
	}
	return args, nil
}

// keyValues parses `k=v k2="v 2"`; with legacy, a single `KEY value with spaces` is accepted (ENV only).
func keyValues(rest string, legacy bool) ([][2]string, error) {
	if rest == "" {
		return nil, fmt.Errorf("needs key=value")
	}
	toks, err := shellWords(rest)
	if err != nil {
		return nil, err
	}
	if legacy && !strings.Contains(toks[0], "=") {
		if len(toks) < 2 {
			return nil, fmt.Errorf("%q has no value", toks[0])
		}
		k, v, _ := strings.Cut(rest, " ")
		return [][2]string{{k, strings.TrimSpace(v)}}, nil
	}
	var out [][2]string
	for _, t := range toks {
		k, v, ok := strings.Cut(t, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value", t)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

// shellWords splits on blanks, honouring double and single quotes and backslash escapes.
func shellWords(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	var quote rune
	esc := false
	for _, r := range s {
		switch {
		case esc:
			cur.WriteRune(r)
			esc = false
		case r == '\\' && quote != '\'':
			esc, inWord = true, true
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if esc {
		return nil, fmt.Errorf("trailing backslash")
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}

func setEnv(env []string, k, v string) []string {
	for i, e := range env {
		if strings.HasPrefix(e, k+"=") {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}
