package server

import (
	"os"
	"testing"
	"time"
)

// Output already in the pipe is counted, so a Read that failed only because the deadline passed before it
// ran (a starved guest) does not end the exec's output early.
func TestPendingBytes(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if n := pendingBytes(r); n != 0 {
		t.Fatalf("empty pipe: %d pending", n)
	}
	if _, err := w.Write(make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	_ = r.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := r.Read(make([]byte, 10)); !os.IsTimeout(err) {
		t.Fatalf("a past deadline fails the read unread, got %v", err)
	}
	if n := pendingBytes(r); n != 4096 {
		t.Fatalf("pending %d, want 4096", n)
	}
}
