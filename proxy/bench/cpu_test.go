package bench

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cpuTime is the CPU time used so far by the processes pids and their descendants, every thread
// included, from /proc/<pid>/task/<tid>/schedstat (nanoseconds on CPU). CPU per request is far
// less sensitive than latency to the other processes sharing the machine.
func cpuTime(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range withDescendants(pids) {
		tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/schedstat")
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			if f := strings.Fields(string(b)); len(f) > 0 {
				ns, _ := strconv.ParseInt(f[0], 10, 64)
				total += time.Duration(ns)
			}
		}
	}
	return total
}

// ctxSwitches is the number of context switches (voluntary and not) of pids and descendants.
func ctxSwitches(pids []int) int64 {
	var total int64
	for _, pid := range withDescendants(pids) {
		tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/status")
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					total += n
				} else if v, ok := strings.CutPrefix(line, "nonvoluntary_ctxt_switches:"); ok {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					total += n
				}
			}
		}
	}
	return total
}

func withDescendants(pids []int) []int {
	var out []int
	for len(pids) > 0 {
		pid := pids[0]
		pids = pids[1:]
		out = append(out, pid)
		kids, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
		for _, k := range kids {
			b, _ := os.ReadFile(k)
			for _, f := range strings.Fields(string(b)) {
				if n, err := strconv.Atoi(f); err == nil {
					pids = append(pids, n)
				}
			}
		}
	}
	return out
}
