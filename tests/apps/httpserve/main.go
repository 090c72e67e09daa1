// httpserve is a tiny HTTP server for pods (static, CGO_ENABLED=0):
//
//	GET /      answers the -body text, exactly
//	GET /echo  answers what the server saw, one "key=value" line each:
//	           remote=IP:PORT (the source address: where a relayed connection came from),
//	           local=IP:PORT, method, path, host, proto, then "header NAME: VALUE" lines, sorted
//	anything else: 404
//
// It logs one line on stderr once it listens ("httpserve: listening on ADDR") and nothing
// per request, so benchmarks measure the network path and not the logging. SIGTERM and
// SIGINT stop it cleanly (exit 0) — which matters as PID 1 of a pod, where a signal
// without a handler is ignored.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", ":8080", "address to listen on")
	body := flag.String("body", "hello from httpserve", "answer of GET /")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: httpserve [-listen ADDR] [-body TEXT]")
		os.Exit(2)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, *body)
	})
	mux.HandleFunc("/echo", echo)

	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "httpserve: %v\n", err)
		os.Exit(1)
	}
	server := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0), // no per-connection noise
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	fmt.Fprintf(os.Stderr, "httpserve: listening on %s\n", listener.Addr())

	select {
	case err := <-served:
		fmt.Fprintf(os.Stderr, "httpserve: %v\n", err)
		os.Exit(1)
	case <-stop:
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		server.Shutdown(ctx)
	}
}

func echo(w http.ResponseWriter, r *http.Request) {
	var b strings.Builder
	fmt.Fprintf(&b, "remote=%s\n", r.RemoteAddr)
	if local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		fmt.Fprintf(&b, "local=%s\n", local)
	}
	fmt.Fprintf(&b, "method=%s\npath=%s\nhost=%s\nproto=%s\n", r.Method, r.URL.RequestURI(), r.Host, r.Proto)
	names := make([]string, 0, len(r.Header))
	for name := range r.Header {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, value := range r.Header[name] {
			fmt.Fprintf(&b, "header %s: %s\n", name, value)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, b.String())
}
