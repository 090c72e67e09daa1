// httpbench is the HTTP load client of `make bench`: CONCURRENCY workers send GETs on
// keep-alive connections for a duration (or a number of requests), then it prints one line
//
//	requests=N errors=E rps=X p50_ms=Y p99_ms=Z
//
// requests counts the successful responses (status < 400, body read to the end), errors
// the failed ones; rps and the latency percentiles are over the successful ones. It is
// static (CGO_ENABLED=0) so the same binary runs under trace-run on the host and inside a
// busybox pod, which is the comparison the benchmark makes.
//
// Exit status: 0 when every request succeeded, 1 when any failed (the first error goes to
// stderr; the result line is still printed), 2 on a usage error.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type workerResult struct {
	latencies []time.Duration
	errors    int
	firstErr  error
}

func main() {
	url := flag.String("url", "", "URL to GET (required)")
	concurrency := flag.Int("c", 1, "concurrent workers, each with its own keep-alive connection")
	duration := flag.Duration("d", 0, "run for this long (default 5s unless -n is given)")
	total := flag.Int64("n", 0, "send this many requests in all instead of running for -d")
	timeout := flag.Duration("timeout", 10*time.Second, "deadline of one request")
	header := flag.String("header", "", "send this header (\"Name: value\") with every request")
	flag.Parse()
	if *url == "" || flag.NArg() > 0 || *concurrency < 1 || *total < 0 || *duration < 0 ||
		(*total > 0 && *duration > 0) {
		fmt.Fprintln(os.Stderr, "usage: httpbench -url URL [-c CONCURRENCY] [-d DURATION | -n REQUESTS] [-timeout D] [-header 'NAME: VALUE']")
		os.Exit(2)
	}
	var hname, hvalue string
	if *header != "" {
		i := strings.Index(*header, ":")
		if i <= 0 {
			fmt.Fprintln(os.Stderr, "httpbench: -header wants \"Name: value\"")
			os.Exit(2)
		}
		hname, hvalue = (*header)[:i], strings.TrimSpace((*header)[i+1:])
	}
	if *total == 0 && *duration == 0 {
		*duration = 5 * time.Second
	}
	if *total > 0 && int64(*concurrency) > *total {
		*concurrency = int(*total)
	}

	transport := &http.Transport{
		Proxy:               nil, // measure the path to the server, never a proxy's
		DialContext:         (&net.Dialer{Timeout: *timeout}).DialContext,
		MaxIdleConns:        *concurrency,
		MaxIdleConnsPerHost: *concurrency,
		DisableCompression:  true,
	}
	client := &http.Client{Transport: transport, Timeout: *timeout}

	var issued int64
	start := time.Now()
	deadline := start.Add(*duration)
	// more says whether a worker may start another request
	more := func() bool {
		if *total > 0 {
			return atomic.AddInt64(&issued, 1) <= *total
		}
		return time.Now().Before(deadline)
	}

	results := make([]workerResult, *concurrency)
	var wg sync.WaitGroup
	for w := range results {
		wg.Add(1)
		go func(res *workerResult) {
			defer wg.Done()
			for more() {
				began := time.Now()
				err := fetch(client, *url, hname, hvalue)
				if err != nil {
					res.errors++
					if res.firstErr == nil {
						res.firstErr = err
					}
					continue
				}
				res.latencies = append(res.latencies, time.Since(began))
			}
		}(&results[w])
	}
	wg.Wait()
	elapsed := time.Since(start)

	var latencies []time.Duration
	errors := 0
	var firstErr error
	for _, res := range results {
		latencies = append(latencies, res.latencies...)
		errors += res.errors
		if firstErr == nil {
			firstErr = res.firstErr
		}
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	fmt.Printf("requests=%d errors=%d rps=%.1f p50_ms=%.3f p99_ms=%.3f\n", len(latencies), errors,
		float64(len(latencies))/elapsed.Seconds(), millis(percentile(latencies, 50)),
		millis(percentile(latencies, 99)))
	if errors > 0 {
		fmt.Fprintf(os.Stderr, "httpbench: %d of %d requests failed; first error: %v\n", errors,
			errors+len(latencies), firstErr)
		os.Exit(1)
	}
	if len(latencies) == 0 {
		fmt.Fprintln(os.Stderr, "httpbench: no request completed")
		os.Exit(1)
	}
}

// fetch reads the whole body so the connection goes back to the pool for the next request.
func fetch(client *http.Client, url, hname, hvalue string) error {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return err
	}
	if hname != "" {
		req.Header.Set(hname, hvalue)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("reading the body: %w", err)
	}
	if resp.StatusCode >= 400 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// percentile of sorted samples, nearest-rank; 0 without samples
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (len(sorted)*p + 99) / 100 // ceil(len*p/100), 1-based
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
