package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"createos/agent/internal/pty"
	"createos/agent/internal/wire"
)

type openReq struct {
	Op    string            `json:"op"`
	Argv  []string          `json:"argv"`
	Env   map[string]string `json:"env"`
	Cwd   string            `json:"cwd"`
	Stdin bool              `json:"stdin"`
	Pty   *struct {
		Rows uint16 `json:"rows"`
		Cols uint16 `json:"cols"`
	} `json:"pty"`
	Path   string `json:"path"`
	Mode   *int   `json:"mode"`
	Mkdirs bool   `json:"mkdirs"`
	Port   int    `json:"port"`
	Host   string `json:"host"`
}

// drainGrace is how long output pipes may stay silent after the process exited before the agent
// stops waiting for EOF: a background grandchild that inherited stdout would otherwise hold the
// exec open forever. Its later output is read and discarded.
const drainGrace = 250 * time.Millisecond

const basePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// The system CA bundle (with the build host's extra CAs, e.g. a TLS-intercepting proxy's). Node.js and
// Bun installed from npm trust only their own built-in list unless told of it, and a plain exec reads
// no /etc/profile.d, so every exec is told when the image has the bundle.
const caBundle = "/etc/ssl/certs/ca-certificates.crt"

var haveCABundle = func() bool {
	_, err := os.Stat(caBundle)
	return err == nil
}

func (ss *session) open(id uint32, payload []byte) {
	var req openReq
	if err := json.Unmarshal(payload, &req); err != nil {
		_ = ss.sendJSON(wire.KindExit, id, errResult("bad open request: "+err.Error(), "EINVAL"), false)
		return
	}
	ch := newChannel(ss, id)
	ss.mu.Lock()
	ss.chans[id] = ch
	ss.mu.Unlock()
	s := ss.srv
	switch req.Op {
	case "exec":
		s.Go("exec", func() { s.runExec(ch, &req) })
	case "file_read":
		s.Go("file_read", func() { s.runFileRead(ch, &req) })
	case "file_write":
		s.Go("file_write", func() { s.runFileWrite(ch, &req) })
	case "tcp":
		s.Go("tcp", func() { s.runTCP(ch, &req) })
	default:
		ch.finish(errResult(fmt.Sprintf("unknown op %q", req.Op), "EINVAL"))
	}
}

func (s *Server) buildEnv(extra map[string]string, pty bool) []string {
	m := map[string]string{
		"PATH": basePath,
		"HOME": "/root",
		"USER": "root",
		"LANG": "C.UTF-8",
	}
	if pty {
		m["TERM"] = "xterm-256color"
	}
	if haveCABundle() {
		m["NODE_EXTRA_CA_CERTS"] = caBundle
	}
	s.envMu.RLock()
	for k, v := range s.envs {
		m[k] = v
	}
	s.envMu.RUnlock()
	for k, v := range extra {
		m[k] = v
	}
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func envGet(env []string, key string) string {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return kv[len(key)+1:]
		}
	}
	return ""
}

// lookPath mirrors os/exec.LookPath but searches the child's PATH, not the agent's.
func lookPath(file string, path string) (string, error) {
	if strings.Contains(file, "/") {
		if err := executable(file); err != nil {
			return "", fmt.Errorf("exec: %q: %v", file, err)
		}
		return file, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", file)
}

func executable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return syscall.EISDIR
	}
	if st.Mode()&0o111 == 0 {
		return os.ErrPermission
	}
	return nil
}

func defaultCwd() string {
	if st, err := os.Stat("/root"); err == nil && st.IsDir() {
		return "/root"
	}
	return "/"
}

var signals = map[string]syscall.Signal{
	"SIGHUP": syscall.SIGHUP, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT, "SIGKILL": syscall.SIGKILL,
	"SIGTERM": syscall.SIGTERM, "SIGUSR1": syscall.SIGUSR1, "SIGUSR2": syscall.SIGUSR2, "SIGWINCH": syscall.SIGWINCH,
}

func signalName(sig syscall.Signal) string {
	for k, v := range signals {
		if v == sig {
			return k
		}
	}
	names := map[syscall.Signal]string{syscall.SIGABRT: "SIGABRT", syscall.SIGSEGV: "SIGSEGV", syscall.SIGPIPE: "SIGPIPE",
		syscall.SIGBUS: "SIGBUS", syscall.SIGFPE: "SIGFPE", syscall.SIGILL: "SIGILL", syscall.SIGALRM: "SIGALRM",
		syscall.SIGTRAP: "SIGTRAP", syscall.SIGXCPU: "SIGXCPU", syscall.SIGXFSZ: "SIGXFSZ", syscall.SIGSYS: "SIGSYS"}
	if n, ok := names[sig]; ok {
		return n
	}
	return fmt.Sprintf("SIG%d", int(sig))
}

func (s *Server) runExec(ch *channel, req *openReq) {
	opened := time.Now()
	if len(req.Argv) == 0 && req.Pty != nil {
		// A terminal without a command is a login shell: bash where the image has it.
		req.Argv = []string{"/bin/sh", "-l"}
		if executable("/bin/bash") == nil {
			req.Argv = []string{"/bin/bash", "-l"}
		}
	}
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		ch.finish(map[string]interface{}{"exit_code": -1, "error": "exec: empty argv"})
		return
	}
	env := s.buildEnv(req.Env, req.Pty != nil)
	path, err := lookPath(req.Argv[0], envGet(env, "PATH"))
	if err != nil {
		ch.finish(map[string]interface{}{"exit_code": -1, "error": err.Error()})
		return
	}
	cwd := req.Cwd
	if cwd == "" {
		cwd = defaultCwd()
	}
	// Checked here: a failed chdir in the child only reports the errno, not which path.
	if st, err := os.Stat(cwd); err != nil || !st.IsDir() {
		if err == nil {
			err = syscall.ENOTDIR
		} else {
			err = errors.Unwrap(err)
		}
		ch.finish(map[string]interface{}{"exit_code": -1, "error": fmt.Sprintf("chdir %s: %v", cwd, err)})
		return
	}
	attr := &os.ProcAttr{Dir: cwd, Env: env}
	var master *os.File
	var outs []*os.File // our read ends
	var kinds []wire.Kind
	var childEnds []*os.File
	var stdinW *os.File
	cleanup := func() {
		for _, f := range childEnds {
			f.Close()
		}
	}
	if req.Pty != nil {
		m, sl, err := pty.Open()
		if err != nil {
			ch.finish(map[string]interface{}{"exit_code": -1, "error": "pty: " + err.Error()})
			return
		}
		master = m
		rows, cols := req.Pty.Rows, req.Pty.Cols
		if rows == 0 {
			rows = 24
		}
		if cols == 0 {
			cols = 80
		}
		_ = pty.Resize(master, rows, cols)
		childEnds = []*os.File{sl}
		attr.Files = []*os.File{sl, sl, sl}
		attr.Sys = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		outs, kinds = []*os.File{master}, []wire.Kind{wire.KindStdout}
	} else {
		var stdinR *os.File
		if req.Stdin {
			r, w, err := os.Pipe()
			if err != nil {
				ch.finish(map[string]interface{}{"exit_code": -1, "error": err.Error()})
				return
			}
			stdinR, stdinW = r, w
		} else {
			stdinR, err = os.Open(os.DevNull)
			if err != nil {
				ch.finish(map[string]interface{}{"exit_code": -1, "error": err.Error()})
				return
			}
		}
		or, ow, err1 := os.Pipe()
		er, ew, err2 := os.Pipe()
		if err1 != nil || err2 != nil {
			stdinR.Close()
			ch.finish(map[string]interface{}{"exit_code": -1, "error": "pipe failed"})
			return
		}
		childEnds = []*os.File{stdinR, ow, ew}
		attr.Files = []*os.File{stdinR, ow, ew}
		attr.Sys = &syscall.SysProcAttr{Setpgid: true}
		outs, kinds = []*os.File{or, er}, []wire.Kind{wire.KindStdout, wire.KindStderr}
	}

	t0 := time.Now()
	pid, waitCh, err := s.reaper.Start(path, req.Argv, attr)
	spawnUs := time.Since(t0).Microseconds()
	cleanup()
	if err != nil {
		for _, f := range outs {
			f.Close()
		}
		if stdinW != nil {
			stdinW.Close()
		}
		msg := err.Error()
		var pe *os.PathError
		if errors.As(err, &pe) {
			msg = fmt.Sprintf("exec: %q: %v", req.Argv[0], pe.Err)
		}
		ch.finish(map[string]interface{}{"exit_code": -1, "error": msg})
		return
	}

	// Signals go to the process group: the command and everything it started (the foreground
	// job's group under a PTY).
	kill := func(sig syscall.Signal) {
		if master != nil {
			if pg, err := pty.ForegroundPgrp(master); err == nil && pg > 0 {
				_ = syscall.Kill(-pg, sig)
				if sig != syscall.SIGKILL {
					return
				}
			}
		}
		if syscall.Kill(-pid, sig) != nil {
			_ = syscall.Kill(pid, sig)
		}
	}
	ch.setCtrl(func(m ctrlMsg) {
		if m.Cancel {
			kill(syscall.SIGKILL)
			ch.in.close()
			return
		}
		if m.Signal != "" {
			if sig, ok := signals[m.Signal]; ok {
				kill(sig)
			}
		}
		if m.Resize != nil && master != nil {
			_ = pty.Resize(master, m.Resize.Rows, m.Resize.Cols)
		}
	})
	if master != nil {
		// A PTY nobody can reach anymore is hung up, as a terminal closing would.
		ch.setDetach(func() { master.Close() })
	}

	_ = ch.sendCtrl(map[string]interface{}{"started": true, "pid": pid, "spawn_us": spawnUs})

	if stdinW != nil || master != nil {
		dst := stdinW
		if master != nil {
			dst = master
		}
		s.Go("stdin", func() {
			_, _ = ch.in.drainTo(dst)
			if stdinW != nil {
				stdinW.Close()
			}
		})
	}

	exited := make(chan struct{})
	done := make(chan struct{}, len(outs))
	for i := range outs {
		f, kind := outs[i], kinds[i]
		s.Go("output", func() {
			pumpOutput(ch, f, kind, exited)
			done <- struct{}{}
		})
	}
	ws := <-waitCh
	close(exited)
	for _, f := range outs {
		_ = f.SetReadDeadline(time.Now().Add(drainGrace))
	}
	for range outs {
		<-done
	}
	if master != nil {
		master.Close()
	}
	ch.in.close()
	// wall_us: OPEN received → exit seen and output sent, the agent's share of a round trip.
	res := map[string]interface{}{"exit_code": ws.ExitStatus(), "wall_us": time.Since(opened).Microseconds()}
	if ws.Signaled() {
		res["exit_code"] = -1
		res["signal"] = signalName(ws.Signal())
	}
	ch.finish(res)
}

// pumpOutput forwards f to the host until EOF (or, after exit, until f stays silent for drainGrace).
func pumpOutput(ch *channel, f *os.File, kind wire.Kind, exited <-chan struct{}) {
	buf := make([]byte, 64<<10)
	discard := false
	for {
		select {
		case <-exited:
			_ = f.SetReadDeadline(time.Now().Add(drainGrace))
		default:
		}
		n, err := f.Read(buf)
		if n > 0 && !discard {
			if ch.sendData(kind, buf[:n]) != nil {
				discard = true
			}
		}
		if err != nil {
			// A starved guest may reach Read only after the deadline passed: Go then fails it unread. Bytes
			// already in the pipe are the command's output, not a grandchild's silence: take them first.
			if errors.Is(err, os.ErrDeadlineExceeded) && pendingBytes(f) > 0 {
				continue
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// Someone else still holds the write end: keep it from blocking, without us waiting.
				_ = f.SetReadDeadline(time.Time{})
				go func() {
					_, _ = io.Copy(io.Discard, f)
					f.Close()
				}()
				return
			}
			// EOF, or EIO on a PTY master once every slave fd is closed.
			if kind == wire.KindStdout && f.Name() != "/dev/ptmx" {
				f.Close()
			}
			if kind == wire.KindStderr {
				f.Close()
			}
			return
		}
	}
}

// pendingBytes is how many bytes wait unread in a pipe or PTY master (FIONREAD), 0 when unknown.
func pendingBytes(f *os.File) int {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = rc.Control(func(fd uintptr) {
		var v int32
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&v))); e == 0 {
			n = int(v)
		}
	})
	return n
}
