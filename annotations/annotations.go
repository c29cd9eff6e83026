// Package annotations is the contract between a pod's annotations, the controller's injection webhook
// and nginx-mesh-proxy. A pod declares what it serves (inbound) and what it calls (outbound) in
// annotations under config.nsm.nginx.com/; Parse validates them and returns the proxy's
// configuration, or an error naming the annotation, the bad value and the fix. Env renders a
// configuration into the proxy's environment, and FromValues (in the proxy) parses it back with the
// same code, so the webhook and the proxy can never disagree. The grammar is in proxy/README.md.
package annotations

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	// AnnotationPrefix holds every proxy setting of a pod. Keys under it that this package does
	// not know are refused, so a typo never silently leaves a port out of the mesh.
	AnnotationPrefix = "config.nsm.nginx.com/"
	// InboundAnnotation declares the ports the pod serves through the mesh.
	InboundAnnotation = AnnotationPrefix + "inbound"
	// OutboundAnnotation declares the upstreams the pod calls through the mesh.
	OutboundAnnotation = AnnotationPrefix + "outbound"

	// Environment variables the proxy reads (each is also a flag, see proxy/app).
	EnvTrustDomain = "PROXY_TRUST_DOMAIN"
	EnvInbound     = "PROXY_INBOUND"
	EnvOutbound    = "PROXY_OUTBOUND"
	// EnvLogLevel sets the proxy's --log-level (the chart's proxy.logLevel, through the webhook).
	EnvLogLevel = "PROXY_LOG_LEVEL"
	// EnvIdleTimeout and EnvMaxConnections set --idle-timeout and --max-connections (the
	// chart's proxy.idleTimeout and proxy.maxConnections, through the webhook).
	EnvIdleTimeout    = "PROXY_IDLE_TIMEOUT"
	EnvMaxConnections = "PROXY_MAX_CONNECTIONS"
	// EnvAdminAddress sets --admin-address. The webhook sets it to the pod's IP (EnvPodIP, from
	// the downward API) so the admin endpoint is reachable where kubelet probes it and
	// Prometheus scrapes it, and nowhere else.
	EnvAdminAddress = "PROXY_ADMIN_ADDRESS"
	EnvPodIP        = "POD_IP"

	// DefaultIdleTimeout is NGINX's stream proxy_timeout: a connection on which nothing moved
	// for this long is closed.
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultMaxConnections bounds the proxy's memory: at the peak RSS per relayed connection
	// measured by proxy/app TestConnectionCapBoundsMemory (about 146 KiB), 1,024 fit the
	// chart's default memory limit of the proxy container.
	DefaultMaxConnections = 1024

	// ContainerName is the proxy's container in an injected pod (a native sidecar: an init
	// container with restartPolicy Always).
	ContainerName = "nginx-mesh-proxy"

	// DefaultAdminPort serves the proxy's /ready, /live and /metrics, on the pod's IP in an
	// injected pod (EnvAdminAddress); no inbound, app or outbound port may use it.
	DefaultAdminPort = 9902

	// AnyPeer, alone in an inbound allow list, admits every workload of the mesh's trust domain:
	// only pods of opted-in namespaces get an SVID of it (nginxmesh.OptIn, controller/register).
	AnyPeer = "*"
)

// Config is what one proxy does: its inbound and outbound listeners.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	Inbound     []Inbound
	Outbound    []Outbound
}

// Inbound is a mesh port: the proxy listens on MeshPort (all interfaces), terminates mTLS,
// admits the clients in Allow, and forwards to the app on 127.0.0.1:AppPort.
type Inbound struct {
	MeshPort uint16
	AppPort  uint16
	Allow    Peers
}

// Outbound is an upstream: the proxy listens on 127.0.0.1:LocalPort, dials Host:Port over mTLS
// and accepts the server only if its SPIFFE ID is one of Expect.
type Outbound struct {
	LocalPort uint16
	Host      string
	Port      uint16
	Expect    []spiffeid.ID
}

// Peers is an allow list: either any workload of the trust domain, or these IDs.
type Peers struct {
	Any bool
	IDs []spiffeid.ID
}

// Address is the upstream's host:port (IPv6 in brackets).
func (o Outbound) Address() string {
	return net.JoinHostPort(o.Host, strconv.Itoa(int(o.Port)))
}

// EnvVar is one environment variable of the proxy container (the webhook turns it into a
// corev1.EnvVar; this package stays free of Kubernetes types so the proxy binary stays small).
type EnvVar struct{ Name, Value string }

// Error is one bad value: where it came from (annotation or flag), the value, what is wrong and
// how to fix it.
type Error struct {
	Source string // e.g. config.nsm.nginx.com/inbound, or --inbound
	Value  string // the offending entry or token
	Reason string
	Fix    string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Source)
	if e.Value != "" {
		fmt.Fprintf(&b, ": %q", e.Value)
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	if e.Fix != "" {
		b.WriteString("; fix: ")
		b.WriteString(e.Fix)
	}
	return b.String()
}

// Errors returns every *Error in err (Parse joins them, so callers can list them one per line).
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if e, ok := err.(*Error); ok {
			out = append(out, e)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		walk(errors.Unwrap(err))
	}
	walk(err)
	return out
}

// Parse reads a pod's annotations. trustDomain is the mesh's (the chart's spire.trustDomain).
// It returns nil, nil when the pod declares neither inbound nor outbound: no proxy is needed.
// Every problem found is reported, joined, each an *Error.
func Parse(annotations map[string]string, trustDomain string) (*Config, error) {
	td, err := parseTrustDomain("trust domain", trustDomain)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, k := range sortedKeys(annotations) {
		if !strings.HasPrefix(k, AnnotationPrefix) || k == InboundAnnotation || k == OutboundAnnotation {
			continue
		}
		errs = append(errs, &Error{Source: k, Reason: "unknown annotation",
			Fix: fmt.Sprintf("use %s or %s%s", InboundAnnotation, OutboundAnnotation, didYouMean(k))})
	}
	in, hasIn := annotations[InboundAnnotation]
	out, hasOut := annotations[OutboundAnnotation]
	if !hasIn && !hasOut {
		return nil, errors.Join(errs...)
	}
	c, err := parse(td, sourced{InboundAnnotation, in, hasIn}, sourced{OutboundAnnotation, out, hasOut})
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// FromValues is the proxy's side: the values of --trust-domain, --inbound and --outbound (or
// their PROXY_* environment variables). Empty inbound and outbound together is an error: a proxy
// with nothing to do was injected by mistake.
func FromValues(trustDomain, inbound, outbound string) (*Config, error) {
	td, err := parseTrustDomain("--trust-domain", trustDomain)
	if err != nil {
		return nil, err
	}
	hasIn, hasOut := strings.TrimSpace(inbound) != "", strings.TrimSpace(outbound) != ""
	if !hasIn && !hasOut {
		return nil, &Error{Source: "--inbound/--outbound", Reason: "neither is set: the proxy has nothing to serve",
			Fix: fmt.Sprintf("set --inbound (%s) or --outbound (%s), or the annotations %s / %s on the pod", EnvInbound, EnvOutbound, InboundAnnotation, OutboundAnnotation)}
	}
	return parse(td, sourced{"--inbound", inbound, hasIn}, sourced{"--outbound", outbound, hasOut})
}

// Env renders c into the proxy container's environment. FromValues of these values returns c.
func (c *Config) Env() []EnvVar {
	env := []EnvVar{{EnvTrustDomain, c.TrustDomain.Name()}}
	if s := c.InboundString(); s != "" {
		env = append(env, EnvVar{EnvInbound, s})
	}
	if s := c.OutboundString(); s != "" {
		env = append(env, EnvVar{EnvOutbound, s})
	}
	return env
}

// InboundString is the canonical form of the inbound entries (full SPIFFE IDs, "; " between
// entries): what Env puts in PROXY_INBOUND.
func (c *Config) InboundString() string {
	parts := make([]string, 0, len(c.Inbound))
	for _, in := range c.Inbound {
		allow := AnyPeer
		if !in.Allow.Any {
			allow = joinIDs(in.Allow.IDs)
		}
		parts = append(parts, fmt.Sprintf("%d->%d allow %s", in.MeshPort, in.AppPort, allow))
	}
	return strings.Join(parts, "; ")
}

// OutboundString is the canonical form of the outbound entries: what Env puts in PROXY_OUTBOUND.
func (c *Config) OutboundString() string {
	parts := make([]string, 0, len(c.Outbound))
	for _, o := range c.Outbound {
		parts = append(parts, fmt.Sprintf("%d->%s expect %s", o.LocalPort, o.Address(), joinIDs(o.Expect)))
	}
	return strings.Join(parts, "; ")
}

// MeshPorts are the inbound listeners' ports (the webhook declares them as container ports).
func (c *Config) MeshPorts() []uint16 {
	out := make([]uint16, 0, len(c.Inbound))
	for _, in := range c.Inbound {
		out = append(out, in.MeshPort)
	}
	return out
}

func joinIDs(ids []spiffeid.ID) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = id.String()
	}
	return strings.Join(s, ",")
}

type sourced struct {
	source, value string
	present       bool
}

func parse(td spiffeid.TrustDomain, in, out sourced) (*Config, error) {
	c := &Config{TrustDomain: td}
	var inErrs, outErrs []error
	c.Inbound, inErrs = parseEntries(td, in, parseInbound)
	c.Outbound, outErrs = parseEntries(td, out, parseOutbound)
	if err := errors.Join(slices.Concat(inErrs, outErrs, c.checkPorts(in.source, out.source))...); err != nil {
		return nil, err
	}
	return c, nil
}

// parseEntries parses every entry of s with parseOne, keeping every error (one bad entry does
// not hide the next); nothing when the annotation is absent.
func parseEntries[T any](td spiffeid.TrustDomain, s sourced, parseOne func(spiffeid.TrustDomain, string, string) (T, error)) ([]T, []error) {
	if !s.present {
		return nil, nil
	}
	entries, err := splitEntries(s)
	errs := []error{err}
	var out []T
	for _, e := range entries {
		v, err := parseOne(td, s.source, e)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, v)
	}
	return out, errs
}

// splitEntries splits on ";" and newlines; blank entries (a trailing ";") are skipped, but a
// value with no entry at all is an error.
func splitEntries(s sourced) ([]string, error) {
	var out []string
	for _, e := range strings.FieldsFunc(s.value, func(r rune) bool { return r == ';' || r == '\n' }) {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil, &Error{Source: s.source, Value: s.value, Reason: "declares no entry",
			Fix: "remove it, or declare at least one entry (see the grammar in proxy/README.md)"}
	}
	return out, nil
}

const (
	inboundForm  = "<mesh port>-><app port> allow <id>[,<id>...] (e.g. 8443->8080 allow ns/shop/sa/frontend)"
	outboundForm = "<local port>-><host>:<port> expect <id>[,<id>...] (e.g. 15001->backend.shop.svc:8443 expect ns/shop/sa/backend)"
)

// splitEntry cuts "<a>-><b> <keyword> <ids>" into its three parts.
func splitEntry(source, entry, keyword, form string) (left, right, ids string, err error) {
	head, ids, ok := cutKeyword(entry, keyword)
	if !ok {
		return "", "", "", &Error{Source: source, Value: entry, Reason: fmt.Sprintf("missing the keyword %q", keyword), Fix: "write " + form}
	}
	left, right, ok = strings.Cut(head, "->")
	left, right = strings.TrimSpace(left), strings.TrimSpace(right)
	if !ok || left == "" || right == "" || strings.Contains(right, "->") {
		return "", "", "", &Error{Source: source, Value: entry, Reason: `expected exactly one "<from>-><to>" before ` + strconv.Quote(keyword), Fix: "write " + form}
	}
	if strings.ContainsAny(left, " \t") || strings.ContainsAny(right, " \t") {
		return "", "", "", &Error{Source: source, Value: entry, Reason: "unexpected space inside a port or address", Fix: "write " + form}
	}
	return left, right, ids, nil
}

// cutKeyword finds keyword as a whitespace-separated word.
func cutKeyword(entry, keyword string) (before, after string, ok bool) {
	fields := strings.Fields(entry)
	for i, f := range fields {
		if f == keyword {
			return strings.Join(fields[:i], " "), strings.Join(fields[i+1:], " "), true
		}
	}
	return "", "", false
}

func parseInbound(td spiffeid.TrustDomain, source, entry string) (Inbound, error) {
	mesh, app, ids, err := splitEntry(source, entry, "allow", inboundForm)
	if err != nil {
		return Inbound{}, err
	}
	var in Inbound
	var errs []error
	if in.MeshPort, err = parsePort(source, entry, "mesh port", mesh); err != nil {
		errs = append(errs, err)
	}
	if in.AppPort, err = parsePort(source, entry, "app port", app); err != nil {
		errs = append(errs, err)
	}
	if in.MeshPort != 0 && in.MeshPort == in.AppPort {
		errs = append(errs, &Error{Source: source, Value: entry, Reason: fmt.Sprintf("mesh port and app port are both %d", in.MeshPort),
			Fix: "the app must listen on 127.0.0.1:<app port> and the proxy on <mesh port>, so they must differ (e.g. 8443->8080)"})
	}
	if in.Allow, err = parsePeers(td, source, entry, ids, true); err != nil {
		errs = append(errs, err)
	}
	return in, errors.Join(errs...)
}

func parseOutbound(td spiffeid.TrustDomain, source, entry string) (Outbound, error) {
	local, upstream, ids, err := splitEntry(source, entry, "expect", outboundForm)
	if err != nil {
		return Outbound{}, err
	}
	var o Outbound
	var errs []error
	if o.LocalPort, err = parsePort(source, entry, "local port", local); err != nil {
		errs = append(errs, err)
	}
	if o.Host, o.Port, err = parseHostPort(source, entry, upstream); err != nil {
		errs = append(errs, err)
	}
	peers, err := parsePeers(td, source, entry, ids, false)
	if err != nil {
		errs = append(errs, err)
	}
	o.Expect = peers.IDs
	return o, errors.Join(errs...)
}

func parsePort(source, entry, what, s string) (uint16, error) {
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, &Error{Source: source, Value: entry, Reason: fmt.Sprintf("%s %q is not a port number", what, s), Fix: "use a decimal number between 1 and 65535"}
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n < 1 || n > 65535 {
		return 0, &Error{Source: source, Value: entry, Reason: fmt.Sprintf("%s %s is out of range", what, s), Fix: "use a port between 1 and 65535"}
	}
	return uint16(n), nil
}

func parseHostPort(source, entry, s string) (string, uint16, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, &Error{Source: source, Value: entry, Reason: fmt.Sprintf("upstream %q is not <host>:<port>", s),
			Fix: "name the upstream Service and its mesh port, e.g. backend.shop.svc:8443 (IPv6 in brackets: [fd00::1]:8443)"}
	}
	p, err := parsePort(source, entry, "upstream port", port)
	if err != nil {
		return "", 0, err
	}
	if net.ParseIP(host) == nil && !isDNSName(host) {
		return "", 0, &Error{Source: source, Value: entry, Reason: fmt.Sprintf("upstream host %q is neither an IP address nor a DNS name", host),
			Fix: "use a lower-case DNS name such as backend.shop.svc.cluster.local, or an IP address"}
	}
	return host, p, nil
}

// isDNSName accepts a lower-case RFC 1123 name: labels of [a-z0-9-], not starting or ending
// with "-", at most 63 characters each and 253 in all.
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if !isDNSLabel(label) {
			return false
		}
	}
	return true
}

func isDNSLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// parsePeers reads a comma-separated ID list. An ID is a full SPIFFE ID of the mesh's trust
// domain, or the short form ns/<namespace>/sa/<serviceaccount>; "*" (inbound only, alone) admits
// the whole trust domain.
func parsePeers(td spiffeid.TrustDomain, source, entry, list string, allowAny bool) (Peers, error) {
	toks := strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	if len(toks) == 0 {
		what := "allow list"
		if !allowAny {
			what = "expected server ID"
		}
		return Peers{}, &Error{Source: source, Value: entry, Reason: "empty " + what,
			Fix: fmt.Sprintf("name at least one SPIFFE ID, e.g. ns/<namespace>/sa/<serviceaccount> or spiffe://%s/ns/<namespace>/sa/<serviceaccount>", td.Name())}
	}
	var p Peers
	var errs []error
	seen := map[string]bool{}
	for _, t := range toks {
		if t == AnyPeer {
			if !allowAny {
				errs = append(errs, &Error{Source: source, Value: entry, Reason: `"*" cannot be an expected server ID`,
					Fix: "name the upstream's own SPIFFE ID, e.g. ns/<namespace>/sa/<serviceaccount>: the point of expect is to pin the server"})
				continue
			}
			p.Any = true
			continue
		}
		id, err := parseID(td, source, entry, t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[id.String()] {
			errs = append(errs, &Error{Source: source, Value: entry, Reason: fmt.Sprintf("%s is listed twice", id), Fix: "list each ID once"})
			continue
		}
		seen[id.String()] = true
		p.IDs = append(p.IDs, id)
	}
	if p.Any && len(toks) > 1 {
		errs = append(errs, &Error{Source: source, Value: entry, Reason: `"*" already admits every workload of the trust domain`,
			Fix: `write "allow *" alone, or list only the IDs to admit`})
	}
	if err := errors.Join(errs...); err != nil {
		return Peers{}, err
	}
	return p, nil
}

func parseID(td spiffeid.TrustDomain, source, entry, s string) (spiffeid.ID, error) {
	if strings.HasPrefix(s, "spiffe://") {
		id, err := spiffeid.FromString(s)
		if err != nil {
			return spiffeid.ID{}, &Error{Source: source, Value: entry, Reason: fmt.Sprintf("%q is not a SPIFFE ID: %v", s, err),
				Fix: fmt.Sprintf("write spiffe://%s/ns/<namespace>/sa/<serviceaccount> (lower-case trust domain, no query, fragment or trailing /)", td.Name())}
		}
		if id.Path() == "" {
			return spiffeid.ID{}, &Error{Source: source, Value: entry, Reason: fmt.Sprintf("%q names a trust domain, not a workload", s),
				Fix: `add the workload's path (…/ns/<namespace>/sa/<serviceaccount>), or use "*" to admit the whole trust domain`}
		}
		if id.TrustDomain() != td {
			return spiffeid.ID{}, &Error{Source: source, Value: entry, Reason: fmt.Sprintf("%s is in trust domain %q, the mesh's is %q", s, id.TrustDomain().Name(), td.Name()),
				Fix: fmt.Sprintf("use spiffe://%s%s, or the short form ns/<namespace>/sa/<serviceaccount>; the mesh does not federate trust domains", td.Name(), id.Path())}
		}
		return id, nil
	}
	seg := strings.Split(s, "/")
	if len(seg) != 4 || seg[0] != "ns" || seg[2] != "sa" {
		return spiffeid.ID{}, &Error{Source: source, Value: entry, Reason: fmt.Sprintf("%q is neither a SPIFFE ID nor ns/<namespace>/sa/<serviceaccount>", s),
			Fix: fmt.Sprintf("write ns/<namespace>/sa/<serviceaccount> or spiffe://%s/ns/<namespace>/sa/<serviceaccount>", td.Name())}
	}
	if !isDNSLabel(seg[1]) {
		return spiffeid.ID{}, &Error{Source: source, Value: entry, Reason: fmt.Sprintf("namespace %q in %q is not a valid namespace name", seg[1], s),
			Fix: "use a lower-case RFC 1123 label (a-z, 0-9, -; at most 63 characters)"}
	}
	if !isDNSName(seg[3]) {
		return spiffeid.ID{}, &Error{Source: source, Value: entry, Reason: fmt.Sprintf("service account %q in %q is not a valid ServiceAccount name", seg[3], s),
			Fix: "use a lower-case RFC 1123 name (a-z, 0-9, - and .)"}
	}
	return spiffeid.FromSegments(td, seg...)
}

func parseTrustDomain(source, s string) (spiffeid.TrustDomain, error) {
	if s == "" || strings.Contains(s, "://") {
		return spiffeid.TrustDomain{}, &Error{Source: source, Value: s, Reason: "not a trust domain name", Fix: "give the mesh's trust domain name alone, e.g. cluster.local (chart value spire.trustDomain)"}
	}
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		return spiffeid.TrustDomain{}, &Error{Source: source, Value: s, Reason: err.Error(), Fix: "give the mesh's trust domain name, e.g. cluster.local (chart value spire.trustDomain)"}
	}
	return td, nil
}

// checkPorts refuses two listeners on one port in the pod's network namespace: mesh ports and
// the admin port bind every interface, outbound ports and the app's ports bind 127.0.0.1, and a
// socket on 0.0.0.0:p conflicts with one on 127.0.0.1:p.
func (c *Config) checkPorts(inSource, outSource string) []error {
	type use struct{ source, what string }
	used := map[uint16]use{DefaultAdminPort: {"", "the proxy's admin port (/ready, /live, /metrics)"}}
	var errs []error
	claim := func(p uint16, u use) {
		if p == 0 {
			return
		}
		if prev, ok := used[p]; ok {
			fix := "give each listener of the pod its own port"
			if prev.what == u.what && u.what == "an app port" {
				fix = "declare one mesh port per app port and merge their allow lists"
			}
			reason := fmt.Sprintf("port %d is %s and also %s", p, u.what, prev.what)
			if prev.source != "" {
				reason += " (in " + prev.source + ")"
			}
			errs = append(errs, &Error{Source: u.source, Value: strconv.Itoa(int(p)), Reason: reason, Fix: fix})
			return
		}
		used[p] = u
	}
	for _, in := range c.Inbound {
		claim(in.MeshPort, use{inSource, "a mesh port"})
	}
	for _, in := range c.Inbound {
		if in.AppPort != in.MeshPort { // parseInbound already reported mesh port == app port
			claim(in.AppPort, use{inSource, "an app port"})
		}
	}
	for _, o := range c.Outbound {
		claim(o.LocalPort, use{outSource, "an outbound local port"})
	}
	return errs
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// didYouMean suggests the known key closest to a misspelt one.
func didYouMean(k string) string {
	name := strings.TrimPrefix(k, AnnotationPrefix)
	for _, known := range []string{"inbound", "outbound"} {
		if editDistance(name, known) <= 2 || strings.Contains(name, known) {
			return fmt.Sprintf(" (did you mean %s%s?)", AnnotationPrefix, known)
		}
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
