// Package wire is the frame codec of PROTOCOL.md: a 12-byte big-endian header and a payload.
package wire

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
)

const (
	Magic0     = 0xC5
	Magic1     = 0x0A
	HeaderLen  = 12
	MaxPayload = 1 << 20
	// InitialWindow is the credit each direction of a data channel starts with.
	InitialWindow = 1 << 20
	// GrantBatch is the amount of consumed bytes a receiver accumulates before granting them back.
	GrantBatch = 256 << 10
)

type Kind uint8

const (
	KindOpen   Kind = 0x01
	KindStdin  Kind = 0x02
	KindStdout Kind = 0x03
	KindStderr Kind = 0x04
	KindEOF    Kind = 0x05
	KindExit   Kind = 0x06
	KindCtrl   Kind = 0x07
	KindWindow Kind = 0x08
	KindRPC    Kind = 0x09
)

func (k Kind) Valid() bool { return k >= KindOpen && k <= KindRPC }

func (k Kind) String() string {
	names := [...]string{"?", "OPEN", "STDIN", "STDOUT", "STDERR", "EOF", "EXIT", "CTRL", "WINDOW", "RPC"}
	if k.Valid() {
		return names[k]
	}
	return "?"
}

type Frame struct {
	Kind    Kind
	Flags   uint8
	Channel uint32
	Payload []byte
}

var ErrTooLarge = errors.New("wire: payload over 1 MiB")

// Encode returns header and payload in one buffer so a frame is written with one write(2):
// interleaved partial frames from concurrent writers would be unrecoverable.
func Encode(f Frame) []byte {
	b := make([]byte, HeaderLen+len(f.Payload))
	b[0], b[1], b[2], b[3] = Magic0, Magic1, byte(f.Kind), f.Flags
	binary.BigEndian.PutUint32(b[4:], f.Channel)
	binary.BigEndian.PutUint32(b[8:], uint32(len(f.Payload)))
	copy(b[HeaderLen:], f.Payload)
	return b
}

func JSON(kind Kind, ch uint32, v interface{}) Frame {
	p, err := json.Marshal(v)
	if err != nil {
		p = []byte(`{}`)
	}
	return Frame{Kind: kind, Channel: ch, Payload: p}
}

func WindowFrame(ch uint32, n uint32) Frame {
	p := make([]byte, 4)
	binary.BigEndian.PutUint32(p, n)
	return Frame{Kind: KindWindow, Channel: ch, Payload: p}
}

// WindowValue decodes a WINDOW payload; a short payload grants nothing.
func WindowValue(p []byte) uint32 {
	if len(p) < 4 {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

// Decoder turns an arbitrary chunking of a byte stream back into frames. A header with a bad magic,
// an unknown kind or an oversized length makes it discard bytes up to the next magic; every run of
// discarded bytes between two good frames counts as one resync.
type Decoder struct {
	buf        []byte
	discarding bool
	Resyncs    uint64
}

// Push appends a chunk and returns every complete frame it finished. Payloads are fresh copies.
func (d *Decoder) Push(chunk []byte) []Frame {
	d.buf = append(d.buf, chunk...)
	var out []Frame
	off := 0
	for {
		rest := d.buf[off:]
		if len(rest) < HeaderLen {
			// A partial header can still be rejected early by its magic.
			if len(rest) >= 1 && rest[0] != Magic0 || len(rest) >= 2 && rest[1] != Magic1 {
				off += d.skip(rest)
				continue
			}
			break
		}
		kind := Kind(rest[2])
		n := binary.BigEndian.Uint32(rest[8:])
		if rest[0] != Magic0 || rest[1] != Magic1 || !kind.Valid() || n > MaxPayload {
			off += d.skip(rest)
			continue
		}
		if uint32(len(rest)-HeaderLen) < n {
			break
		}
		p := make([]byte, n)
		copy(p, rest[HeaderLen:HeaderLen+int(n)])
		out = append(out, Frame{Kind: kind, Flags: rest[3], Channel: binary.BigEndian.Uint32(rest[4:]), Payload: p})
		off += HeaderLen + int(n)
		d.discarding = false
	}
	// Compact: keep only the unparsed tail, in a buffer that does not grow without bound.
	if off > 0 {
		n := copy(d.buf, d.buf[off:])
		d.buf = d.buf[:n]
	}
	return out
}

// skip drops the first byte of rest and everything up to the next possible magic; returns how many.
func (d *Decoder) skip(rest []byte) int {
	if !d.discarding {
		d.discarding = true
		d.Resyncs++
	}
	for i := 1; i < len(rest); i++ {
		if rest[i] == Magic0 && (i+1 == len(rest) || rest[i+1] == Magic1) {
			return i
		}
	}
	return len(rest)
}

// Buffered is the number of bytes held waiting for the rest of a frame.
func (d *Decoder) Buffered() int { return len(d.buf) }

// Reader reads frames from a stream.
type Reader struct {
	r   io.Reader
	d   Decoder
	q   []Frame
	buf []byte
}

func NewReader(r io.Reader) *Reader { return &Reader{r: r, buf: make([]byte, 64<<10)} }

// Next returns the next frame; io errors (including io.EOF) are returned as they come.
func (r *Reader) Next() (Frame, error) {
	for len(r.q) == 0 {
		n, err := r.r.Read(r.buf)
		if n > 0 {
			r.q = r.d.Push(r.buf[:n])
		}
		if err != nil && len(r.q) == 0 {
			return Frame{}, err
		}
	}
	f := r.q[0]
	r.q = r.q[1:]
	return f, nil
}

func (r *Reader) Resyncs() uint64 { return r.d.Resyncs }
