package check

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nginx-mesh/nginx-mesh/hooks/helmtest"
)

// Agent is one attested SPIRE agent, as the server knows it.
type Agent struct {
	ID        string
	Node      string // from its k8s_psat selector agent_node_name
	ExpiresAt time.Time
	Banned    bool
}

// Entry is one registration entry.
type Entry struct {
	ID, SPIFFEID string
	CreatedAt    time.Time // SPIRE records seconds
}

// Spire reads the SPIRE server.
type Spire interface {
	Agents(ctx context.Context) ([]Agent, error)
	// Entries lists every entry by ID.
	Entries(ctx context.Context) (map[string]Entry, error)
	// Entry reads one entry; nil when there is none.
	Entry(ctx context.Context, id string) (*Entry, error)
}

// ServerCLI is Spire through the spire-server CLI on the server's admin socket, run in the
// server's container with helmtest.Exec (pods/exec), as the chart's helm test registers.
type ServerCLI struct {
	Exec           helmtest.Exec
	Binary, Socket string
}

func (s ServerCLI) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := append([]string{s.Binary, args[0], args[1], "-socketPath", s.Socket, "-output", "json"}, args[2:]...)
	stdout, stderr, err := s.Exec(ctx, cmd)
	if out := strings.TrimSpace(stderr + " " + stdout); err != nil && out != "" {
		return nil, fmt.Errorf("spire-server %s %s: %w: %s", args[0], args[1], err, out)
	} else if err != nil {
		return nil, fmt.Errorf("spire-server %s %s: %w", args[0], args[1], err)
	}
	return []byte(stdout), nil
}

// int64s reads protojson's int64, which is a JSON string ("1733..."), or a number.
type int64s int64

func (i *int64s) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	*i = int64s(v)
	return err
}

type spiffeID struct {
	TrustDomain string `json:"trust_domain"`
	Path        string `json:"path"`
}

func (id spiffeID) String() string { return "spiffe://" + id.TrustDomain + id.Path }

// ParseAgents reads `spire-server agent list -output json`.
func ParseAgents(b []byte) ([]Agent, error) {
	var out struct {
		Agents []struct {
			ID        spiffeID `json:"id"`
			ExpiresAt int64s   `json:"x509svid_expires_at"`
			Banned    bool     `json:"banned"`
			Selectors []struct {
				Type, Value string
			} `json:"selectors"`
		} `json:"agents"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("spire-server agent list: unexpected output %.200q: %w", b, err)
	}
	var agents []Agent
	for _, a := range out.Agents {
		ag := Agent{ID: a.ID.String(), ExpiresAt: time.Unix(int64(a.ExpiresAt), 0), Banned: a.Banned}
		for _, s := range a.Selectors {
			if n, found := strings.CutPrefix(s.Value, "agent_node_name:"); found && s.Type == "k8s_psat" {
				ag.Node = n
			}
		}
		agents = append(agents, ag)
	}
	return agents, nil
}

// ParseEntries reads `spire-server entry show -output json`.
func ParseEntries(b []byte) ([]Entry, error) {
	var out struct {
		Entries []struct {
			ID        string   `json:"id"`
			SPIFFEID  spiffeID `json:"spiffe_id"`
			CreatedAt int64s   `json:"created_at"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("spire-server entry show: unexpected output %.200q: %w", b, err)
	}
	var entries []Entry
	for _, en := range out.Entries {
		entries = append(entries, Entry{ID: en.ID, SPIFFEID: en.SPIFFEID.String(), CreatedAt: time.Unix(int64(en.CreatedAt), 0)})
	}
	return entries, nil
}

func (s ServerCLI) Agents(ctx context.Context) ([]Agent, error) {
	b, err := s.run(ctx, "agent", "list")
	if err != nil {
		return nil, err
	}
	return ParseAgents(b)
}

func (s ServerCLI) Entries(ctx context.Context) (map[string]Entry, error) {
	b, err := s.run(ctx, "entry", "show")
	if err != nil {
		return nil, err
	}
	list, err := ParseEntries(b)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Entry, len(list))
	for _, en := range list {
		out[en.ID] = en
	}
	return out, nil
}

func (s ServerCLI) Entry(ctx context.Context, id string) (*Entry, error) {
	b, err := s.run(ctx, "entry", "show", "-entryID", id)
	if err != nil {
		if strings.Contains(err.Error(), "NotFound") || strings.Contains(err.Error(), "not found") {
			return nil, nil
		}
		return nil, err
	}
	list, err := ParseEntries(b)
	if err != nil || len(list) == 0 {
		return nil, err
	}
	return &list[0], nil
}
