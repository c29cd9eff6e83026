// Package fakespire is the SPIRE server's entry API for tests: a real gRPC server on a unix
// socket (as the admin socket is) over an in-memory store. It behaves as SPIRE v1.13 does where
// the controller depends on it: caller-chosen entry IDs, ALREADY_EXISTS for a similar entry
// (same parent, SPIFFE ID and selectors), NOT_FOUND per missing ID, paged listing.
package fakespire

import (
	"context"
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Server is the fake entry service.
type Server struct {
	entryv1.UnimplementedEntryServer

	mu      sync.Mutex
	entries map[string]*types.Entry
	byKey   map[string]string // similar-entry key -> ID
	next    int

	// Calls counts RPCs by method name ("BatchCreateEntry", ...).
	calls sync.Map
	// Fail makes the next Fail RPCs of any method return UNAVAILABLE.
	Fail atomic.Int32
	// OnCreate, when set, is called for every entry created (for latency measurements).
	OnCreate func(*types.Entry)
}

// Start serves a new fake on a unix socket under t.TempDir() and returns it with a client.
func Start(t testing.TB) (*Server, entryv1.EntryClient) {
	t.Helper()
	s := &Server{entries: map[string]*types.Entry{}, byKey: map[string]string{}}
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	entryv1.RegisterEntryServer(g, s)
	go func() { _ = g.Serve(l) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return s, entryv1.NewEntryClient(conn)
}

func (s *Server) count(method string) error {
	v, _ := s.calls.LoadOrStore(method, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
	if s.Fail.Load() > 0 && s.Fail.Add(-1) >= 0 {
		return status.Error(codes.Unavailable, "fake: unavailable")
	}
	return nil
}

// Calls returns how many RPCs of method were served.
func (s *Server) Calls(method string) int64 {
	if v, ok := s.calls.Load(method); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// Put stores entries as they are (entries someone else created).
func (s *Server) Put(es ...*types.Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range es {
		s.entries[e.Id] = proto.Clone(e).(*types.Entry)
		s.byKey[key(e)] = e.Id
	}
}

// Entries returns a copy of the store, by ID.
func (s *Server) Entries() map[string]*types.Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]*types.Entry, len(s.entries))
	for id, e := range s.entries {
		out[id] = proto.Clone(e).(*types.Entry)
	}
	return out
}

// Len is the number of entries stored.
func (s *Server) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

func key(e *types.Entry) string {
	sel := make([]string, 0, len(e.Selectors))
	for _, x := range e.Selectors {
		sel = append(sel, x.Type+":"+x.Value)
	}
	sort.Strings(sel)
	return e.GetParentId().String() + "|" + e.GetSpiffeId().String() + "|" + strings.Join(sel, ",")
}

func (s *Server) ListEntries(_ context.Context, req *entryv1.ListEntriesRequest) (*entryv1.ListEntriesResponse, error) {
	if err := s.count("ListEntries"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.entries))
	for id := range s.entries {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	start := 0
	if req.PageToken != "" {
		start = sort.SearchStrings(ids, req.PageToken)
	}
	size := int(req.PageSize)
	if size <= 0 || size > 10000 {
		size = 10000
	}
	resp := &entryv1.ListEntriesResponse{}
	end := min(start+size, len(ids))
	for _, id := range ids[start:end] {
		resp.Entries = append(resp.Entries, proto.Clone(s.entries[id]).(*types.Entry))
	}
	if end < len(ids) {
		resp.NextPageToken = ids[end]
	}
	return resp, nil
}

func (s *Server) BatchCreateEntry(_ context.Context, req *entryv1.BatchCreateEntryRequest) (*entryv1.BatchCreateEntryResponse, error) {
	if err := s.count("BatchCreateEntry"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &entryv1.BatchCreateEntryResponse{}
	for _, e := range req.Entries {
		res := &entryv1.BatchCreateEntryResponse_Result{Status: &types.Status{}}
		similar := s.byKey[key(e)]
		switch {
		case similar != "":
			res.Status.Code, res.Status.Message = int32(codes.AlreadyExists), "similar entry already exists"
			res.Entry = proto.Clone(s.entries[similar]).(*types.Entry)
		case e.Id != "" && s.entries[e.Id] != nil:
			res.Status.Code, res.Status.Message = int32(codes.Internal), "failed to create entry: UNIQUE constraint failed: registered_entries.entry_id"
		default:
			c := proto.Clone(e).(*types.Entry)
			if c.Id == "" {
				s.next++
				c.Id = "generated-" + strconv.Itoa(s.next)
			}
			s.entries[c.Id] = c
			s.byKey[key(c)] = c.Id
			res.Entry = proto.Clone(c).(*types.Entry)
			if s.OnCreate != nil {
				s.OnCreate(c)
			}
		}
		resp.Results = append(resp.Results, res)
	}
	return resp, nil
}

func (s *Server) BatchUpdateEntry(_ context.Context, req *entryv1.BatchUpdateEntryRequest) (*entryv1.BatchUpdateEntryResponse, error) {
	if err := s.count("BatchUpdateEntry"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &entryv1.BatchUpdateEntryResponse{}
	for _, e := range req.Entries {
		res := &entryv1.BatchUpdateEntryResponse_Result{Status: &types.Status{}}
		cur := s.entries[e.Id]
		if cur == nil {
			res.Status.Code, res.Status.Message = int32(codes.NotFound), "entry not found"
		} else {
			delete(s.byKey, key(cur))
			m := req.InputMask
			if m == nil || m.SpiffeId {
				cur.SpiffeId = e.SpiffeId
			}
			if m == nil || m.ParentId {
				cur.ParentId = e.ParentId
			}
			if m == nil || m.Selectors {
				cur.Selectors = e.Selectors
			}
			s.byKey[key(cur)] = cur.Id
			res.Entry = proto.Clone(cur).(*types.Entry)
		}
		resp.Results = append(resp.Results, res)
	}
	return resp, nil
}

func (s *Server) BatchDeleteEntry(_ context.Context, req *entryv1.BatchDeleteEntryRequest) (*entryv1.BatchDeleteEntryResponse, error) {
	if err := s.count("BatchDeleteEntry"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &entryv1.BatchDeleteEntryResponse{}
	for _, id := range req.Ids {
		res := &entryv1.BatchDeleteEntryResponse_Result{Status: &types.Status{}, Id: id}
		if s.entries[id] == nil {
			res.Status.Code, res.Status.Message = int32(codes.NotFound), "entry not found"
		} else {
			delete(s.byKey, key(s.entries[id]))
			delete(s.entries, id)
		}
		resp.Results = append(resp.Results, res)
	}
	return resp, nil
}
