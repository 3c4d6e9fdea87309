package server

import (
	"encoding/json"
	"errors"
	"io"
	"sync"

	"createos/agent/internal/wire"
)

var errDetached = errors.New("channel detached")

type ctrlMsg struct {
	Signal string `json:"signal"`
	Resize *struct {
		Rows uint16 `json:"rows"`
		Cols uint16 `json:"cols"`
	} `json:"resize"`
	Cancel bool `json:"cancel"`
}

type channel struct {
	id uint32
	ss *session

	// Send credit (agent→host data bytes the host still accepts).
	mu       sync.Mutex
	cond     *sync.Cond
	credit   int64
	detached bool
	finished bool
	// cancelled: the host gave up on the data; pending and future output is dropped.
	cancelled bool

	in *inbox

	// Set by the operation once it can act on them; CTRL messages that arrive earlier are replayed.
	onCtrl   func(ctrlMsg)
	early    []ctrlMsg
	onDetach func()
}

func newChannel(ss *session, id uint32) *channel {
	ch := &channel{id: id, ss: ss, credit: wire.InitialWindow}
	ch.cond = sync.NewCond(&ch.mu)
	ch.in = newInbox(ch)
	return ch
}

func (ch *channel) grantSend(n uint32) {
	ch.mu.Lock()
	ch.credit += int64(n)
	ch.cond.Broadcast()
	ch.mu.Unlock()
}

// sendData sends p as STDOUT/STDERR frames within the host's window, waiting for credit.
func (ch *channel) sendData(kind wire.Kind, p []byte) error {
	for len(p) > 0 {
		ch.mu.Lock()
		for ch.credit <= 0 && !ch.detached && !ch.cancelled {
			ch.cond.Wait()
		}
		if ch.detached || ch.cancelled {
			ch.mu.Unlock()
			return errDetached
		}
		n := int64(len(p))
		if n > ch.credit {
			n = ch.credit
		}
		if n > wire.MaxPayload {
			n = wire.MaxPayload
		}
		ch.credit -= n
		ch.mu.Unlock()
		if err := ch.ss.send(wire.Frame{Kind: kind, Channel: ch.id, Payload: p[:n]}, true); err != nil {
			ch.detach()
			return errDetached
		}
		p = p[n:]
	}
	return nil
}

func (ch *channel) sendCtrl(v interface{}) error {
	return ch.ss.sendJSON(wire.KindCtrl, ch.id, v, false)
}

func (ch *channel) sendEOF() error {
	return ch.ss.send(wire.Frame{Kind: wire.KindEOF, Channel: ch.id}, true)
}

// finish sends EXIT (the channel's last frame) and forgets the channel.
func (ch *channel) finish(result interface{}) {
	ch.mu.Lock()
	if ch.finished {
		ch.mu.Unlock()
		return
	}
	ch.finished = true
	ch.mu.Unlock()
	_ = ch.ss.sendJSON(wire.KindExit, ch.id, result, true)
	ch.ss.mu.Lock()
	if ch.ss.chans[ch.id] == ch {
		delete(ch.ss.chans, ch.id)
	}
	ch.ss.mu.Unlock()
}

func (ch *channel) ctrl(m ctrlMsg) {
	ch.mu.Lock()
	if m.Cancel {
		// Whatever the operation, nobody waits for its data anymore: unblock senders now.
		ch.cancelled = true
		ch.cond.Broadcast()
	}
	f := ch.onCtrl
	if f == nil && len(ch.early) < 16 {
		ch.early = append(ch.early, m)
	}
	ch.mu.Unlock()
	if f != nil {
		f(m)
	}
}

func (ch *channel) setCtrl(f func(ctrlMsg)) {
	ch.mu.Lock()
	ch.onCtrl = f
	early := ch.early
	ch.early = nil
	ch.mu.Unlock()
	for _, m := range early {
		f(m)
	}
}

// setDetach registers what to close when the session goes; runs it at once if it already went.
func (ch *channel) setDetach(f func()) {
	ch.mu.Lock()
	ch.onDetach = f
	gone := ch.detached
	ch.mu.Unlock()
	if gone {
		f()
	}
}

// detach cuts the channel from the host: its session is gone. Processes keep running with their
// output discarded; files and sockets are closed by onDetach.
func (ch *channel) detach() {
	ch.mu.Lock()
	if ch.detached {
		ch.mu.Unlock()
		return
	}
	ch.detached = true
	ch.cond.Broadcast()
	f := ch.onDetach
	ch.mu.Unlock()
	ch.in.close()
	if f != nil {
		f()
	}
}

func (ch *channel) isDetached() bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.detached
}

// inbox queues STDIN payloads (at most one window, since the host respects it) for a consumer
// goroutine, and grants the window back as the consumer writes them on.
type inbox struct {
	ch        *channel
	mu        sync.Mutex
	cond      *sync.Cond
	q         [][]byte
	eof       bool
	ungranted uint32
}

func newInbox(ch *channel) *inbox {
	in := &inbox{ch: ch}
	in.cond = sync.NewCond(&in.mu)
	return in
}

func (in *inbox) push(p []byte) {
	in.mu.Lock()
	if !in.eof && len(p) > 0 {
		in.q = append(in.q, p)
		in.cond.Broadcast()
	}
	in.mu.Unlock()
}

func (in *inbox) close() {
	in.mu.Lock()
	in.eof = true
	in.cond.Broadcast()
	in.mu.Unlock()
}

// pop returns the next payload, or nil at EOF.
func (in *inbox) pop() []byte {
	in.mu.Lock()
	defer in.mu.Unlock()
	for len(in.q) == 0 && !in.eof {
		in.cond.Wait()
	}
	if len(in.q) == 0 {
		return nil
	}
	p := in.q[0]
	in.q[0] = nil
	in.q = in.q[1:]
	return p
}

// consumed records that n bytes left the inbox and grants them back in batches, or at once when
// the queue ran dry so a slow trickle never stalls.
func (in *inbox) consumed(n int) {
	in.mu.Lock()
	in.ungranted += uint32(n)
	g := uint32(0)
	if in.ungranted >= wire.GrantBatch || len(in.q) == 0 {
		g = in.ungranted
		in.ungranted = 0
	}
	in.mu.Unlock()
	if g > 0 {
		_ = in.ch.ss.send(wire.WindowFrame(in.ch.id, g), true)
	}
}

// drainTo writes every payload to w until EOF; it returns the byte count and the first write error
// (after which it keeps consuming so the host is never left without credit).
func (in *inbox) drainTo(w io.Writer) (int64, error) {
	var total int64
	var werr error
	for {
		p := in.pop()
		if p == nil {
			return total, werr
		}
		if werr == nil {
			var n int
			n, werr = w.Write(p)
			total += int64(n)
		}
		in.consumed(len(p))
	}
}

func marshal(v interface{}) []byte {
	b, _ := json.Marshal(v)
	return b
}
