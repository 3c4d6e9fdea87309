package server

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"createos/agent/internal/reaper"
	"createos/agent/internal/wire"
)

var theReaper = reaper.New()

type tclient struct {
	t  *testing.T
	c  net.Conn
	fr chan wire.Frame
}

func start(t *testing.T) *tclient {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "a.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	srv := New(Config{Log: log.New(io.Discard, "", 0)}, theReaper)
	go srv.ServeListener(l)
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	tc := &tclient{t: t, c: c, fr: make(chan wire.Frame, 4096)}
	go func() {
		r := wire.NewReader(c)
		for {
			f, err := r.Next()
			if err != nil {
				close(tc.fr)
				return
			}
			if f.Kind == wire.KindRPC && bytes.Contains(f.Payload, []byte(`"event"`)) {
				continue
			}
			tc.fr <- f
		}
	}()
	tc.send(wire.JSON(wire.KindRPC, 0, map[string]interface{}{"id": 1, "method": "hello", "params": map[string]int{"version": 1}}))
	if f := tc.next(); f.Kind != wire.KindRPC || !bytes.Contains(f.Payload, []byte(`"boot_id"`)) {
		t.Fatalf("hello reply: %s %s", f.Kind, f.Payload)
	}
	return tc
}

func (tc *tclient) send(f wire.Frame) {
	if _, err := tc.c.Write(wire.Encode(f)); err != nil {
		tc.t.Fatal(err)
	}
}

func (tc *tclient) next() wire.Frame {
	tc.t.Helper()
	select {
	case f, ok := <-tc.fr:
		if !ok {
			tc.t.Fatal("connection closed")
		}
		return f
	case <-time.After(10 * time.Second):
		tc.t.Fatal("timeout waiting for a frame")
	}
	return wire.Frame{}
}

// run collects a channel until EXIT, granting credit as it goes.
func (tc *tclient) run(ch uint32) (out, errb []byte, ctrl []map[string]interface{}, exit map[string]interface{}) {
	tc.t.Helper()
	for {
		f := tc.next()
		if f.Channel != ch {
			continue
		}
		switch f.Kind {
		case wire.KindStdout:
			out = append(out, f.Payload...)
			tc.send(wire.WindowFrame(ch, uint32(len(f.Payload))))
		case wire.KindStderr:
			errb = append(errb, f.Payload...)
			tc.send(wire.WindowFrame(ch, uint32(len(f.Payload))))
		case wire.KindCtrl:
			var m map[string]interface{}
			_ = json.Unmarshal(f.Payload, &m)
			ctrl = append(ctrl, m)
		case wire.KindExit:
			_ = json.Unmarshal(f.Payload, &exit)
			return
		}
	}
}

func TestExec(t *testing.T) {
	tc := start(t)
	tc.send(wire.JSON(wire.KindOpen, 1, map[string]interface{}{"op": "exec", "argv": []string{"sh", "-c", "echo out; echo err >&2; exit 7"}, "env": map[string]string{"X": "1"}}))
	out, errb, ctrl, exit := tc.run(1)
	if string(out) != "out\n" || string(errb) != "err\n" || exit["exit_code"] != float64(7) {
		t.Fatalf("out %q err %q exit %v", out, errb, exit)
	}
	if len(ctrl) != 1 || ctrl[0]["started"] != true || ctrl[0]["spawn_us"] == nil {
		t.Fatalf("ctrl %v", ctrl)
	}
}

func TestExecNotFound(t *testing.T) {
	tc := start(t)
	tc.send(wire.JSON(wire.KindOpen, 3, map[string]interface{}{"op": "exec", "argv": []string{"no-such-cmd-xyz"}}))
	_, _, _, exit := tc.run(3)
	if !strings.Contains(exit["error"].(string), "executable file not found") {
		t.Fatalf("exit %v", exit)
	}
}

func TestExecStdinAndSignal(t *testing.T) {
	tc := start(t)
	tc.send(wire.JSON(wire.KindOpen, 1, map[string]interface{}{"op": "exec", "argv": []string{"cat"}, "stdin": true}))
	tc.send(wire.Frame{Kind: wire.KindStdin, Channel: 1, Payload: []byte("abc")})
	tc.send(wire.Frame{Kind: wire.KindEOF, Channel: 1})
	out, _, _, exit := tc.run(1)
	if string(out) != "abc" || exit["exit_code"] != float64(0) {
		t.Fatalf("out %q exit %v", out, exit)
	}
	tc.send(wire.JSON(wire.KindOpen, 2, map[string]interface{}{"op": "exec", "argv": []string{"sleep", "30"}}))
	if f := tc.next(); f.Kind != wire.KindCtrl {
		t.Fatalf("want started, got %s", f.Kind)
	}
	tc.send(wire.JSON(wire.KindCtrl, 2, map[string]interface{}{"cancel": true}))
	_, _, _, exit = tc.run(2)
	if exit["signal"] != "SIGKILL" || exit["exit_code"] != float64(-1) {
		t.Fatalf("exit %v", exit)
	}
}

// The agent must stop at the window until the host grants more.
func TestFlowControl(t *testing.T) {
	tc := start(t)
	const total = 3 << 20
	tc.send(wire.JSON(wire.KindOpen, 1, map[string]interface{}{"op": "exec", "argv": []string{"head", "-c", "3145728", "/dev/zero"}}))
	got := 0
	deadline := time.After(500 * time.Millisecond)
loop:
	for {
		select {
		case f := <-tc.fr:
			if f.Kind == wire.KindStdout {
				got += len(f.Payload)
			}
			if f.Kind == wire.KindExit {
				t.Fatal("exited without credit")
			}
		case <-deadline:
			break loop
		}
	}
	if got != wire.InitialWindow {
		t.Fatalf("received %d bytes without grants, want exactly the window %d", got, wire.InitialWindow)
	}
	tc.send(wire.WindowFrame(1, uint32(got)))
	out, _, _, exit := tc.run(1)
	if got+len(out) != total || exit["exit_code"] != float64(0) {
		t.Fatalf("total %d exit %v", got+len(out), exit)
	}
}

func TestBackgroundChildDoesNotHoldExec(t *testing.T) {
	tc := start(t)
	t0 := time.Now()
	tc.send(wire.JSON(wire.KindOpen, 1, map[string]interface{}{"op": "exec", "argv": []string{"sh", "-c", "sleep 3 & echo started"}}))
	out, _, _, exit := tc.run(1)
	if string(out) != "started\n" || exit["exit_code"] != float64(0) || time.Since(t0) > 2*time.Second {
		t.Fatalf("out %q exit %v after %v", out, exit, time.Since(t0))
	}
}

func TestPty(t *testing.T) {
	tc := start(t)
	tc.send(wire.JSON(wire.KindOpen, 1, map[string]interface{}{"op": "exec", "argv": []string{"sh"}, "stdin": true, "pty": map[string]int{"rows": 30, "cols": 100}}))
	tc.send(wire.Frame{Kind: wire.KindStdin, Channel: 1, Payload: []byte("stty size; echo $TERM; exit 5\n")})
	out, _, _, exit := tc.run(1)
	if !strings.Contains(string(out), "30 100") || !strings.Contains(string(out), "xterm-256color") || exit["exit_code"] != float64(5) {
		t.Fatalf("out %q exit %v", out, exit)
	}
}

func TestFiles(t *testing.T) {
	tc := start(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "a", "b", "f.bin")
	data := bytes.Repeat([]byte("0123456789"), 300000) // 3 MB: more than the window
	tc.send(wire.JSON(wire.KindOpen, 1, map[string]interface{}{"op": "file_write", "path": path, "mode": 0o600, "mkdirs": true}))
	if f := tc.next(); f.Kind != wire.KindCtrl || !bytes.Contains(f.Payload, []byte("ready")) {
		t.Fatalf("want ready, got %s %s", f.Kind, f.Payload)
	}
	credit := wire.InitialWindow
	rest := data
	for len(rest) > 0 {
		for credit == 0 {
			f := tc.next()
			if f.Kind == wire.KindWindow {
				credit += int(wire.WindowValue(f.Payload))
			}
		}
		n := min(min(credit, len(rest)), 100000)
		tc.send(wire.Frame{Kind: wire.KindStdin, Channel: 1, Payload: rest[:n]})
		rest, credit = rest[n:], credit-n
	}
	tc.send(wire.Frame{Kind: wire.KindEOF, Channel: 1})
	_, _, _, exit := tc.run(1)
	if exit["ok"] != true || exit["bytes"] != float64(len(data)) {
		t.Fatalf("write exit %v", exit)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("stat %v %v", st, err)
	}
	tc.send(wire.JSON(wire.KindOpen, 2, map[string]interface{}{"op": "file_read", "path": path}))
	out, _, ctrl, exit := tc.run(2)
	if !bytes.Equal(out, data) || exit["ok"] != true || ctrl[0]["size"] != float64(len(data)) || ctrl[0]["mode"] != float64(0o600) {
		t.Fatalf("read back %d bytes, exit %v ctrl %v", len(out), exit, ctrl)
	}
	tc.send(wire.JSON(wire.KindOpen, 3, map[string]interface{}{"op": "file_read", "path": filepath.Join(dir, "nope")}))
	_, _, _, exit = tc.run(3)
	if exit["code"] != "ENOENT" {
		t.Fatalf("exit %v", exit)
	}
	tc.send(wire.JSON(wire.KindOpen, 4, map[string]interface{}{"op": "file_read", "path": dir}))
	_, _, _, exit = tc.run(4)
	if exit["code"] != "EISDIR" {
		t.Fatalf("exit %v", exit)
	}
}

func TestTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		b, _ := io.ReadAll(c) // until the agent half-closes
		_, _ = c.Write(bytes.ToUpper(b))
		c.Close()
	}()
	tc := start(t)
	port := l.Addr().(*net.TCPAddr).Port
	tc.send(wire.JSON(wire.KindOpen, 1, map[string]interface{}{"op": "tcp", "port": port}))
	tc.send(wire.Frame{Kind: wire.KindStdin, Channel: 1, Payload: []byte("hello")})
	tc.send(wire.Frame{Kind: wire.KindEOF, Channel: 1})
	out, _, ctrl, exit := tc.run(1)
	if string(out) != "HELLO" || exit["ok"] != true || ctrl[0]["connected"] != true {
		t.Fatalf("out %q exit %v", out, exit)
	}
	tc.send(wire.JSON(wire.KindOpen, 2, map[string]interface{}{"op": "tcp", "port": 1}))
	_, _, _, exit = tc.run(2)
	if exit["code"] != "ECONNREFUSED" {
		t.Fatalf("exit %v", exit)
	}
}

func TestResyncAfterGarbage(t *testing.T) {
	tc := start(t)
	_, _ = tc.c.Write([]byte{0xc5, 0x0a, 0x03, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 1, 2, 3})
	tc.send(wire.JSON(wire.KindRPC, 0, map[string]interface{}{"id": 2, "method": "stats"}))
	f := tc.next()
	var m struct {
		Result struct {
			Resyncs int `json:"resyncs"`
		} `json:"result"`
	}
	_ = json.Unmarshal(f.Payload, &m)
	if m.Result.Resyncs != 1 {
		t.Fatalf("stats %s", f.Payload)
	}
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}

func TestExecEnvNamesTheCABundleWhenPresent(t *testing.T) {
	s := &Server{envs: map[string]string{}}
	orig := haveCABundle
	defer func() { haveCABundle = orig }()
	for _, have := range []bool{true, false} {
		haveCABundle = func() bool { return have }
		got := envGet(s.buildEnv(nil, false), "NODE_EXTRA_CA_CERTS")
		want := ""
		if have {
			want = caBundle
		}
		if got != want {
			t.Errorf("bundle present=%v: NODE_EXTRA_CA_CERTS=%q, want %q", have, got, want)
		}
	}
	// A sandbox's own envs still win.
	haveCABundle = func() bool { return true }
	s.envs["NODE_EXTRA_CA_CERTS"] = "/mine.pem"
	if got := envGet(s.buildEnv(nil, false), "NODE_EXTRA_CA_CERTS"); got != "/mine.pem" {
		t.Errorf("sandbox env overridden: %q", got)
	}
}

// A hello that carries the identity (PROTOCOL.md `hello`) applies it before the reply: the next exec on
// the new session already sees the envs, and the reply says so. A bare hello (an older host) applies none.
func TestHelloCarriesIdentity(t *testing.T) {
	tc := start(t)
	tc.send(wire.JSON(wire.KindRPC, 0, map[string]interface{}{"id": 2, "method": "hello", "params": map[string]interface{}{
		"version": 1, "envs": map[string]string{"FROM_HELLO": "yes"}, "time_ns": time.Now().UnixNano(),
	}}))
	var hello struct {
		ID     int                    `json:"id"`
		Result map[string]interface{} `json:"result"`
	}
	if f := tc.next(); f.Kind != wire.KindRPC || json.Unmarshal(f.Payload, &hello) != nil || hello.ID != 2 {
		t.Fatalf("hello reply: %s %s", f.Kind, f.Payload)
	}
	if hello.Result["configured"] != true || hello.Result["skew_ms"] == nil || hello.Result["configure_us"] == nil {
		t.Fatalf("hello result %v", hello.Result)
	}
	tc.send(wire.JSON(wire.KindOpen, 1, map[string]interface{}{"op": "exec", "argv": []string{"sh", "-c", "echo $FROM_HELLO"}}))
	if out, _, _, _ := tc.run(1); string(out) != "yes\n" {
		t.Fatalf("envs from hello: %q", out)
	}
	tc.send(wire.JSON(wire.KindRPC, 0, map[string]interface{}{"id": 3, "method": "hello", "params": map[string]int{"version": 1}}))
	if f := tc.next(); bytes.Contains(f.Payload, []byte(`"configured"`)) {
		t.Fatalf("a bare hello reported a configure: %s", f.Payload)
	}
	tc.send(wire.JSON(wire.KindOpen, 3, map[string]interface{}{"op": "exec", "argv": []string{"sh", "-c", "echo $FROM_HELLO"}}))
	if out, _, _, _ := tc.run(3); string(out) != "yes\n" {
		t.Fatalf("a bare hello must keep the envs: %q", out)
	}
}
