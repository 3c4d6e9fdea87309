// createos-agent is PID 1 and the host's agent in every sandbox VM; see PROTOCOL.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"

	"createos/agent/internal/reaper"
	"createos/agent/internal/selfsig"
	"createos/agent/internal/server"
	"createos/agent/internal/sysinit"
)

const portName = "org.createos.agent"

func main() {
	pid1 := os.Getpid() == 1
	// Guest pages the agent touches stay allocated in the VM's RAM file: keep the heap tight.
	debug.SetMemoryLimit(16 << 20)
	// As PID 1 a bad argument must not exit (that panics the kernel): parse leniently.
	mode := flag.ExitOnError
	if pid1 {
		mode = flag.ContinueOnError
	}
	fs := flag.NewFlagSet("createos-agent", mode)
	listen := fs.String("listen", "", "serve on unix:/path.sock instead of the virtio-serial port (tests)")
	selfAddr := fs.String("self-addr", "", "self-signal HTTP address (default 127.0.0.1:1029 as PID 1, off otherwise)")
	selfFifo := fs.String("self-fifo", "", "self-signal FIFO (default /run/self as PID 1, off otherwise)")
	allowSystem := fs.Bool("allow-system", false, "with --listen as root: really set hostname, clock, entropy")
	port := fs.String("port", "", "virtio-serial device to use instead of scanning for "+portName)
	version := fs.Bool("version", false, "print the version")
	_ = fs.Parse(os.Args[1:])
	if *version {
		fmt.Println(server.Version)
		return
	}

	var logger *log.Logger
	if pid1 {
		logger = log.New(sysinit.Console(), "createos-agent: ", log.LstdFlags|log.Lmicroseconds)
		// The Go runtime exits on SIGTERM/SIGINT/…; as PID 1 that is a kernel panic. Catching them
		// (rather than ignoring) keeps the default disposition for the processes we start.
		sig := make(chan os.Signal, 8)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
		go func() {
			for s := range sig {
				logger.Printf("ignoring %v", s)
			}
		}()
		sysinit.Init(logger)
		if *selfAddr == "" {
			*selfAddr = "127.0.0.1:1029"
		}
		if *selfFifo == "" {
			*selfFifo = "/run/self"
		}
	} else {
		logger = log.New(os.Stderr, "createos-agent: ", log.LstdFlags|log.Lmicroseconds)
	}

	system := pid1 || (*allowSystem && os.Geteuid() == 0)
	var warnings []string
	if pid1 {
		if w := sysinit.ClockEventWarning(); w != "" {
			logger.Printf("WARNING: %s", w)
			warnings = append(warnings, w)
		}
	}
	srv := server.New(server.Config{System: system, PID1: pid1, Log: logger, Warnings: warnings}, reaper.New())
	emit := func(action, reason string) {
		ev := map[string]interface{}{"event": "self", "action": action}
		if reason != "" {
			ev["reason"] = reason
		}
		srv.Emit(ev)
	}
	if *selfAddr != "" {
		host, _, err := net.SplitHostPort(*selfAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			logger.Printf("self-signal address %q is not loopback; not serving it", *selfAddr)
		} else if a, err := selfsig.Serve(*selfAddr, emit, logger); err != nil {
			logger.Printf("self-signal http: %v", err)
		} else {
			fmt.Fprintf(os.Stderr, "self-addr %s\n", a)
		}
	}
	if *selfFifo != "" {
		if err := selfsig.ServeFIFO(*selfFifo, emit, logger); err != nil {
			logger.Printf("self-signal fifo: %v", err)
		}
	}

	if *listen != "" {
		path := strings.TrimPrefix(*listen, "unix:")
		_ = os.Remove(path)
		l, err := net.Listen("unix", path)
		if err != nil {
			logger.Fatalf("listen: %v", err)
		}
		fmt.Fprintf(os.Stderr, "listening %s\n", path)
		logger.Fatal(srv.ServeListener(l))
	}

	srv.ServeSerial(func() (*os.File, error) { return openPort(*port) })
}

// openPort finds /dev/vportNpM whose sysfs name is org.createos.agent and opens it non-blocking, so
// the Go poller parks the reader instead of a thread blocking in read(2) with the only P: under TCG
// with a 100 Hz tick, handing that P to other goroutines took a jiffy per wakeup (40 ms exec round trips).
// While no host is connected the port reads end-of-file and writes wait for EPOLLOUT.
func openPort(dev string) (*os.File, error) {
	if dev == "" {
		names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err == nil && strings.TrimSpace(string(b)) == portName {
				dev = "/dev/" + filepath.Base(filepath.Dir(n))
				break
			}
		}
		if dev == "" {
			return nil, errors.New("no port named " + portName)
		}
	}
	fd, err := syscall.Open(dev, syscall.O_RDWR|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dev, Err: err}
	}
	return os.NewFile(uintptr(fd), dev), nil
}
