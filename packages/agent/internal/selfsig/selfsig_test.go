package selfsig

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestHandler(t *testing.T) {
	var got []string
	h := Handler(func(a, r string) { got = append(got, a+":"+r) })
	cases := []struct {
		method, path string
		status       int
	}{
		{"POST", "/self/pause?reason=idle", 202},
		{"POST", "/self/delete", 202},
		{"GET", "/self/pause", 405},
		{"POST", "/self/other", 404},
		{"POST", "/", 404},
		{"POST", "/self/delete?reason=" + strings.Repeat("x", 300), 202},
	}
	for _, c := range cases {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(c.method, c.path, nil))
		if w.Code != c.status {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, w.Code, c.status)
		}
	}
	if len(got) != 3 || got[0] != "pause:idle" || got[1] != "delete:" || got[2] != "delete:"+strings.Repeat("x", 128) {
		t.Fatalf("events %q", got)
	}
	_ = http.MethodPost
}

// The FIFO is writable by its owner only, also when an older agent left one world-writable.
func TestFIFOOwnerOnly(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "fresh")
	old := filepath.Join(dir, "old")
	if err := syscall.Mkfifo(old, 0o622); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(old, 0o622)
	logger := log.New(io.Discard, "", 0)
	for _, p := range []string{fresh, old} {
		if err := ServeFIFO(p, func(string, string) {}, logger); err != nil {
			t.Fatal(err)
		}
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode()&os.ModeNamedPipe == 0 || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want named pipe 0600", p, st.Mode())
		}
	}
}
