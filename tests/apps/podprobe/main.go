// podprobe looks at the world it runs in: environment, files, DNS and the network.
// Built static (CGO_ENABLED=0), it is the program the demo and the integration tests
// run under `trace-run --target pod/NAME`: every answer must be the pod's.
//
// Actions run in the order given; each prints lines that start with its name:
//
//	-env NAME              env NAME=VALUE          (or: env NAME unset)
//	-read PATH             the content as is, plus a newline when it lacks one
//	-read PATH  with -sum  read PATH size=N sha256=HEX
//	-list DIR              list DIR NAME           (one line per entry, sorted; none if empty)
//	-stat PATH             stat PATH type=file|dir|symlink|other size=N mode=0644
//	-lstat PATH            lstat PATH ...          (does not follow a final symlink)
//	-chdir DIR             chdir DIR               (later relative paths start there)
//	-write PATH [-data S]  write PATH bytes=N      (creates or truncates, mode 0644)
//	-mkdir DIR             mkdir DIR
//	-remove PATH           remove PATH
//	-rename OLD NEW        rename OLD NEW
//	-resolve NAME          resolve NAME ADDR       (one line per address, Go's own resolver)
//	-get URL               get URL status=CODE     then the body as is (newline added)
//	-connect HOST:PORT [-send S]
//	                       connect HOST:PORT local=IP:PORT remote=IP:PORT
//	                       with -send: writes S, shuts down its write side and prints
//	                       recv HOST:PORT bytes=N, then the reply as is (newline added)
//	-udp HOST:PORT -send S udp HOST:PORT local=IP:PORT remote=IP:PORT
//	                       then recv HOST:PORT bytes=N and the first datagram back
//
// Options, wherever they appear: -sum (checksums instead of content for -read),
// -timeout D (network deadline, default 10s), -all (keep going after a failed action).
//
// Exit status: 0 when every action succeeded, 1 when one failed (the reason goes to
// stderr as "podprobe: ACTION ARG: ERROR"), 2 on a usage error.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

type action struct {
	name string
	args []string // positional arguments of the action
	data *string  // -data / -send attached to the action, nil when absent
}

type options struct {
	sum       bool
	keepGoing bool
	timeout   time.Duration
}

const usage = `usage: podprobe [-sum] [-timeout D] [-all] ACTION...
actions (run in order): -env NAME, -read PATH, -list DIR, -stat PATH, -lstat PATH,
  -chdir DIR, -write PATH [-data S], -mkdir DIR, -remove PATH, -rename OLD NEW,
  -resolve NAME, -get URL, -connect HOST:PORT [-send S], -udp HOST:PORT -send S
`

// argCount is how many positional arguments each action takes.
var argCount = map[string]int{
	"env": 1, "read": 1, "list": 1, "stat": 1, "lstat": 1, "chdir": 1,
	"write": 1, "mkdir": 1, "remove": 1, "rename": 2,
	"resolve": 1, "get": 1, "connect": 1, "udp": 1,
}

// payloadFlag names the flag that may follow an action to give it data.
var payloadFlag = map[string]string{"write": "data", "connect": "send", "udp": "send"}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// parseArgs keeps the order of the actions, which the standard flag package loses.
func parseArgs(argv []string) ([]action, options, error) {
	opts := options{timeout: 10 * time.Second}
	var actions []action
	for i := 0; i < len(argv); i++ {
		name, inline, hasInline := splitFlag(argv[i])
		if name == "" {
			return nil, opts, usageError{fmt.Sprintf("unexpected argument %q", argv[i])}
		}
		// take returns the next value: the "=value" part or the following word
		take := func() (string, error) {
			if hasInline {
				hasInline = false
				return inline, nil
			}
			if i+1 >= len(argv) {
				return "", usageError{fmt.Sprintf("-%s needs a value", name)}
			}
			i++
			return argv[i], nil
		}
		switch name {
		case "h", "help":
			fmt.Print(usage)
			os.Exit(0)
		case "sum":
			opts.sum = true
			continue
		case "all":
			opts.keepGoing = true
			continue
		case "timeout":
			v, err := take()
			if err != nil {
				return nil, opts, err
			}
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, opts, usageError{fmt.Sprintf("-timeout: bad duration %q", v)}
			}
			opts.timeout = d
			continue
		case "data", "send":
			last := len(actions) - 1
			if last < 0 || payloadFlag[actions[last].name] != name || actions[last].data != nil {
				return nil, opts, usageError{fmt.Sprintf("-%s must follow the action it belongs to", name)}
			}
			v, err := take()
			if err != nil {
				return nil, opts, err
			}
			actions[last].data = &v
			continue
		}
		n, known := argCount[name]
		if !known {
			return nil, opts, usageError{fmt.Sprintf("unknown flag -%s", name)}
		}
		a := action{name: name}
		for k := 0; k < n; k++ {
			v, err := take()
			if err != nil {
				return nil, opts, err
			}
			a.args = append(a.args, v)
		}
		actions = append(actions, a)
	}
	for _, a := range actions {
		if a.name == "udp" && a.data == nil {
			return nil, opts, usageError{"-udp needs -send DATA after it"}
		}
	}
	if len(actions) == 0 {
		return nil, opts, usageError{"no action given"}
	}
	return actions, opts, nil
}

// splitFlag accepts -name, --name and -name=value; name is "" for a non-flag.
func splitFlag(arg string) (name, value string, hasValue bool) {
	if !strings.HasPrefix(arg, "-") || arg == "-" || arg == "--" {
		return "", "", false
	}
	name = strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-")
	if eq := strings.IndexByte(name, '='); eq >= 0 {
		return name[:eq], name[eq+1:], true
	}
	return name, "", false
}

// printBlock writes content as is, ending it with a newline so the next line stays a line.
func printBlock(content []byte) {
	os.Stdout.Write(content)
	if len(content) > 0 && content[len(content)-1] != '\n' {
		os.Stdout.Write([]byte{'\n'})
	}
}

func fileType(mode fs.FileMode) string {
	switch {
	case mode.IsRegular():
		return "file"
	case mode.IsDir():
		return "dir"
	case mode&fs.ModeSymlink != 0:
		return "symlink"
	}
	return "other"
}

func run(a action, opts options) error {
	arg := a.args[0]
	switch a.name {
	case "env":
		if v, ok := os.LookupEnv(arg); ok {
			fmt.Printf("env %s=%s\n", arg, v)
		} else {
			fmt.Printf("env %s unset\n", arg)
		}
	case "read":
		content, err := os.ReadFile(arg)
		if err != nil {
			return err
		}
		if opts.sum {
			digest := sha256.Sum256(content)
			fmt.Printf("read %s size=%d sha256=%s\n", arg, len(content), hex.EncodeToString(digest[:]))
		} else {
			printBlock(content)
		}
	case "list":
		entries, err := os.ReadDir(arg) // sorted by name
		if err != nil {
			return err
		}
		for _, e := range entries {
			fmt.Printf("list %s %s\n", arg, e.Name())
		}
	case "stat", "lstat":
		stat := os.Stat
		if a.name == "lstat" {
			stat = os.Lstat
		}
		info, err := stat(arg)
		if err != nil {
			return err
		}
		fmt.Printf("%s %s type=%s size=%d mode=%04o\n", a.name, arg, fileType(info.Mode()),
			info.Size(), info.Mode().Perm())
	case "chdir":
		if err := os.Chdir(arg); err != nil {
			return err
		}
		fmt.Printf("chdir %s\n", arg)
	case "write":
		data := ""
		if a.data != nil {
			data = *a.data
		}
		if err := os.WriteFile(arg, []byte(data), 0o644); err != nil {
			return err
		}
		fmt.Printf("write %s bytes=%d\n", arg, len(data))
	case "mkdir":
		if err := os.Mkdir(arg, 0o755); err != nil {
			return err
		}
		fmt.Printf("mkdir %s\n", arg)
	case "remove":
		if err := os.Remove(arg); err != nil {
			return err
		}
		fmt.Printf("remove %s\n", arg)
	case "rename":
		if err := os.Rename(arg, a.args[1]); err != nil {
			return err
		}
		fmt.Printf("rename %s %s\n", arg, a.args[1])
	case "resolve":
		return resolve(arg, opts.timeout)
	case "get":
		return get(arg, opts.timeout)
	case "connect":
		return connect("tcp", arg, a.data, opts.timeout)
	case "udp":
		return connect("udp", arg, a.data, opts.timeout)
	default:
		return fmt.Errorf("no handler for -%s", a.name)
	}
	return nil
}

// resolve uses Go's own resolver (what a CGO_ENABLED=0 binary always does): it reads
// /etc/hosts and /etc/resolv.conf and talks UDP to the nameserver itself.
func resolve(name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resolver := &net.Resolver{PreferGo: true}
	addrs, err := resolver.LookupIPAddr(ctx, name)
	if err != nil {
		return err
	}
	for _, addr := range addrs {
		fmt.Printf("resolve %s %s\n", name, addr.String())
	}
	return nil
}

func get(url string, timeout time.Duration) error {
	client := &http.Client{
		Timeout: timeout,
		// a proxy from the (imported) environment would hide where the request went
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
	}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading the body: %w", err)
	}
	fmt.Printf("get %s status=%d\n", url, resp.StatusCode)
	printBlock(body)
	return nil
}

// connect dials network ("tcp" or "udp") and reports the addresses the kernel gives
// the socket: getsockname and getpeername, which must show the original destination.
func connect(network, target string, payload *string, timeout time.Duration) error {
	conn, err := net.DialTimeout(network, target, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	label := "connect"
	if network == "udp" {
		label = "udp"
	}
	fmt.Printf("%s %s local=%s remote=%s\n", label, target, conn.LocalAddr(), conn.RemoteAddr())
	if payload == nil {
		return nil
	}
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte(*payload)); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	var reply []byte
	if tcp, ok := conn.(*net.TCPConn); ok {
		// the peer may answer only once it sees the end of the request
		if err := tcp.CloseWrite(); err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
		if reply, err = io.ReadAll(conn); err != nil {
			return fmt.Errorf("recv: %w", err)
		}
	} else {
		buf := make([]byte, 65536)
		n, err := conn.Read(buf)
		if err != nil {
			return fmt.Errorf("recv: %w", err)
		}
		reply = buf[:n]
	}
	fmt.Printf("recv %s bytes=%d\n", target, len(reply))
	printBlock(reply)
	return nil
}

func main() {
	actions, opts, err := parseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "podprobe: %v\n%s", err, usage)
		os.Exit(2)
	}
	failed := false
	for _, a := range actions {
		if err := run(a, opts); err != nil {
			failed = true
			fmt.Fprintf(os.Stderr, "podprobe: %s %s: %v\n", a.name, strings.Join(a.args, " "), err)
			if !opts.keepGoing {
				break
			}
		}
	}
	if failed {
		os.Exit(1)
	}
}
