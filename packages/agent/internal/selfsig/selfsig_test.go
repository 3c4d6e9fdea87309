package selfsig

import (
	"net/http"
	"net/http/httptest"
	"strings"
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
