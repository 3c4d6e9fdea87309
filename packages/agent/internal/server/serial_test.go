package server

import (
	"bytes"
	"io"
	"log"
	"os"
	"syscall"
	"testing"
	"time"

	"createos/agent/internal/wire"
)

// A socketpair stands in for the virtio-serial port: one bidirectional fd, opened by ServeSerial.
func TestServeSerial(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	guest := os.NewFile(uintptr(fds[0]), "port")
	host := os.NewFile(uintptr(fds[1]), "host")
	defer host.Close()
	opened := 0
	srv := New(Config{Log: log.New(io.Discard, "", 0)}, theReaper)
	go srv.ServeSerial(func() (*os.File, error) {
		opened++
		if opened > 1 {
			select {} // a reopen would mean the agent took an error for EOF
		}
		return guest, nil
	})
	r := wire.NewReader(host)
	_ = host.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := r.Next()
	if err != nil || !bytes.Contains(f.Payload, []byte(`"ready"`)) {
		t.Fatalf("want ready event first, got %s %v", f.Payload, err)
	}
	_, _ = host.Write(wire.Encode(wire.JSON(wire.KindRPC, 0, map[string]interface{}{"id": 9, "method": "hello"})))
	f, err = r.Next()
	if err != nil || !bytes.Contains(f.Payload, []byte(`"id":9`)) {
		t.Fatalf("hello reply %s %v", f.Payload, err)
	}
	_, _ = host.Write(wire.Encode(wire.JSON(wire.KindOpen, 1, map[string]interface{}{"op": "exec", "argv": []string{"echo", "serial"}})))
	var out []byte
	for {
		f, err = r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if f.Kind == wire.KindStdout {
			out = append(out, f.Payload...)
		}
		if f.Kind == wire.KindExit {
			break
		}
	}
	if string(out) != "serial\n" {
		t.Fatalf("out %q", out)
	}
}
