// Command load is the load generator of bench/compare.ts: a closed loop of gRPC Produce streams or of HTTP
// POSTs against one target for a fixed time, then one JSON line on stdout with counts, latency percentiles and
// the generator's own CPU time (so that a caller can tell when the generator, not the server, is the limit).
//
//	load grpc -target 127.0.0.1:18282 -topic T [-seconds 15] [-warmup 0] [-streams 4] [-window 1000] [-size 100] [-ca CA.pem]
//	load http -url http://127.0.0.1:18080/topics/T/messages [-seconds 15] [-warmup 0] [-connections 64]
//	          [-size 100] [-ndjson K] [-body FILE -content-type TYPE]
//
// Only what is sent after the warm-up and before its end counts; once sending stops, the replies still
// outstanding are awaited (bounded) and counted. Both modes print a per-second timeline of the measured
// window, by the second in which each reply arrived.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "grpc":
		err = runGRPC(os.Args[2:])
	case "http":
		err = runHTTP(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "load %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: load grpc|http [flags] (load grpc -h, load http -h)")
	os.Exit(2)
}

// drainTimeout bounds the wait for replies still outstanding once sending stops.
const drainTimeout = 15 * time.Second

// window is the measured part of a run: what is sent in [start, end) counts.
type window struct {
	start, end time.Time
}

func newWindow(warmup, seconds float64) window {
	start := time.Now().Add(seconds2duration(warmup))
	return window{start: start, end: start.Add(seconds2duration(seconds))}
}

func seconds2duration(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func (w window) contains(t time.Time) bool { return !t.Before(w.start) && t.Before(w.end) }

// buckets is the number of timeline seconds: the window plus one for the replies that arrive after it.
func (w window) buckets() int { return int(w.end.Sub(w.start)/time.Second) + 2 }

// second is the timeline index of t: its whole seconds since the window start, clamped to the timeline.
func (w window) second(t time.Time) int {
	return min(max(int(t.Sub(w.start)/time.Second), 0), w.buckets()-1)
}

// waitForStart sleeps until the window starts and returns the process CPU time then.
func (w window) waitForStart() float64 {
	time.Sleep(time.Until(w.start))
	return cpuSeconds()
}

// cpuSeconds is the user plus system CPU time of this process (all threads).
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// percentilesMs merges per-worker latencies (µs) and returns p50 and p99 in ms, or nil when there are none
// (JSON null).
func percentilesMs(parts [][]uint32) (p50, p99 *float64) {
	all := slices.Concat(parts...)
	if len(all) == 0 {
		return nil, nil
	}
	slices.Sort(all)
	at := func(p float64) *float64 {
		v := float64(all[min(len(all)-1, int(float64(len(all))*p))]) / 1000
		return &v
	}
	return at(0.5), at(0.99)
}

// micros is a latency in whole µs, saturated at uint32 (over an hour).
func micros(d time.Duration) uint32 { return uint32(min(d.Microseconds(), 1<<32-1)) }

// firstOf is the first non-empty message, in worker order.
func firstOf(messages []string) string {
	for _, m := range messages {
		if m != "" {
			return m
		}
	}
	return ""
}

func printJSON(v any) error {
	line, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(line))
	return err
}
