// preempt: a stress test for trace-run's handling of Go's preemption signals.
//
// Every P is kept busy by a CPU-bound goroutine, so the runtime keeps preempting
// with SIGURG (async preemption) and stopping the world for GC, while worker
// goroutines open and read an intercepted file in a loop and check its content.
// A notified syscall interrupted by SIGURG is restarted by the kernel (SA_RESTART)
// as a new notification; trace-run must neither lose it nor leak an fd.
//
// usage: preempt PATH EXPECTED ITERATIONS
// Exit 0 and "ok N reads" on success, 1 with the first mismatch otherwise.
package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
)

var sink uint64

func spin(stop *int32) {
	x := uint64(1)
	for atomic.LoadInt32(stop) == 0 {
		for i := 0; i < 1000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	atomic.AddUint64(&sink, x)
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: preempt PATH EXPECTED ITERATIONS")
		os.Exit(2)
	}
	path, want := os.Args[1], []byte(os.Args[2])
	iterations, err := strconv.Atoi(os.Args[3])
	if err != nil || iterations <= 0 {
		fmt.Fprintln(os.Stderr, "ITERATIONS: a positive number")
		os.Exit(2)
	}

	var stop int32
	var spinners sync.WaitGroup
	for i := 0; i < runtime.GOMAXPROCS(0); i++ {
		spinners.Add(1)
		go func() { defer spinners.Done(); spin(&stop) }()
	}

	const workers = 4
	var reads, failures int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			for i := 0; i < n; i++ {
				got, err := os.ReadFile(path)
				if err == nil && !bytes.Equal(got, want) {
					err = fmt.Errorf("read %q, want %q", got, want)
				}
				if err != nil {
					atomic.AddInt64(&failures, 1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				atomic.AddInt64(&reads, 1)
				// garbage and a little CPU between calls: GC cycles and
				// preemption requests land while syscalls are in flight
				garbage := make([]byte, 64<<10)
				garbage[i%len(garbage)] = byte(i)
				atomic.AddUint64(&sink, uint64(garbage[0]))
			}
		}(iterations / workers)
	}
	wg.Wait()
	atomic.StoreInt32(&stop, 1)
	spinners.Wait()

	// no fd may have leaked: only stdin/out/err and the runtime's own remain
	var open int
	for fd := 3; fd < 1024; fd++ {
		var st syscall.Stat_t
		if syscall.Fstat(fd, &st) == nil {
			open++
		}
	}
	if failures > 0 {
		fmt.Printf("FAIL %d of %d reads: %v\n", failures, iterations, firstErr.Load())
		os.Exit(1)
	}
	fmt.Printf("ok %d reads, %d extra fds open\n", reads, open)
}
