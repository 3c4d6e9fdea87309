// Package selfsig lets code inside the sandbox ask to be paused or deleted: an HTTP API on loopback
// and a FIFO for tools without an HTTP client.
package selfsig

import (
	"bufio"
	"encoding/json"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

// Emit delivers an accepted request; action is "pause" or "delete".
type Emit func(action, reason string)

const maxReason = 128

func truncate(s string) string {
	if len(s) <= maxReason {
		return s
	}
	s = s[:maxReason]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

func Handler(emit Emit) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var action string
		switch r.URL.Path {
		case "/self/pause":
			action = "pause"
		case "/self/delete":
			action = "delete"
		default:
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		reason := truncate(r.URL.Query().Get("reason"))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(map[string]interface{}{"accepted": true, "action": action, "reason": reason})
		emit(action, reason)
	})
}

// Serve listens on addr (which must be a loopback address) and returns the bound address.
func Serve(addr string, emit Emit, logger *log.Logger) (net.Addr, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: Handler(emit), ReadHeaderTimeout: 10 * time.Second, ErrorLog: logger}
	go func() { _ = srv.Serve(l) }()
	return l.Addr(), nil
}

// ServeFIFO reads commands from a FIFO at path: "park [reason]" pauses, "retire [reason]" deletes.
func ServeFIFO(path string, emit Emit, logger *log.Logger) error {
	if st, err := os.Lstat(path); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		_ = os.Remove(path)
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			return err
		}
	}
	// Writable by its owner (root, as PID 1) only: any other guest user could otherwise pause or delete the
	// sandbox, and flood the host with events. Also applied to a FIFO left by an older agent (0622).
	if err := os.Chmod(path, 0o600); err != nil {
		return err
	}
	// Opened read-write so the reader never sees EOF when a writer goes away.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	go func() {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			cmd, reason, _ := strings.Cut(line, " ")
			switch cmd {
			case "park":
				emit("pause", truncate(strings.TrimSpace(reason)))
			case "retire":
				emit("delete", truncate(strings.TrimSpace(reason)))
			case "":
			default:
				logger.Printf("self fifo: unknown command %q", cmd)
			}
		}
	}()
	return nil
}
