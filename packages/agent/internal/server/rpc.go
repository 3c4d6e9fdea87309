package server

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"createos/agent/internal/wire"
)

type rpcReq struct {
	ID     *int64          `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

type rpcError struct {
	Message string `json:"message"`
	Code    string `json:"code,omitempty"`
}

func (s *Server) handleRPC(ss *session, w io.Writer, payload []byte) {
	var req rpcReq
	if err := json.Unmarshal(payload, &req); err != nil || req.ID == nil {
		return // events from the host and garbage are ignored
	}
	id := *req.ID
	reply := func(ss *session, result interface{}, rerr *rpcError) {
		m := map[string]interface{}{"id": id}
		if rerr != nil {
			m["error"] = rerr
		} else {
			m["result"] = result
		}
		_ = ss.sendJSON(wire.KindRPC, 0, m, false)
	}
	switch req.Method {
	case "hello":
		// Every hello starts a session: the host that says it has no channels open.
		ns := s.newSession(w)
		res := map[string]interface{}{
			"version":   1,
			"agent":     Version,
			"boot_id":   s.bootID,
			"uptime_ms": time.Since(s.started).Milliseconds(),
			"pid":       os.Getpid(),
		}
		if len(s.cfg.Warnings) > 0 {
			res["warnings"] = s.cfg.Warnings
		}
		// A hello may carry the identity (configure's fields): applied before the reply, so the host's
		// first exec after a restore needs no second round trip. An older host sends none.
		var p configureParams
		if len(req.Params) > 0 && json.Unmarshal(req.Params, &p) == nil && p.identity() {
			res["configured"] = true
			t0 := time.Now()
			skew, rerr := s.configure(&p)
			// The guest's own share of the hello, for the host's step laps (where a restore's ms go).
			res["configure_us"] = time.Since(t0).Microseconds()
			if rerr != nil {
				res["configured"] = false
				res["configure_error"] = rerr
			} else if p.TimeNs > 0 {
				res["skew_ms"] = skew
			}
		}
		reply(ns, res, nil)
		s.flushPending(ns)
	case "quiesce":
		s.wmu.Lock()
		ss.quiesced = true
		s.wmu.Unlock()
		s.Go("quiesce", func() {
			syscall.Sync()
			reply(ss, map[string]interface{}{"ok": true}, nil)
		})
	case "debug":
		// Answered inline by the reader: works even when every other goroutine is stuck.
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t0 := time.Now()
		ts := syscall.NsecToTimespec(int64(time.Millisecond))
		_ = syscall.Nanosleep(&ts, nil)
		status, _ := os.ReadFile("/proc/self/status")
		reply(ss, map[string]interface{}{
			"goroutines":    string(buf[:n]),
			"num_goroutine": runtime.NumGoroutine(),
			"gomaxprocs":    runtime.GOMAXPROCS(0),
			"nanosleep_1ms": time.Since(t0).String(),
			"status":        string(status),
		}, nil)
	case "thaw":
		// Lifts quiesce without a new session: the pause it prepared for did not happen.
		s.wmu.Lock()
		ss.quiesced = false
		s.cond.Broadcast()
		s.wmu.Unlock()
		reply(ss, map[string]interface{}{"ok": true}, nil)
	case "stats":
		ss.mu.Lock()
		n := len(ss.chans)
		ss.mu.Unlock()
		reply(ss, map[string]interface{}{
			"open_channels":     n,
			"resyncs":           atomic.LoadUint64(&s.resyncs),
			"mem_available_kib": memAvailable(),
			"load1":             load1(),
			"orphans_reaped":    atomic.LoadUint64(&s.reaper.Orphans),
		}, nil)
	default:
		// The rest may block (fsync, ioctls): keep the reader going.
		s.Go("rpc", func() {
			res, rerr := s.slowRPC(req.Method, req.Params)
			reply(ss, res, rerr)
		})
	}
}

type configureParams struct {
	Hostname *string           `json:"hostname"`
	Envs     map[string]string `json:"envs"`
	TimeNs   int64             `json:"time_ns"`
	Entropy  string            `json:"entropy"`
	Net      *struct {
		DNS []string `json:"dns"`
	} `json:"net"`
	Device string `json:"device"`
	Reboot bool   `json:"reboot"`
}

func (s *Server) slowRPC(method string, raw json.RawMessage) (interface{}, *rpcError) {
	var p configureParams
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, &rpcError{Message: "bad params: " + err.Error(), Code: "EINVAL"}
		}
	}
	switch method {
	case "configure":
		if _, rerr := s.configure(&p); rerr != nil {
			return nil, rerr
		}
		return map[string]interface{}{"ok": true}, nil
	case "sync":
		// Clock and RNG only: configure without the identity fields, which sync's params never carry.
		skew, rerr := s.configure(&configureParams{TimeNs: p.TimeNs, Entropy: p.Entropy})
		if rerr != nil {
			return nil, rerr
		}
		return map[string]interface{}{"ok": true, "skew_ms": skew}, nil
	case "resize_fs":
		if !s.cfg.System {
			return map[string]interface{}{"ok": true, "skipped": true, "size_bytes": 0}, nil
		}
		dev := p.Device
		if dev == "" {
			dev = "/dev/vda"
		}
		n, err := resizeFS(dev)
		if err != nil {
			return nil, &rpcError{Message: "resize_fs: " + err.Error(), Code: errnoCode(err)}
		}
		return map[string]interface{}{"ok": true, "size_bytes": n}, nil
	case "shutdown":
		if s.cfg.PID1 {
			s.Go("poweroff", func() {
				// Let the reply reach the host first.
				time.Sleep(50 * time.Millisecond)
				syscall.Sync()
				cmd := syscall.LINUX_REBOOT_CMD_POWER_OFF
				// Without ACPI (QEMU microvm acpi=off) a power off only halts the CPU and QEMU keeps
				// running; a restart reaches QEMU, and its -no-reboot turns it into an exit.
				if _, err := os.Stat("/sys/firmware/acpi"); p.Reboot || err != nil {
					cmd = syscall.LINUX_REBOOT_CMD_RESTART
				}
				if err := syscall.Reboot(cmd); err != nil {
					s.log.Printf("reboot: %v", err)
				}
			})
		}
		return map[string]interface{}{"ok": true}, nil
	}
	return nil, &rpcError{Message: "unknown method " + strconv.Quote(method), Code: "ENOSYS"}
}

// identity: whether the params carry anything configure applies (a bare hello carries none of it).
func (p *configureParams) identity() bool {
	return p.Hostname != nil || p.Envs != nil || p.TimeNs > 0 || p.Entropy != "" || p.Net != nil
}

// configure applies what `configure` (and hello's identity, and sync's clock and RNG) carries; returns the
// clock's skew before it was set, ms (host − guest; 0 without a clock).
func (s *Server) configure(p *configureParams) (int64, *rpcError) {
	if p.Envs != nil {
		s.envMu.Lock()
		s.envs = p.Envs
		s.envMu.Unlock()
	}
	if p.Hostname != nil && *p.Hostname != "" && s.cfg.System {
		if err := syscall.Sethostname([]byte(*p.Hostname)); err != nil {
			return 0, &rpcError{Message: "sethostname: " + err.Error(), Code: errnoCode(err)}
		}
		_ = os.WriteFile("/etc/hostname", []byte(*p.Hostname+"\n"), 0o644)
		setHostsEntry(*p.Hostname)
	}
	var skew int64
	if p.TimeNs > 0 {
		skew = s.setClock(p.TimeNs)
	}
	if p.Entropy != "" {
		if err := s.addEntropy(p.Entropy); err != nil {
			return 0, &rpcError{Message: "entropy: " + err.Error(), Code: errnoCode(err)}
		}
	}
	if p.Net != nil && len(p.Net.DNS) > 0 && s.cfg.System {
		var b strings.Builder
		for _, d := range p.Net.DNS {
			fmt.Fprintf(&b, "nameserver %s\n", d)
		}
		_ = os.WriteFile("/etc/resolv.conf", []byte(b.String()), 0o644)
	}
	return skew, nil
}

// setClock sets the wall clock (when allowed) and returns how far the guest was off, ms (host − guest).
func (s *Server) setClock(ns int64) int64 {
	skew := (ns - time.Now().UnixNano()) / 1e6
	if s.cfg.System {
		tv := syscall.NsecToTimeval(ns)
		if err := syscall.Settimeofday(&tv); err != nil {
			s.log.Printf("settimeofday: %v", err)
		}
	}
	return skew
}

const (
	rndAddEntropy = 0x40085203
	// RNDRESEEDCRNG: since Linux 5.18 the ChaCha CRNG re-keys from the input pool only on its reseed
	// interval (up to 60 s), so entropy added after a fork would not change /dev/urandom's output until
	// then: every clone of one snapshot would read the same bytes. Forcing the reseed re-keys it now.
	rndReseedCRNG = 0x5207
)

func (s *Server) addEntropy(b64 string) error {
	data, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return syscall.EINVAL
	}
	if !s.cfg.System || len(data) == 0 {
		return nil
	}
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	words := (len(data) + 3) / 4
	buf := make([]byte, 8+words*4)
	binary.LittleEndian.PutUint32(buf[0:], uint32(len(data)*8))
	binary.LittleEndian.PutUint32(buf[4:], uint32(len(data)))
	copy(buf[8:], data)
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), rndAddEntropy, uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return errno
	}
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), rndReseedCRNG, 0); errno != 0 {
		return errno
	}
	return nil
}

const (
	blkGetSize64   = 0x80081272
	ext4IocResizeF = 0x40086610
)

func resizeFS(dev string) (int64, error) {
	d, err := os.Open(dev)
	if err != nil {
		return 0, err
	}
	var size uint64
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, d.Fd(), blkGetSize64, uintptr(unsafe.Pointer(&size)))
	d.Close()
	if errno != 0 {
		return 0, errno
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs("/", &st); err != nil {
		return 0, err
	}
	bsize := uint64(st.Bsize)
	blocks := size / bsize
	root, err := os.Open("/")
	if err != nil {
		return 0, err
	}
	defer root.Close()
	_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, root.Fd(), ext4IocResizeF, uintptr(unsafe.Pointer(&blocks)))
	if errno != 0 {
		return 0, errno
	}
	return int64(blocks * bsize), nil
}

// setHostsEntry keeps the hostname resolvable (sudo, some tools, look it up) after a rename.
func setHostsEntry(name string) {
	b, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return
	}
	var out []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if strings.HasPrefix(l, "127.0.1.1") {
			continue
		}
		out = append(out, l)
	}
	out = append(out, "127.0.1.1\t"+name)
	_ = os.WriteFile("/etc/hosts", []byte(strings.Join(out, "\n")+"\n"), 0o644)
}

func memAvailable() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 2 && fs[0] == "MemAvailable:" {
			n, _ := strconv.ParseInt(fs[1], 10, 64)
			return n
		}
	}
	return 0
}

func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	fs := strings.Fields(string(b))
	if len(fs) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(fs[0], 64)
	return v
}
