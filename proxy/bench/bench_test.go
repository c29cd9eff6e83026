// Package bench measures nginx-mesh-proxy against NGINX, the proxy NGINX Service Mesh used, in
// the same run on the same machine: two mTLS stream proxies in a row (client side, server side)
// with the same certificates, one worker each. Run it with `make bench-proxy`; it skips when NGINX
// and its stream module are not installed. The goals are ratios: requests/s and bulk throughput
// at least 0.8x NGINX's, added p99 latency at most 1.25x NGINX's.
package bench

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// settings, each overridable from the environment (BENCH_ROUNDS, ...).
type settings struct {
	rounds    int
	duration  time.Duration // per request/response and handshake measurement
	conns     int           // persistent connections of the request/response load
	pings     int           // round trips per target of the latency measurement (one connection each)
	bulkBytes int64
	hsWorkers int
	only      map[string]bool // BENCH_ONLY=rps,latency,bulk,handshakes: measure only these (tuning runs)
	// kex is the key exchange both implementations use (BENCH_KEX): "x25519" (the default:
	// what NGINX with Debian 12's OpenSSL 3.0 offers) or "x25519mlkem768" (Go's default; NGINX
	// needs OpenSSL 3.5 for it).
	kex string
	// workers is NGINX's worker_processes and the proxy's GOMAXPROCS (BENCH_WORKERS): "1", or
	// "auto": NGINX one worker per core, the proxy the GOMAXPROCS Go picks (the cores, or the
	// CPU limit), as it runs in a pod without a CPU limit.
	workers string
}

func (s settings) runs(what string) bool { return len(s.only) == 0 || s.only[what] }

func load() settings {
	s := settings{rounds: 3, duration: 3 * time.Second, conns: 16, pings: 20000, bulkBytes: 512 << 20, hsWorkers: 8, kex: "x25519", workers: "1"}
	if v := strings.ToLower(os.Getenv("BENCH_KEX")); v != "" {
		s.kex = v
	}
	if v := os.Getenv("BENCH_WORKERS"); v != "" {
		s.workers = v
	}
	atoi := func(env string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(env)); err == nil && v > 0 {
			return v
		}
		return def
	}
	s.rounds = atoi("BENCH_ROUNDS", s.rounds)
	s.conns = atoi("BENCH_CONNS", s.conns)
	s.pings = atoi("BENCH_PINGS", s.pings)
	s.hsWorkers = atoi("BENCH_HANDSHAKE_WORKERS", s.hsWorkers)
	s.bulkBytes = int64(atoi("BENCH_BULK_MB", int(s.bulkBytes>>20))) << 20
	if d, err := time.ParseDuration(os.Getenv("BENCH_DURATION")); err == nil && d > 0 {
		s.duration = d
	}
	if v := os.Getenv("BENCH_ONLY"); v != "" {
		s.only = map[string]bool{}
		for _, w := range strings.Split(v, ",") {
			s.only[strings.TrimSpace(w)] = true
		}
	}
	return s
}

// sample is one round's numbers for one target (direct, NGINX or the proxy).
type sample struct {
	rps                  float64
	loadP99              time.Duration
	p50, p99             time.Duration
	bulkMBps             float64
	handshakesPerSec     float64
	directP50, directP99 time.Duration // the direct connection's, measured in turns with p50/p99
	// batchP99 is the median over the 500-round-trip batches of each batch's p99: a burst of
	// other work on the machine spoils a few batches, not the statistic.
	batchP99, directBatchP99 time.Duration
	// CPU time of the pair's processes (both sides, every thread) per unit of work, and context
	// switches per request: robust where latency is at the mercy of the shared machine.
	cpuPerReq, cpuPerPing, cpuPerMB, cpuPerConn time.Duration
	switchesPerReq, switchesPerPing             float64
}

func BenchmarkProxyVsNGINX(b *testing.B) {
	if err := nginxAvailable(); err != nil {
		b.Skipf("skipping the NGINX comparison: %v. Install NGINX and its stream module (apt-get install nginx libnginx-mod-stream; ci/packages.sh does) and rerun make bench-proxy", err)
	}
	s := load()
	if s.kex != "x25519" && s.kex != "x25519mlkem768" {
		b.Fatalf("BENCH_KEX=%s: use x25519 or x25519mlkem768", s.kex)
	}
	if n, err := strconv.Atoi(s.workers); s.workers != "auto" && (err != nil || n < 1) {
		b.Fatalf("BENCH_WORKERS=%s: use auto or a number of workers", s.workers)
	}
	dir, err := os.MkdirTemp("", "nmpbench")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	be := startBackends(b)
	ids := startIdentities(b, dir)
	ng := startNGINXPair(b, s, ids, be)
	defer ng.stop()
	px := startProxyPair(b, s, ids, be, dir, buildProxy(b, dir))
	defer px.stop()
	kex := map[string]string{}
	for _, p := range []*pair{ng, px} {
		if kex[p.name], err = negotiatedGroup(ids, p.meshEcho); err != nil {
			b.Fatalf("%s key exchange: %v", p.name, err)
		}
	}
	kexNote := kex[px.name] + " on both (negotiated, checked)"
	if kex[ng.name] != kex[px.name] {
		if s.kex == "x25519" {
			b.Fatalf("key exchange differs: NGINX %s, nginx-mesh-proxy %s (BENCH_KEX=%s)", kex[ng.name], kex[px.name], s.kex)
		}
		kexNote = fmt.Sprintf("nginx-mesh-proxy %s, NGINX %s (%s; ML-KEM needs OpenSSL 3.5)", kex[px.name], kex[ng.name], nginxOpenSSL())
	}
	direct := &pair{name: "direct", echo: be.echo, sink: be.sink}

	// Warm both pairs (JIT-free, but caches, session tickets, TCP buffers).
	for _, p := range []*pair{ng, px} {
		if _, _, _, err := reqResp(p.echo, s.conns, time.Second); err != nil {
			b.Fatalf("%s warm-up: %v", p.name, err)
		}
	}
	b.ResetTimer()
	results := map[string][]sample{}
	for r := range s.rounds {
		// Alternate who goes first so drift on the shared machine hits both alike.
		order := []*pair{direct, ng, px}
		if r%2 == 1 {
			order = []*pair{direct, px, ng}
		}
		round := map[string]*sample{}
		for _, p := range order {
			round[p.name] = &sample{}
		}
		for _, p := range order {
			if !s.runs("rps") {
				break
			}
			c0, x0 := cpuTime(p.pids), ctxSwitches(p.pids)
			var n int64
			if round[p.name].rps, round[p.name].loadP99, n, err = reqResp(p.echo, s.conns, s.duration); err != nil {
				b.Fatalf("%s requests: %v", p.name, err)
			}
			round[p.name].cpuPerReq = (cpuTime(p.pids) - c0) / time.Duration(n)
			round[p.name].switchesPerReq = float64(ctxSwitches(p.pids)-x0) / float64(n)
		}
		if s.runs("latency") {
			// Short batches, taking turns, pooled per target: drift on the shared machine (other
			// processes' bursts) lands on all three alike instead of on whoever ran at the time.
			lat := map[string][]time.Duration{}
			pingers := map[string]*pinger{}
			for _, p := range order {
				if pingers[p.name], err = newPinger(p.echo); err != nil {
					b.Fatalf("%s latency: %v", p.name, err)
				}
			}
			const batch = 500
			cpu := map[string]time.Duration{}
			switches := map[string]int64{}
			batchP99 := map[string][]time.Duration{}
			for i := range max(s.pings/batch, 1) {
				for j := range order {
					p := order[(i+j)%len(order)]
					c0, x0 := cpuTime(p.pids), ctxSwitches(p.pids)
					if lat[p.name], err = pingers[p.name].ping(batch, lat[p.name]); err != nil {
						b.Fatalf("%s latency: %v", p.name, err)
					}
					cpu[p.name] += cpuTime(p.pids) - c0
					switches[p.name] += ctxSwitches(p.pids) - x0
					_, bp99 := percentiles(lat[p.name][len(lat[p.name])-batch:])
					batchP99[p.name] = append(batchP99[p.name], bp99)
				}
			}
			d50, d99 := percentiles(lat["direct"])
			for _, p := range order {
				pingers[p.name].c.Close()
				smp := round[p.name]
				smp.p50, smp.p99 = percentiles(lat[p.name])
				smp.directP50, smp.directP99 = d50, d99
				smp.batchP99, _ = percentiles(batchP99[p.name]) // the median batch's p99
				smp.directBatchP99, _ = percentiles(batchP99["direct"])
				smp.cpuPerPing = cpu[p.name] / time.Duration(len(lat[p.name]))
				smp.switchesPerPing = float64(switches[p.name]) / float64(len(lat[p.name]))
			}
		}
		for _, p := range order {
			if !s.runs("bulk") {
				break
			}
			c0 := cpuTime(p.pids)
			if round[p.name].bulkMBps, err = bulk(p.sink, s.bulkBytes); err != nil {
				b.Fatalf("%s bulk: %v", p.name, err)
			}
			round[p.name].cpuPerMB = (cpuTime(p.pids) - c0) * 1e6 / time.Duration(s.bulkBytes)
		}
		for _, p := range order {
			if !s.runs("handshakes") {
				break
			}
			c0 := cpuTime(p.pids)
			var n int64
			if round[p.name].handshakesPerSec, n, err = handshakes(p.echo, s.hsWorkers, s.duration); err != nil {
				b.Fatalf("%s handshakes: %v", p.name, err)
			}
			round[p.name].cpuPerConn = (cpuTime(p.pids) - c0) / time.Duration(n)
		}
		for name, smp := range round {
			results[name] = append(results[name], *smp)
		}
		fmt.Fprintf(os.Stderr, "round %d/%d: proxy/NGINX rps %.2f, bulk %.2f, added p99 %.2f\n", r+1, s.rounds,
			round[px.name].rps/round[ng.name].rps, round[px.name].bulkMBps/round[ng.name].bulkMBps,
			ratioDur(round[px.name].p99-round[px.name].directP99, round[ng.name].p99-round[ng.name].directP99))
	}
	b.StopTimer()

	// Session resumption really happens on both sides: the share of resumed handshakes over 50
	// new connections, read from NGINX's $ssl_session_reused and our handshakes_total.
	resumed := map[string]float64{}
	for _, p := range []*pair{ng, px} {
		if _, err := p.resumed(); err != nil && p == px { // reset the counter window
			b.Fatal(err)
		}
		for range 50 {
			if err := connectOnce(p.logged); err != nil {
				b.Fatal(err)
			}
		}
		if resumed[p.name], err = p.resumed(); err != nil {
			b.Fatalf("%s resumption: %v", p.name, err)
		}
	}

	t := summarize(s, results, ng.name, px.name, resumed)
	t.kex = kexNote
	fmt.Println(t.markdown())
	if path := os.Getenv("BENCH_TABLE"); path != "" {
		if err := os.WriteFile(path, []byte(t.markdown()), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(t.rpsRatio, "rps-ratio")
	b.ReportMetric(t.bulkRatio, "bulk-ratio")
	b.ReportMetric(t.p99Ratio, "added-p99-ratio")
	b.ReportMetric(t.hsRatio, "handshake-ratio")
}

type table struct {
	s                                      settings
	kex                                    string
	rows                                   [][]string
	rpsRatio, bulkRatio, p99Ratio, hsRatio float64
	perRound                               string
}

func summarize(s settings, res map[string][]sample, ng, px string, resumed map[string]float64) table {
	med := func(name string, f func(sample) float64) float64 {
		var v []float64
		for _, x := range res[name] {
			v = append(v, f(x))
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	rps := func(x sample) float64 { return x.rps }
	loadP99 := func(x sample) float64 { return float64(x.loadP99) }
	p50 := func(x sample) float64 { return float64(x.p50) }
	p99 := func(x sample) float64 { return float64(x.p99) }
	added50 := func(x sample) float64 { return float64(x.p50 - x.directP50) }
	added99 := func(x sample) float64 { return float64(x.p99 - x.directP99) }
	batch99 := func(x sample) float64 { return float64(x.batchP99 - x.directBatchP99) }
	bulkF := func(x sample) float64 { return x.bulkMBps }
	hs := func(x sample) float64 { return x.handshakesPerSec }
	us := func(ns float64) string {
		if ns < 10e3 {
			return fmt.Sprintf("%.1f µs", ns/1e3)
		}
		return fmt.Sprintf("%.0f µs", ns/1e3)
	}
	cpuReq := func(x sample) float64 { return float64(x.cpuPerReq) }
	cpuPing := func(x sample) float64 { return float64(x.cpuPerPing) }
	cpuMB := func(x sample) float64 { return float64(x.cpuPerMB) }
	cpuConn := func(x sample) float64 { return float64(x.cpuPerConn) }
	switches := func(x sample) float64 { return x.switchesPerReq }
	switchesPing := func(x sample) float64 { return x.switchesPerPing }
	// The ratio column is the median over rounds of each round's proxy/NGINX ratio: the two were
	// measured in the same minutes of the same run, so the pair shares whatever else the machine
	// was doing then. (A ratio of the two columns' medians could divide numbers from different
	// rounds.)
	pr := func(f func(sample) float64) float64 {
		var v []float64
		for i := range res[px] {
			v = append(v, f(res[px][i])/f(res[ng][i]))
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	// The ratio of the columns' medians, reported beside it: where the two differ, the rounds'
	// ratios were spread (other work on the machine hit the two implementations unevenly).
	rom := func(f func(sample) float64) float64 { return med(px, f) / med(ng, f) }
	ratio := func(f func(sample) float64) string { return fmt.Sprintf("%.2f | %.2f", pr(f), rom(f)) }
	cpuRow := func(what string, f func(sample) float64) []string {
		return []string{what, "", us(med(ng, f)), us(med(px, f)), ratio(f), ""}
	}
	plus := func(ns float64) string { return fmt.Sprintf("+%.0f µs", ns/1e3) }
	num := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	t := table{s: s}
	t.rpsRatio, t.bulkRatio, t.p99Ratio, t.hsRatio = pr(rps), pr(bulkF), pr(added99), pr(hs)
	goal := func(f func(sample) float64, bound float64, atLeast bool) string {
		sym := "≥"
		if !atLeast {
			sym = "≤"
		}
		mark := func(r float64) string {
			if (atLeast && r >= bound) || (!atLeast && r <= bound) {
				return "met"
			}
			return "MISSED"
		}
		return fmt.Sprintf("%s %.2f: %s by the median of ratios, %s by the ratio of medians", sym, bound, mark(pr(f)), mark(rom(f)))
	}
	t.rows = [][]string{
		{fmt.Sprintf("requests/s, 1 KiB request + 1 KiB response, %d persistent connections", s.conns), num(med("direct", rps)), num(med(ng, rps)), num(med(px, rps)), ratio(rps), goal(rps, 0.8, true)},
		{fmt.Sprintf("p99 latency under that load (%d connections)", s.conns), us(med("direct", loadP99)), us(med(ng, loadP99)), us(med(px, loadP99)), ratio(loadP99), ""},
		{"latency p50, one connection, 1 KiB round trip", us(med("direct", p50)), us(med(ng, p50)), us(med(px, p50)), ratio(p50), ""},
		{"added latency p50 (over direct)", "", plus(med(ng, added50)), plus(med(px, added50)), ratio(added50), ""},
		{"latency p99, one connection", us(med("direct", p99)), us(med(ng, p99)), us(med(px, p99)), ratio(p99), ""},
		{"added latency p99 (over direct)", "", plus(med(ng, added99)), plus(med(px, added99)), ratio(added99), goal(added99, 1.25, false)},
		{"added latency p99, median of per-batch p99s (bursts of other work excluded)", "", plus(med(ng, batch99)), plus(med(px, batch99)), ratio(batch99), ""},
		{fmt.Sprintf("bulk throughput, one connection, %d MiB, MB/s", s.bulkBytes>>20), num(med("direct", bulkF)), num(med(ng, bulkF)), num(med(px, bulkF)), ratio(bulkF), goal(bulkF, 0.8, true)},
		{fmt.Sprintf("new connections/s (one mTLS handshake each), %d workers", s.hsWorkers), num(med("direct", hs)), num(med(ng, hs)), num(med(px, hs)), ratio(hs), ""},
		{"share of those handshakes resumed (TLS session tickets)", "", fmt.Sprintf("%.0f%%", 100*resumed[ng]), fmt.Sprintf("%.0f%%", 100*resumed[px]), " | ", ""},
		cpuRow("CPU per request under load (both proxies)", cpuReq),
		{"context switches per request under load (both proxies)", "", fmt.Sprintf("%.1f", med(ng, switches)), fmt.Sprintf("%.1f", med(px, switches)), ratio(switches), ""},
		cpuRow("CPU per round trip, one connection", cpuPing),
		{"context switches per round trip, one connection", "", fmt.Sprintf("%.1f", med(ng, switchesPing)), fmt.Sprintf("%.1f", med(px, switchesPing)), ratio(switchesPing), ""},
		cpuRow("CPU per MB of bulk", cpuMB),
		cpuRow("CPU per new connection", cpuConn),
	}
	var per []string
	for i := range res[px] {
		a, n := res[px][i], res[ng][i]
		per = append(per, fmt.Sprintf("rps %.2f, added p99 %.2f (batch median %.2f), bulk %.2f, handshakes %.2f", a.rps/n.rps,
			ratioDur(a.p99-a.directP99, n.p99-n.directP99), ratioDur(a.batchP99-a.directBatchP99, n.batchP99-n.directBatchP99),
			a.bulkMBps/n.bulkMBps, a.handshakesPerSec/n.handshakesPerSec))
	}
	t.perRound = strings.Join(per, "; ")
	return t
}

func ratioDur(a, b time.Duration) float64 { return float64(a) / float64(b) }

func (t table) markdown() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "Key exchange: %s; workers %s (NGINX worker_processes, the proxy's GOMAXPROCS: %s), relay buffer %d bytes on both, the shipped proxy binary.\n\n",
		t.kex, t.s.workers, procsNote(t.s.workers), bufferSize())
	fmt.Fprintf(&sb, "| measure (medians of %d rounds) | direct | NGINX | nginx-mesh-proxy | proxy / NGINX: median of the rounds' ratios | ratio of the medians | goal |\n", t.s.rounds)
	sb.WriteString("|---|---:|---:|---:|---:|---:|---|\n")
	for _, r := range t.rows {
		sb.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	fmt.Fprintf(&sb, "\nproxy / NGINX per round: %s\n", t.perRound)
	return sb.String()
}
