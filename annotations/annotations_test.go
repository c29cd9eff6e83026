package annotations

import (
	"reflect"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const td = "cluster.local"

func id(path string) spiffeid.ID {
	return spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString(td), path)
}

func TestParseValid(t *testing.T) {
	tdom := spiffeid.RequireTrustDomainFromString(td)
	tests := []struct {
		name string
		ann  map[string]string
		want *Config
	}{
		{name: "no annotations: no proxy", ann: nil, want: nil},
		{name: "foreign annotations only", ann: map[string]string{"injector.nsm.nginx.com/auto-inject": "enabled", "app": "x"}, want: nil},
		{
			name: "inbound short and full IDs",
			ann:  map[string]string{InboundAnnotation: "8443->8080 allow ns/shop/sa/frontend, spiffe://cluster.local/ns/ops/sa/prober"},
			want: &Config{TrustDomain: tdom, Inbound: []Inbound{{8443, 8080, Peers{IDs: []spiffeid.ID{id("/ns/shop/sa/frontend"), id("/ns/ops/sa/prober")}}}}},
		},
		{
			name: "spaces around the arrow, tabs, trailing semicolon, newlines",
			ann:  map[string]string{InboundAnnotation: "\n 8443 -> 8080\tallow ns/a/sa/b;\n9443->9090 allow *;\n"},
			want: &Config{TrustDomain: tdom, Inbound: []Inbound{
				{8443, 8080, Peers{IDs: []spiffeid.ID{id("/ns/a/sa/b")}}},
				{9443, 9090, Peers{Any: true}},
			}},
		},
		{
			name: "outbound DNS, IPv4, IPv6; several expected IDs",
			ann: map[string]string{OutboundAnnotation: "15001->backend.shop.svc:8443 expect ns/shop/sa/backend; " +
				"15002->10.0.0.7:443 expect ns/a/sa/b,ns/a/sa/c; 15003->[fd00::1]:8443 expect spiffe://cluster.local/custom/path"},
			want: &Config{TrustDomain: tdom, Outbound: []Outbound{
				{15001, "backend.shop.svc", 8443, []spiffeid.ID{id("/ns/shop/sa/backend")}},
				{15002, "10.0.0.7", 443, []spiffeid.ID{id("/ns/a/sa/b"), id("/ns/a/sa/c")}},
				{15003, "fd00::1", 8443, []spiffeid.ID{id("/custom/path")}},
			}},
		},
		{
			name: "ports at the edges of the range; service account with dots",
			ann:  map[string]string{InboundAnnotation: "1->65535 allow ns/a/sa/my.sa", OutboundAnnotation: "65534->x:1 expect ns/a/sa/b"},
			want: &Config{TrustDomain: tdom,
				Inbound:  []Inbound{{1, 65535, Peers{IDs: []spiffeid.ID{id("/ns/a/sa/my.sa")}}}},
				Outbound: []Outbound{{65534, "x", 1, []spiffeid.ID{id("/ns/a/sa/b")}}}},
		},
		{
			name: "an app port may equal an upstream's port (different hosts)",
			ann:  map[string]string{InboundAnnotation: "8443->8080 allow *", OutboundAnnotation: "15001->b.svc:8080 expect ns/a/sa/b"},
			want: &Config{TrustDomain: tdom,
				Inbound:  []Inbound{{8443, 8080, Peers{Any: true}}},
				Outbound: []Outbound{{15001, "b.svc", 8080, []spiffeid.ID{id("/ns/a/sa/b")}}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.ann, td)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Parse =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		ann  map[string]string
		want []string // substrings of the joined error text
		n    int      // number of *Error; 0 means 1
		src  string   // Source of the first error; "" means the inbound annotation if set
	}{
		{name: "empty inbound", ann: map[string]string{InboundAnnotation: "  "}, want: []string{"declares no entry"}, src: InboundAnnotation},
		{name: "only separators", ann: map[string]string{OutboundAnnotation: ";\n;"}, want: []string{"declares no entry"}, src: OutboundAnnotation},
		{name: "missing allow", ann: map[string]string{InboundAnnotation: "8443->8080 ns/a/sa/b"}, want: []string{`missing the keyword "allow"`}},
		{name: "expect used for inbound", ann: map[string]string{InboundAnnotation: "8443->8080 expect ns/a/sa/b"}, want: []string{`missing the keyword "allow"`}},
		{name: "missing arrow", ann: map[string]string{InboundAnnotation: "8443:8080 allow *"}, want: []string{`exactly one "<from>-><to>"`}},
		{name: "two arrows", ann: map[string]string{InboundAnnotation: "1->2->3 allow *"}, want: []string{`exactly one "<from>-><to>"`}},
		{name: "space inside the upstream", ann: map[string]string{OutboundAnnotation: "15001->b svc:1 expect ns/a/sa/b"}, want: []string{"unexpected space"}},
		{name: "mesh port zero", ann: map[string]string{InboundAnnotation: "0->8080 allow *"}, want: []string{"mesh port 0 is out of range", "between 1 and 65535"}},
		{name: "app port too big", ann: map[string]string{InboundAnnotation: "8443->65536 allow *"}, want: []string{"app port 65536 is out of range"}},
		{name: "huge port", ann: map[string]string{InboundAnnotation: "8443->99999999999 allow *"}, want: []string{"app port 99999999999 is out of range"}},
		{name: "negative port", ann: map[string]string{InboundAnnotation: "-1->8080 allow *"}, want: []string{`mesh port "-1" is not a port number`}},
		{name: "named port", ann: map[string]string{InboundAnnotation: "https->8080 allow *"}, want: []string{`mesh port "https" is not a port number`}},
		{name: "both ports bad: both reported", ann: map[string]string{InboundAnnotation: "0->x allow *"}, want: []string{"mesh port 0", `app port "x"`}, n: 2},
		{name: "mesh port equal to app port", ann: map[string]string{InboundAnnotation: "8080->8080 allow *"}, want: []string{"mesh port and app port are both 8080"}},
		{name: "mesh port equal to another entry's app port", ann: map[string]string{InboundAnnotation: "8443->8080; 8080->9090 allow *"},
			want: []string{`missing the keyword "allow"`}}, // first entry lacks allow; see next case for the port clash
		{name: "mesh port equal to another entry's app port (valid entries)", ann: map[string]string{InboundAnnotation: "8443->8080 allow *; 8080->9090 allow *"},
			want: []string{"port 8080 is an app port and also a mesh port"}},
		{name: "duplicate mesh port", ann: map[string]string{InboundAnnotation: "8443->8080 allow *; 8443->8081 allow *"}, want: []string{"port 8443 is a mesh port and also a mesh port"}},
		{name: "duplicate app port", ann: map[string]string{InboundAnnotation: "8443->8080 allow ns/a/sa/b; 9443->8080 allow ns/a/sa/c"}, want: []string{"merge their allow lists"}},
		{name: "duplicate outbound local port", ann: map[string]string{OutboundAnnotation: "15001->a:1 expect ns/a/sa/b; 15001->b:2 expect ns/a/sa/b"}, want: []string{"port 15001 is an outbound local port and also an outbound local port"}},
		{name: "outbound local port equal to an app port", ann: map[string]string{InboundAnnotation: "8443->8080 allow *", OutboundAnnotation: "8080->a:1 expect ns/a/sa/b"},
			want: []string{"port 8080 is an outbound local port and also an app port"}, src: OutboundAnnotation},
		{name: "outbound local port equal to a mesh port", ann: map[string]string{InboundAnnotation: "8443->8080 allow *", OutboundAnnotation: "8443->a:1 expect ns/a/sa/b"},
			want: []string{"port 8443 is an outbound local port and also a mesh port"}, src: OutboundAnnotation},
		{name: "admin port taken", ann: map[string]string{InboundAnnotation: "9902->8080 allow *"}, want: []string{"port 9902 is a mesh port and also the proxy's admin port (/ready, /live, /metrics); fix"}},
		{name: "empty allow list", ann: map[string]string{InboundAnnotation: "8443->8080 allow"}, want: []string{"empty allow list"}},
		{name: "allow list of commas", ann: map[string]string{InboundAnnotation: "8443->8080 allow , ,"}, want: []string{"empty allow list"}},
		{name: "empty expect", ann: map[string]string{OutboundAnnotation: "15001->a:1 expect"}, want: []string{"empty expected server ID"}},
		{name: "star in expect", ann: map[string]string{OutboundAnnotation: "15001->a:1 expect *"}, want: []string{`"*" cannot be an expected server ID`}},
		{name: "star with IDs", ann: map[string]string{InboundAnnotation: "8443->8080 allow *,ns/a/sa/b"}, want: []string{`write "allow *" alone`}},
		{name: "duplicate ID (short and full forms)", ann: map[string]string{InboundAnnotation: "8443->8080 allow ns/a/sa/b,spiffe://cluster.local/ns/a/sa/b"}, want: []string{"spiffe://cluster.local/ns/a/sa/b is listed twice"}},
		{name: "bad SPIFFE ID: upper case trust domain", ann: map[string]string{InboundAnnotation: "8443->8080 allow spiffe://Cluster.local/ns/a/sa/b"}, want: []string{"is not a SPIFFE ID"}},
		{name: "bad SPIFFE ID: trailing slash", ann: map[string]string{InboundAnnotation: "8443->8080 allow spiffe://cluster.local/ns/a/sa/b/"}, want: []string{"is not a SPIFFE ID"}},
		{name: "bad SPIFFE ID: query", ann: map[string]string{InboundAnnotation: "8443->8080 allow spiffe://cluster.local/ns/a?x=1"}, want: []string{"is not a SPIFFE ID"}},
		{name: "trust domain alone", ann: map[string]string{InboundAnnotation: "8443->8080 allow spiffe://cluster.local"}, want: []string{"names a trust domain, not a workload"}},
		{name: "trust domain mismatch", ann: map[string]string{InboundAnnotation: "8443->8080 allow spiffe://other.org/ns/a/sa/b"},
			want: []string{`is in trust domain "other.org", the mesh's is "cluster.local"`, "spiffe://cluster.local/ns/a/sa/b"}},
		{name: "trust domain mismatch in expect", ann: map[string]string{OutboundAnnotation: "15001->a:1 expect spiffe://other.org/ns/a/sa/b"}, want: []string{`trust domain "other.org"`}},
		{name: "http scheme", ann: map[string]string{InboundAnnotation: "8443->8080 allow https://cluster.local/ns/a/sa/b"}, want: []string{"neither a SPIFFE ID nor ns/<namespace>/sa/<serviceaccount>"}},
		{name: "short form missing sa", ann: map[string]string{InboundAnnotation: "8443->8080 allow ns/a"}, want: []string{"neither a SPIFFE ID"}},
		{name: "short form bad namespace", ann: map[string]string{InboundAnnotation: "8443->8080 allow ns/Shop/sa/b"}, want: []string{`namespace "Shop"`}},
		{name: "short form bad service account", ann: map[string]string{InboundAnnotation: "8443->8080 allow ns/a/sa/b_c"}, want: []string{`service account "b_c"`}},
		{name: "upstream without port", ann: map[string]string{OutboundAnnotation: "15001->backend expect ns/a/sa/b"}, want: []string{`upstream "backend" is not <host>:<port>`}},
		{name: "upstream port out of range", ann: map[string]string{OutboundAnnotation: "15001->backend:0 expect ns/a/sa/b"}, want: []string{"upstream port 0 is out of range"}},
		{name: "upstream host upper case", ann: map[string]string{OutboundAnnotation: "15001->Backend.svc:1 expect ns/a/sa/b"}, want: []string{"neither an IP address nor a DNS name"}},
		{name: "upstream bare IPv6", ann: map[string]string{OutboundAnnotation: "15001->fd00::1:1 expect ns/a/sa/b"}, want: []string{"is not <host>:<port>"}},
		{name: "unknown key with suggestion", ann: map[string]string{AnnotationPrefix + "inbond": "8443->8080 allow *"}, want: []string{"unknown annotation", "did you mean config.nsm.nginx.com/inbound?"}, src: AnnotationPrefix + "inbond"},
		{name: "unknown key beside a valid one", ann: map[string]string{InboundAnnotation: "8443->8080 allow *", AnnotationPrefix + "outbound-ports": "1"}, want: []string{"did you mean config.nsm.nginx.com/outbound?"}, src: AnnotationPrefix + "outbound-ports"},
		{name: "every bad entry reported", ann: map[string]string{InboundAnnotation: "0->1 allow *; 2->2 allow *; 3->4 allow", OutboundAnnotation: "5->h:6 expect *"},
			want: []string{"mesh port 0", "both 2", "empty allow list", `"*" cannot be`}, n: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.ann, td)
			if err == nil {
				t.Fatalf("Parse = %+v, want an error", got)
			}
			if got != nil {
				t.Errorf("Parse returned a config with the error: %+v", got)
			}
			errs := Errors(err)
			n := max(tt.n, 1)
			if len(errs) != n {
				t.Fatalf("got %d errors, want %d:\n%v", len(errs), n, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
			for _, e := range errs {
				if e.Source == "" || e.Reason == "" || e.Fix == "" {
					t.Errorf("error lacks source, reason or fix: %#v", e)
				}
			}
			src := tt.src
			if src == "" {
				src = InboundAnnotation
				if _, ok := tt.ann[InboundAnnotation]; !ok {
					src = OutboundAnnotation
				}
			}
			if errs[0].Source != src {
				t.Errorf("first error's source = %q, want %q", errs[0].Source, src)
			}
		})
	}
}

func TestParseBadTrustDomain(t *testing.T) {
	for _, bad := range []string{"", "spiffe://cluster.local", "Cluster.Local", "a b"} {
		if _, err := Parse(map[string]string{InboundAnnotation: "8443->8080 allow *"}, bad); err == nil || !strings.Contains(err.Error(), "spire.trustDomain") {
			t.Errorf("trust domain %q: err = %v, want one pointing at spire.trustDomain", bad, err)
		}
	}
}

// The webhook renders with Env, the proxy parses with FromValues: the two must agree on every
// form, including short IDs, "*", IPv6 and several entries.
func TestEnvRoundTrip(t *testing.T) {
	ann := map[string]string{
		InboundAnnotation:  "8443 -> 8080 allow ns/shop/sa/frontend,spiffe://cluster.local/x/y\n9443->9090 allow *",
		OutboundAnnotation: "15001->backend.shop.svc:8443 expect ns/shop/sa/backend; 15002->[fd00::1]:443 expect ns/a/sa/b,ns/a/sa/c",
	}
	c, err := Parse(ann, td)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, e := range c.Env() {
		env[e.Name] = e.Value
	}
	wantEnv := map[string]string{
		EnvTrustDomain: "cluster.local",
		EnvInbound:     "8443->8080 allow spiffe://cluster.local/ns/shop/sa/frontend,spiffe://cluster.local/x/y; 9443->9090 allow *",
		EnvOutbound:    "15001->backend.shop.svc:8443 expect spiffe://cluster.local/ns/shop/sa/backend; 15002->[fd00::1]:443 expect spiffe://cluster.local/ns/a/sa/b,spiffe://cluster.local/ns/a/sa/c",
	}
	if !reflect.DeepEqual(env, wantEnv) {
		t.Fatalf("Env =\n%v\nwant\n%v", env, wantEnv)
	}
	back, err := FromValues(env[EnvTrustDomain], env[EnvInbound], env[EnvOutbound])
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, c) {
		t.Fatalf("FromValues(Env()) =\n%+v\nwant\n%+v", back, c)
	}
	if got := c.MeshPorts(); !reflect.DeepEqual(got, []uint16{8443, 9443}) {
		t.Errorf("MeshPorts = %v", got)
	}
	// Only what is declared is rendered.
	onlyOut, err := Parse(map[string]string{OutboundAnnotation: "15001->a:1 expect ns/a/sa/b"}, td)
	if err != nil {
		t.Fatal(err)
	}
	if e := onlyOut.Env(); len(e) != 2 || e[1].Name != EnvOutbound {
		t.Errorf("Env of an outbound-only pod = %v", e)
	}
}

func TestFromValuesErrors(t *testing.T) {
	tests := []struct{ tdom, in, out, want string }{
		{"cluster.local", "", "", "neither is set"},
		{"", "8443->8080 allow *", "", "--trust-domain"},
		{"cluster.local", "8443->8080 allow spiffe://other.org/a", "", `--inbound: "8443->8080 allow spiffe://other.org/a": spiffe://other.org/a is in trust domain "other.org"`},
		{"cluster.local", "", "1->a:1 expect *", "--outbound:"},
	}
	for _, tt := range tests {
		if _, err := FromValues(tt.tdom, tt.in, tt.out); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("FromValues(%q, %q, %q) = %v, want an error containing %q", tt.tdom, tt.in, tt.out, err, tt.want)
		}
	}
}

func TestErrorText(t *testing.T) {
	_, err := Parse(map[string]string{InboundAnnotation: "8443->70000 allow *"}, td)
	want := `config.nsm.nginx.com/inbound: "8443->70000 allow *": app port 70000 is out of range; fix: use a port between 1 and 65535`
	if err == nil || err.Error() != want {
		t.Fatalf("error =\n%v\nwant\n%s", err, want)
	}
}

// FuzzParse: Parse never panics, and whatever it accepts survives Env -> FromValues unchanged.
func FuzzParse(f *testing.F) {
	f.Add("8443->8080 allow ns/a/sa/b; 9443->9090 allow *", "15001->b.svc:8443 expect ns/a/sa/b")
	f.Add("1->2 allow spiffe://cluster.local/x", "3->[::1]:4 expect spiffe://cluster.local/y,ns/a/sa/b")
	f.Fuzz(func(t *testing.T, in, out string) {
		c, err := Parse(map[string]string{InboundAnnotation: in, OutboundAnnotation: out}, td)
		if err != nil {
			return
		}
		env := map[string]string{}
		for _, e := range c.Env() {
			env[e.Name] = e.Value
		}
		back, err := FromValues(env[EnvTrustDomain], env[EnvInbound], env[EnvOutbound])
		if err != nil {
			t.Fatalf("FromValues(Env()) of an accepted config: %v\nin=%q out=%q env=%v", err, in, out, env)
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", c, back)
		}
	})
}
