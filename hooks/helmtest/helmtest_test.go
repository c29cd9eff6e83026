package helmtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus/hooks/test"
)

func opts() Options {
	return Options{
		Namespace: "mesh", ServerPod: "spire-server-0", ServerContainer: "spire-server",
		ServerBinary: "/opt/spire/bin/spire-server", AdminSocket: "/tmp/admin.sock",
		TrustDomain: "example.org", ClusterName: "c1", ServiceAccount: "nginx-mesh-test",
		PodName: "nginx-mesh-test-workload-api", Socket: "/s/agent.sock", Timeout: time.Second, Register: true,
	}
}

// fakeServer is the spire-server CLI's entry commands over an in-memory store, with the
// behaviour the test relies on: a second identical entry is refused, deleting an unknown ID fails.
type fakeServer struct {
	mu      sync.Mutex
	next    int
	entries map[string]Entry
	calls   [][]string
	failOn  string // a subcommand that fails
}

func newFakeServer() *fakeServer { return &fakeServer{entries: map[string]Entry{}} }

func (f *fakeServer) exec(_ context.Context, cmd []string) (string, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, cmd)
	if len(cmd) < 5 || cmd[0] != "/opt/spire/bin/spire-server" || cmd[1] != "entry" || cmd[3] != "-socketPath" || cmd[4] != "/tmp/admin.sock" {
		return "", "unexpected command", errors.New("exit 2")
	}
	if cmd[2] == f.failOn {
		return "", "rpc error: code = Unavailable", errors.New("exit 1")
	}
	flags := map[string][]string{}
	node := false
	for i := 5; i < len(cmd); i++ {
		if cmd[i] == "-node" {
			node = true
			continue
		}
		flags[cmd[i]] = append(flags[cmd[i]], cmd[i+1])
		i++
	}
	switch cmd[2] {
	case "show":
		type shown struct {
			ID string `json:"id"`
		}
		out := struct {
			Entries []shown `json:"entries"`
		}{}
		for id, e := range f.entries {
			if e.SPIFFEID == flags["-spiffeID"][0] {
				out.Entries = append(out.Entries, shown{id})
			}
		}
		b, _ := json.Marshal(out)
		return string(b), "", nil
	case "create":
		e := Entry{SPIFFEID: flags["-spiffeID"][0], Node: node, Selectors: flags["-selector"]}
		if p := flags["-parentID"]; len(p) == 1 {
			e.ParentID = p[0]
		}
		for _, old := range f.entries {
			if old.SPIFFEID == e.SPIFFEID && old.ParentID == e.ParentID && slices.Equal(old.Selectors, e.Selectors) {
				return "", "Failed to create the following entry (code: AlreadyExists, msg: \"similar entry already exists\")", errors.New("exit 1")
			}
		}
		f.next++
		f.entries[fmt.Sprint("id-", f.next)] = e
		return "Entry ID: id", "", nil
	case "delete":
		id := flags["-entryID"][0]
		if _, ok := f.entries[id]; !ok {
			return "", "rpc error: code = NotFound desc = entry not found", errors.New("exit 1")
		}
		delete(f.entries, id)
		return "Deleted entry with ID: " + id, "", nil
	}
	return "", "unknown subcommand", errors.New("exit 2")
}

func (f *fakeServer) list() []Entry {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Entry
	for _, e := range f.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.SPIFFEID, b.SPIFFEID) })
	return out
}

func TestEntries(t *testing.T) {
	o := opts()
	got := o.Entries()
	if len(got) != 2 || !got[0].Node || got[1].Node {
		t.Fatalf("entries %+v", got)
	}
	if got[0].Selectors[0] != "k8s_psat:cluster:c1" {
		t.Errorf("node alias selectors %v", got[0].Selectors)
	}
	if got[1].SPIFFEID != "spiffe://example.org/ns/mesh/sa/nginx-mesh-test" || got[1].ParentID != got[0].SPIFFEID {
		t.Errorf("workload entry %+v", got[1])
	}
	want := []string{"k8s:ns:mesh", "k8s:sa:nginx-mesh-test", "k8s:pod-name:nginx-mesh-test-workload-api"}
	if !slices.Equal(got[1].Selectors, want) {
		t.Errorf("workload selectors %v, want %v", got[1].Selectors, want)
	}
}

func TestRun(t *testing.T) {
	want := opts().SPIFFEID()
	cases := []struct {
		name      string
		register  bool
		leftover  bool   // an interrupted earlier run left its entries
		failOn    string // exec of this subcommand fails
		fetched   string // "" = the fetch times out
		wantErr   string
		wantCalls bool
	}{
		{name: "registers, fetches its own identity, cleans up", register: true, fetched: want, wantCalls: true},
		{name: "replaces a leftover of an earlier run", register: true, leftover: true, fetched: want, wantCalls: true},
		{name: "another identity fails", register: true, fetched: "spiffe://example.org/ns/other/sa/x", wantErr: "wrong identity", wantCalls: true},
		{name: "no SVID in time fails and cleans up", register: true, wantErr: "no X.509 SVID from the Workload API at /s/agent.sock", wantCalls: true},
		{name: "server refuses the entry", register: true, failOn: "create", fetched: want, wantErr: "spire-server entry create in pod mesh/spire-server-0", wantCalls: true},
		{name: "without registration no exec", register: false, fetched: want},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := newFakeServer()
			o := opts()
			o.Register = c.register
			if c.leftover {
				if err := Register(context.Background(), srv.exec, o); err != nil {
					t.Fatal(err)
				}
			}
			srv.failOn = c.failOn
			var fetchedEntries []Entry
			fetch := func(ctx context.Context, socket string) (string, error) {
				fetchedEntries = srv.list()
				if socket != o.Socket {
					t.Errorf("fetch on %s", socket)
				}
				if c.fetched == "" {
					<-ctx.Done()
					return "", ctx.Err()
				}
				return c.fetched, nil
			}
			log, _ := test.NewNullLogger()
			var exec Exec = srv.exec
			if !c.register {
				exec = func(context.Context, []string) (string, string, error) {
					t.Error("exec without --register")
					return "", "", nil
				}
			}
			err := Run(context.Background(), exec, fetch, o, log)
			if c.wantErr == "" && err != nil {
				t.Fatalf("Run: %v", err)
			}
			if c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("Run: %v, want an error containing %q", err, c.wantErr)
			}
			if c.register && c.failOn == "" {
				// While fetching, exactly the two entries existed; afterwards none.
				if len(fetchedEntries) != 2 {
					t.Errorf("entries while fetching: %+v", fetchedEntries)
				}
			}
			if c.failOn == "" {
				if left := srv.list(); len(left) != 0 {
					t.Errorf("entries left after the test: %+v", left)
				}
			}
			if (len(srv.calls) > 0) != c.wantCalls {
				t.Errorf("exec calls %v", srv.calls)
			}
		})
	}
}
