package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

type httpResult struct {
	URL         string           `json:"url"`
	Connections int              `json:"connections"`
	BodyBytes   int              `json:"bodyBytes"`
	Requests    int64            `json:"requests"`
	OK          int64            `json:"ok"`
	Statuses    map[string]int64 `json:"statuses"`
	Errors      int64            `json:"errors"`
	FirstError  string           `json:"firstError"`
	Seconds     float64          `json:"seconds"`
	OKPerSec    float64          `json:"okPerSec"`
	P50Ms       *float64         `json:"p50Ms"`
	P99Ms       *float64         `json:"p99Ms"`
	// TCP connections opened during the window, and over the whole run (warm-up included).
	Dials      int64   `json:"dials"`
	DialsTotal int64   `json:"dialsTotal"`
	CPUSeconds float64 `json:"cpuSeconds"`
	// Per second of the window, by the second each answer arrived (the last one: after the window).
	Timeline []httpSecond `json:"timeline"`
}

type httpSecond struct {
	OK     int64 `json:"ok"`
	Other  int64 `json:"other"`  // answered with a status other than 2xx
	Errors int64 `json:"errors"` // no answer: connection refused or reset, timeout
	Dials  int64 `json:"dials"`
}

// httpWorker is one closed loop of requests, with its counts (requests sent in the window only).
type httpWorker struct {
	statuses   map[int]int64
	errors     int64
	latencies  []uint32
	timeline   []httpSecond
	firstError string
}

func runHTTP(args []string) error {
	fs := flag.NewFlagSet("http", flag.ExitOnError)
	url := fs.String("url", "", "URL to POST to, e.g. http://127.0.0.1:18080/topics/T/messages")
	seconds := fs.Float64("seconds", 15, "measured sending time")
	warmup := fs.Float64("warmup", 0, "seconds of the same load before, not counted")
	connections := fs.Int("connections", 64, "keep-alive connections, one request in flight on each")
	size := fs.Int("size", 100, "bytes per message")
	ndjson := fs.Int("ndjson", 0, `if > 0: the body is K NDJSON lines {"value":"<size bytes>"}, application/x-ndjson`)
	bodyFile := fs.String("body", "", "file whose content is the body (overrides -size and -ndjson)")
	contentType := fs.String("content-type", "", "Content-Type (default text/plain, or application/x-ndjson)")
	timeout := fs.Float64("timeout", 10, "seconds before a request counts as an error")
	_ = fs.Parse(args)
	if *url == "" || *seconds <= 0 || *warmup < 0 || *connections < 1 || *size < 0 || *timeout <= 0 {
		return errors.New("-url is required; -seconds and -timeout must be > 0, -warmup >= 0, -connections >= 1")
	}
	body, ct, err := requestBody(*bodyFile, *ndjson, *size)
	if err != nil {
		return err
	}
	if *contentType != "" {
		ct = *contentType
	}

	w := newWindow(*warmup, *seconds)
	var dialsTotal atomic.Int64
	dialsPerSecond := make([]atomic.Int64, w.buckets())
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	client := &http.Client{
		Timeout: seconds2duration(*timeout),
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				dialsTotal.Add(1)
				if now := time.Now(); w.contains(now) {
					dialsPerSecond[w.second(now)].Add(1)
				}
				return dialer.DialContext(ctx, network, addr)
			},
			MaxConnsPerHost:     *connections,
			MaxIdleConnsPerHost: *connections,
			DisableCompression:  true,
		},
	}
	defer client.CloseIdleConnections()

	workers := make([]*httpWorker, *connections)
	var wg sync.WaitGroup
	for i := range workers {
		workers[i] = &httpWorker{statuses: map[int]int64{}, timeline: make([]httpSecond, w.buckets())}
		wg.Go(func() { workers[i].run(client, *url, ct, body, w) })
	}
	cpu0 := w.waitForStart()
	wg.Wait()
	cpu := cpuSeconds() - cpu0

	r := httpResult{URL: *url, Connections: *connections, BodyBytes: len(body), Statuses: map[string]int64{},
		Seconds: *seconds, DialsTotal: dialsTotal.Load(), CPUSeconds: cpu, Timeline: make([]httpSecond, w.buckets())}
	parts := make([][]uint32, 0, len(workers))
	messages := make([]string, 0, len(workers))
	for _, wk := range workers {
		for status, n := range wk.statuses {
			r.Statuses[strconv.Itoa(status)] += n
			r.Requests += n
			if status/100 == 2 {
				r.OK += n
			}
		}
		r.Errors += wk.errors
		r.Requests += wk.errors
		for i, s := range wk.timeline {
			r.Timeline[i].OK += s.OK
			r.Timeline[i].Other += s.Other
			r.Timeline[i].Errors += s.Errors
		}
		parts = append(parts, wk.latencies)
		messages = append(messages, wk.firstError)
	}
	for i := range r.Timeline {
		r.Timeline[i].Dials = dialsPerSecond[i].Load()
		r.Dials += r.Timeline[i].Dials
	}
	r.FirstError = firstOf(messages)
	r.OKPerSec = float64(r.OK) / *seconds
	r.P50Ms, r.P99Ms = percentilesMs(parts)
	return printJSON(r)
}

// requestBody is the body of every request and its default Content-Type.
func requestBody(file string, ndjson, size int) ([]byte, string, error) {
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		return b, "text/plain", err
	case ndjson > 0:
		line := []byte(`{"value":"` + string(bytes.Repeat([]byte("b"), size)) + "\"}\n")
		return bytes.Repeat(line, ndjson), "application/x-ndjson", nil
	default:
		return bytes.Repeat([]byte("m"), size), "text/plain", nil
	}
}

// run POSTs the body in a closed loop until the window ends. The transport replaces connections the server
// closes (Connection: close, or an idle close) with new ones; a request that fails without an answer is an
// error, and the loop goes on after a short pause so that a refusing server does not make it spin.
func (wk *httpWorker) run(client *http.Client, url, contentType string, body []byte, w window) {
	for {
		start := time.Now()
		if !start.Before(w.end) {
			return
		}
		counted := w.contains(start)
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			wk.firstError = err.Error()
			return
		}
		req.Header.Set("Content-Type", contentType)
		resp, err := client.Do(req)
		var answer []byte // kept for the first refusal's message
		if err == nil {
			if resp.StatusCode/100 != 2 && wk.firstError == "" {
				answer, err = io.ReadAll(io.LimitReader(resp.Body, 200))
			}
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
			}
			resp.Body.Close()
		}
		now := time.Now()
		if !counted {
			if err != nil {
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		sec := &wk.timeline[w.second(now)]
		if err != nil {
			wk.errors++
			sec.Errors++
			if wk.firstError == "" {
				wk.firstError = err.Error()
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		wk.statuses[resp.StatusCode]++
		if resp.StatusCode/100 == 2 {
			sec.OK++
		} else {
			sec.Other++
			if wk.firstError == "" {
				wk.firstError = fmt.Sprintf("status %d: %s", resp.StatusCode, bytes.TrimSpace(answer))
			}
		}
		wk.latencies = append(wk.latencies, micros(now.Sub(start)))
	}
}
