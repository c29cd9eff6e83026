package register

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// spireServerBinary is a SPIRE server to benchmark against: NGINX_MESH_BENCH_SPIRE_SERVER, or
// the one ci/cluster.sh builds into its cache (NMCL_CACHE, default ci/.cache).
func spireServerBinary() string {
	if p := os.Getenv("NGINX_MESH_BENCH_SPIRE_SERVER"); p != "" {
		return p
	}
	cache := os.Getenv("NMCL_CACHE")
	if cache == "" {
		cache = filepath.Join("..", "..", "ci", ".cache")
	}
	return filepath.Join(cache, "bin", "spire-server")
}

// startSPIRE runs a real SPIRE server (SQLite datastore in a temp dir, in-memory keys) and
// returns an entry client on its admin socket.
func startSPIRE(b *testing.B) entryv1.EntryClient {
	b.Helper()
	bin := spireServerBinary()
	if _, err := os.Stat(bin); err != nil {
		b.Skipf("no SPIRE server binary at %s (set NGINX_MESH_BENCH_SPIRE_SERVER, or build it with ci/cluster.sh)", bin)
	}
	dir := b.TempDir()
	sock := filepath.Join(dir, "api.sock")
	conf := fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "0"
  socket_path = %q
  trust_domain = "cluster.local"
  data_dir = %q
  log_level = "ERROR"
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
}
`, sock, dir, filepath.Join(dir, "datastore.sqlite3"))
	if err := os.WriteFile(filepath.Join(dir, "server.conf"), []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "-config", filepath.Join(dir, "server.conf"))
	logf, _ := os.Create(filepath.Join(dir, "server.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	client := entryv1.NewEntryClient(conn)
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := client.CountEntries(context.Background(), &entryv1.CountEntriesRequest{})
		if err == nil {
			return client
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			b.Fatalf("SPIRE server not serving: %v\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkInitialSync10000RealSPIRE is BenchmarkInitialSync10000 against a real SPIRE server
// v1.13.3 (SQLite): the controller starting with 10,000 injected pods and no entries, in Batch
// calls of 500 and, in the same run, one call per entry. Skips without a spire-server binary.
func BenchmarkInitialSync10000RealSPIRE(b *testing.B) {
	const n = 10000
	for _, bc := range syncCases {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				client := startSPIRE(b)
				m := measureSync(b, client, n, bc.batch)
				cnt, err := client.CountEntries(context.Background(), &entryv1.CountEntriesRequest{})
				if err != nil || cnt.Count != n {
					b.Fatalf("%v entries (%v), want %d", cnt, err, n)
				}
				b.ReportMetric(m.took.Seconds(), "s-to-ready")
				b.ReportMetric(m.controllerMiB(), "controller-heap-MiB")
				b.StartTimer()
			}
		})
	}
}
