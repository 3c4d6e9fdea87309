// Package server serves PROTOCOL.md over one byte stream at a time: the virtio-serial port in a VM,
// or a unix socket in --listen mode.
package server

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"createos/agent/internal/reaper"
	"createos/agent/internal/wire"
)

const Version = "createos-agent 0.1.0"

type Config struct {
	// System allows privileged side effects on the machine (hostname, clock, entropy, fs resize,
	// power off): true as PID 1, or in --listen mode with --allow-system as root.
	System bool
	// PID1 powers the machine off on shutdown.
	PID1 bool
	// Warnings are reported in every hello result (e.g. a guest without timer interrupts).
	Warnings []string
	Log      *log.Logger
}

type Server struct {
	cfg     Config
	log     *log.Logger
	reaper  *reaper.Reaper
	bootID  string
	started time.Time

	// wmu serialises frames on the transport (a write may block while no host is connected) and
	// guards quiesce; cond wakes senders held by quiesce or a session change.
	wmu  sync.Mutex
	cond *sync.Cond
	// smu guards cur and pending, and is never held across a write: looking up the session (reader,
	// self-signal) must not wait behind a blocked write.
	smu sync.Mutex
	cur *session

	envMu sync.RWMutex
	envs  map[string]string

	resyncs uint64 // atomic
	pending []map[string]interface{}
}

var errStale = errors.New("session gone")

// session is the state between two hellos (or two connections): its channels die with it.
type session struct {
	srv      *Server
	w        io.Writer
	mu       sync.Mutex
	chans    map[uint32]*channel
	quiesced bool
}

func New(cfg Config, r *reaper.Reaper) *Server {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	s := &Server{cfg: cfg, log: cfg.Log, reaper: r, bootID: hex.EncodeToString(b), started: time.Now(), envs: map[string]string{}}
	s.cond = sync.NewCond(&s.wmu)
	if s.log == nil {
		s.log = log.New(os.Stderr, "agent: ", log.LstdFlags)
	}
	return s
}

// Go runs f in a goroutine that logs instead of crashing: as PID 1 a panic would panic the kernel.
func (s *Server) Go(name string, f func()) {
	go func() {
		defer func() {
			if r := recover(); r != nil {
				s.log.Printf("panic in %s: %v\n%s", name, r, debug.Stack())
			}
		}()
		f()
	}()
}

// newSession makes w the transport and drops every channel of the previous session.
func (s *Server) newSession(w io.Writer) *session {
	ns := &session{srv: s, w: w, chans: map[uint32]*channel{}}
	s.smu.Lock()
	old := s.cur
	s.cur = ns
	s.smu.Unlock()
	s.wmu.Lock()
	s.cond.Broadcast()
	s.wmu.Unlock()
	if old != nil {
		old.teardown()
	}
	return ns
}

func (s *Server) session(w io.Writer) *session {
	cur := s.current()
	if cur != nil && cur.w == w {
		return cur
	}
	return nil
}

func (s *Server) current() *session {
	s.smu.Lock()
	defer s.smu.Unlock()
	return s.cur
}

func (ss *session) teardown() {
	ss.mu.Lock()
	chans := ss.chans
	ss.chans = map[uint32]*channel{}
	ss.mu.Unlock()
	for _, ch := range chans {
		ch.detach()
	}
}

// send writes one frame. Data frames wait while the session is quiesced; frames of a replaced
// session are dropped so a new host never sees them.
func (ss *session) send(f wire.Frame, data bool) error {
	s := ss.srv
	b := wire.Encode(f)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for {
		if s.current() != ss {
			return errStale
		}
		if !(data && ss.quiesced) {
			break
		}
		s.cond.Wait()
	}
	_, err := ss.w.Write(b)
	return err
}

func (ss *session) sendJSON(kind wire.Kind, ch uint32, v interface{}, data bool) error {
	return ss.send(wire.JSON(kind, ch, v), data)
}

// Emit sends an event to the host, or keeps it until a host says hello. It never blocks.
func (s *Server) Emit(ev map[string]interface{}) {
	s.smu.Lock()
	cur := s.cur
	if cur == nil {
		s.keep(ev)
		s.smu.Unlock()
		return
	}
	s.smu.Unlock()
	s.Go("emit", func() {
		if cur.sendJSON(wire.KindRPC, 0, ev, false) != nil {
			s.smu.Lock()
			s.keep(ev)
			s.smu.Unlock()
		}
	})
}

// keep holds an undelivered event (smu held).
func (s *Server) keep(ev map[string]interface{}) {
	if len(s.pending) < 64 {
		s.pending = append(s.pending, ev)
	}
}

func (s *Server) flushPending(ss *session) {
	s.smu.Lock()
	p := s.pending
	s.pending = nil
	s.smu.Unlock()
	for _, ev := range p {
		_ = ss.sendJSON(wire.KindRPC, 0, ev, false)
	}
}

func (s *Server) readyEvent() map[string]interface{} {
	return map[string]interface{}{"event": "ready", "boot_id": s.bootID}
}

// ServeListener serves one connection at a time; a new one replaces the old (a host reconnect).
func (s *Server) ServeListener(l net.Listener) error {
	var prev net.Conn
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		if prev != nil {
			prev.Close()
		}
		prev = c
		ss := s.newSession(c)
		s.Go("ready", func() { _ = ss.sendJSON(wire.KindRPC, 0, s.readyEvent(), false) })
		s.Go("conn", func() {
			s.readLoop(c, c, false)
			c.Close()
		})
	}
}

// ServeSerial serves the virtio-serial port forever. The port reads end-of-file while no host is
// connected, so EOF means "poll again soon", never "exit"; any other read error reopens the port.
func (s *Server) ServeSerial(open func() (*os.File, error)) {
	first := true
	for {
		f, err := open()
		if err != nil {
			s.log.Printf("virtio-serial port: %v", err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		ss := s.newSession(f)
		if first {
			first = false
			s.Go("ready", func() { _ = ss.sendJSON(wire.KindRPC, 0, s.readyEvent(), false) })
		}
		s.readLoop(f, f, true)
		f.Close()
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *Server) readLoop(r io.Reader, w io.Writer, serial bool) {
	fr := wire.NewReader(r)
	var seen uint64
	disconnected := false
	for {
		f, err := fr.Next()
		if n := fr.Resyncs(); n != seen {
			atomic.AddUint64(&s.resyncs, n-seen)
			seen = n
		}
		if err != nil {
			if serial && err == io.EOF {
				disconnected = true
				time.Sleep(10 * time.Millisecond)
				continue
			}
			if err != io.EOF {
				s.log.Printf("read: %v", err)
			}
			return
		}
		if disconnected {
			// A host just (re)connected to the port: tell it we are here.
			disconnected = false
			if ss := s.session(w); ss != nil {
				_ = ss.sendJSON(wire.KindRPC, 0, s.readyEvent(), false)
			}
		}
		s.dispatch(w, f)
	}
}

func (s *Server) dispatch(w io.Writer, f wire.Frame) {
	ss := s.session(w)
	if ss == nil {
		return
	}
	if f.Channel == 0 {
		if f.Kind == wire.KindRPC {
			s.handleRPC(ss, w, f.Payload)
		}
		return
	}
	ss.mu.Lock()
	ch := ss.chans[f.Channel]
	ss.mu.Unlock()
	switch f.Kind {
	case wire.KindOpen:
		if ch != nil {
			_ = ss.sendJSON(wire.KindExit, f.Channel, errResult("channel already open", "EINVAL"), false)
			return
		}
		ss.open(f.Channel, f.Payload)
	case wire.KindStdin:
		if ch != nil {
			ch.in.push(f.Payload)
		}
	case wire.KindEOF:
		if ch != nil {
			ch.in.close()
		}
	case wire.KindWindow:
		if ch != nil {
			ch.grantSend(wire.WindowValue(f.Payload))
		}
	case wire.KindCtrl:
		if ch != nil {
			var m ctrlMsg
			if json.Unmarshal(f.Payload, &m) == nil {
				ch.ctrl(m)
			}
		}
	}
}

func errResult(msg, code string) map[string]interface{} {
	r := map[string]interface{}{"error": msg}
	if code != "" {
		r["code"] = code
	}
	return r
}
