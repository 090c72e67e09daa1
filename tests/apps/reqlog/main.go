// reqlog is the incoming-traffic test app (static, CGO_ENABLED=0), a server and its
// client in one binary:
//
//	reqlog serve [-listen ADDR] [-name NAME] [-log FILE] [-tcp]
//	    HTTP: every request's body is read whole; one line "METHOD PATH LEN SHA256" is
//	    appended to FILE and the answer is "NAME METHOD PATH LEN SHA256 REMOTE\n"
//	    (REMOTE: the client address the server saw, from accept). -tcp: a raw TCP echo
//	    server instead: each line read is answered "NAME: LINE", and each connection's
//	    bytes are logged as one line "tcp LEN SHA256" when the client closes.
//	    Logs "reqlog: listening on ADDR" (the listener's getsockname) on stderr.
//	reqlog client -url URL [-n N] [-c C] [-size BYTES] [-method M] [-keepalive]
//	              [-header NAME:VALUE] [-header-every K] [-expect FILE]
//	    N requests (C at a time, each on its own connection unless -keepalive) to
//	    URL/r/I with a body of BYTES deterministic bytes; request I carries the header
//	    when I % K == 0. Writes the line each request should leave in the server's log
//	    to FILE, and prints "answers NAME=COUNT ..." (sorted); any failed request fails
//	    the run (exit 1).
//	reqlog tcp -addr HOST:PORT -line TEXT [-hold DURATION]
//	    raw TCP: sends TEXT and a newline, prints the answer line, closes. -hold: keeps
//	    the connection open after the answer until the server ends it (then prints
//	    "ended: EOF" or "ended: ERROR") or DURATION passes ("ended: still open").
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: reqlog serve|client|tcp [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "client":
		client(os.Args[2:])
	case "tcp":
		tcpClient(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "usage: reqlog serve|client|tcp [flags]")
		os.Exit(2)
	}
}

type logFile struct {
	mu sync.Mutex
	f  *os.File
}

func (l *logFile) line(s string) {
	if l.f == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f.WriteString(s + "\n")
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", ":8080", "address to listen on")
	name := fs.String("name", "reqlog", "name in every answer")
	logPath := fs.String("log", "", "request log")
	tcp := fs.Bool("tcp", false, "raw TCP echo instead of HTTP")
	fs.Parse(args)
	var lf logFile
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			fmt.Fprintf(os.Stderr, "reqlog: %v\n", err)
			os.Exit(1)
		}
		lf.f = f
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "reqlog: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "reqlog: listening on %s\n", ln.Addr())
	if *tcp {
		for {
			c, err := ln.Accept()
			if err != nil {
				fmt.Fprintf(os.Stderr, "reqlog: %v\n", err)
				os.Exit(1)
			}
			go echo(c, *name, &lf)
		}
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		entry := fmt.Sprintf("%s %s %d %s", r.Method, r.URL.Path, len(body), digest(body))
		lf.line(entry)
		fmt.Fprintf(w, "%s %s %s\n", *name, entry, r.RemoteAddr)
	})
	server := &http.Server{Handler: handler, ReadHeaderTimeout: 30 * time.Second}
	err = server.Serve(ln)
	fmt.Fprintf(os.Stderr, "reqlog: %v\n", err)
	os.Exit(1)
}

func echo(c net.Conn, name string, lf *logFile) {
	defer c.Close()
	h := sha256.New()
	n := 0
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if len(line) > 0 {
			h.Write([]byte(line))
			n += len(line)
			fmt.Fprintf(c, "%s: %s (from %s)\n", name, strings.TrimRight(line, "\n"), c.RemoteAddr())
		}
		if err != nil {
			break
		}
	}
	lf.line(fmt.Sprintf("tcp %d %s", n, hex.EncodeToString(h.Sum(nil))))
}

func body(i, size int) []byte {
	b := make([]byte, size)
	rand.New(rand.NewSource(int64(i) + 1)).Read(b)
	return b
}

func client(args []string) {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	url := fs.String("url", "", "server URL (http://HOST:PORT)")
	n := fs.Int("n", 1, "requests")
	c := fs.Int("c", 1, "requests at a time")
	size := fs.Int("size", 0, "body bytes")
	method := fs.String("method", "POST", "method")
	keepalive := fs.Bool("keepalive", false, "reuse connections")
	header := fs.String("header", "", "NAME:VALUE")
	every := fs.Int("header-every", 1, "the header on request I when I % K == 0")
	expect := fs.String("expect", "", "file for the expected log lines")
	fs.Parse(args)
	if *url == "" {
		fmt.Fprintln(os.Stderr, "reqlog client: -url is required")
		os.Exit(2)
	}
	tr := &http.Transport{DisableKeepAlives: !*keepalive, MaxIdleConnsPerHost: *c}
	hc := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	var mu sync.Mutex
	answers := map[string]int{}
	expected := make([]string, *n)
	failed := 0
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < *c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				b := body(i, *size)
				path := fmt.Sprintf("/r/%d", i)
				expected[i] = fmt.Sprintf("%s %s %d %s", *method, path, len(b), digest(b))
				req, _ := http.NewRequest(*method, *url+path, bytes.NewReader(b))
				if *header != "" && i%*every == 0 {
					kv := strings.SplitN(*header, ":", 2)
					req.Header.Set(kv[0], strings.TrimSpace(kv[1]))
				}
				resp, err := hc.Do(req)
				var got []byte
				if err == nil {
					got, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				if err != nil {
					failed++
					fmt.Fprintf(os.Stderr, "request %d: %v\n", i, err)
				} else {
					f := strings.Fields(string(got))
					who := "?"
					if len(f) > 0 {
						who = f[0]
					}
					answers[who]++
					if len(f) < 5 || strings.Join(f[1:5], " ") != expected[i] {
						failed++
						fmt.Fprintf(os.Stderr, "request %d: answer %q, sent %q\n", i, got, expected[i])
					}
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < *n; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if *expect != "" {
		os.WriteFile(*expect, []byte(strings.Join(expected, "\n")+"\n"), 0o644)
	}
	var names []string
	for k := range answers {
		names = append(names, fmt.Sprintf("%s=%d", k, answers[k]))
	}
	sort.Strings(names)
	fmt.Printf("answers %s\n", strings.Join(names, " "))
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "%d requests failed\n", failed)
		os.Exit(1)
	}
}

func tcpClient(args []string) {
	fs := flag.NewFlagSet("tcp", flag.ExitOnError)
	addr := fs.String("addr", "", "HOST:PORT")
	line := fs.String("line", "hello", "line to send")
	hold := fs.Duration("hold", 0, "keep the connection open up to this long")
	fs.Parse(args)
	c, err := net.DialTimeout("tcp", *addr, 10*time.Second)
	if err != nil {
		fmt.Fprintf(os.Stderr, "reqlog tcp: %v\n", err)
		os.Exit(1)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "%s\n", *line)
	r := bufio.NewReader(c)
	got, err := r.ReadString('\n')
	if err != nil {
		fmt.Fprintf(os.Stderr, "reqlog tcp: %v\n", err)
		os.Exit(1)
	}
	fmt.Print(got)
	if *hold > 0 {
		c.SetDeadline(time.Now().Add(*hold))
		_, err = io.Copy(io.Discard, r)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			fmt.Println("ended: still open")
		} else if err == nil {
			fmt.Println("ended: EOF")
		} else {
			fmt.Printf("ended: %v\n", err)
		}
	}
	c.Close()
}
