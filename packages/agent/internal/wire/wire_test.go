package wire

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
)

type goldenFrame struct {
	Name       string `json:"name,omitempty"`
	Kind       int    `json:"kind"`
	Flags      int    `json:"flags"`
	Channel    uint32 `json:"channel"`
	PayloadHex string `json:"payload_hex"`
	Hex        string `json:"hex,omitempty"`
}

type goldenStream struct {
	Name     string        `json:"name"`
	Hex      string        `json:"hex"`
	Frames   []goldenFrame `json:"frames"`
	Resyncs  uint64        `json:"resyncs"`
	Buffered int           `json:"buffered"`
}

type golden struct {
	Comment string         `json:"comment"`
	Frames  []goldenFrame  `json:"frames"`
	Streams []goldenStream `json:"streams"`
}

const goldenPath = "../../testdata/frames.json"

func hx(b []byte) string { return hex.EncodeToString(b) }

func frameOf(name string, k Kind, ch uint32, payload []byte) goldenFrame {
	f := Frame{Kind: k, Channel: ch, Payload: payload}
	return goldenFrame{Name: name, Kind: int(k), Channel: ch, PayloadHex: hx(payload), Hex: hx(Encode(f))}
}

// build describes the vectors; UPDATE_GOLDEN=1 go test writes them, otherwise the file must match.
func build() golden {
	big := bytes.Repeat([]byte{0xC5, 0x0A, 0x00}, 400) // payload full of false magics
	frames := []goldenFrame{
		frameOf("rpc hello", KindRPC, 0, []byte(`{"id":1,"method":"hello","params":{"version":1}}`)),
		frameOf("open exec", KindOpen, 1, []byte(`{"op":"exec","argv":["echo","hi"]}`)),
		frameOf("stdin bytes", KindStdin, 7, []byte{0, 1, 2, 0xff}),
		frameOf("stdout", KindStdout, 0xfffffffe, []byte("hi\n")),
		frameOf("stderr", KindStderr, 3, []byte("oops")),
		frameOf("eof", KindEOF, 1, []byte{}),
		frameOf("exit", KindExit, 1, []byte(`{"exit_code":0}`)),
		frameOf("ctrl", KindCtrl, 2, []byte(`{"signal":"SIGINT"}`)),
		frameOf("window 256KiB", KindWindow, 5, []byte{0, 4, 0, 0}),
		frameOf("payload with magics", KindStdout, 9, big),
		frameOf("rpc hello with identity", KindRPC, 0, []byte(`{"id":1,"method":"hello","params":{"version":1,`+
			`"hostname":"sb-1","envs":{"K":"V"},"time_ns":1767225600000000000,"entropy":"AAEC"}}`)),
	}
	cat := func(fs ...goldenFrame) string {
		s := ""
		for _, f := range fs {
			s += f.Hex
		}
		return s
	}
	strip := func(fs ...goldenFrame) []goldenFrame {
		out := make([]goldenFrame, len(fs))
		for i, f := range fs {
			out[i] = goldenFrame{Kind: f.Kind, Channel: f.Channel, PayloadHex: f.PayloadHex}
		}
		return out
	}
	a, b, c, m := frames[0], frames[1], frames[6], frames[9]
	oversized := "c50a03000000000100100001" // STDOUT ch1 claiming 1 MiB + 1
	badKind := "c50a0c00000000010000000000" // kind 0x0c
	half := c.Hex[:2*(len(c.Hex)/4)]        // a header promising more payload than follows
	return golden{
		Comment: "Golden vectors of PROTOCOL.md frames. frames: encode(kind, channel, payload) == hex. " +
			"streams: decoding hex (whole, and one byte at a time) yields frames, counts resyncs, leaves buffered bytes.",
		Frames: frames,
		Streams: []goldenStream{
			{Name: "three frames", Hex: cat(a, b, c), Frames: strip(a, b, c)},
			{Name: "payload full of magics", Hex: cat(m, a), Frames: strip(m, a)},
			{Name: "garbage before", Hex: "00112233" + cat(a), Frames: strip(a), Resyncs: 1},
			{Name: "garbage between", Hex: cat(a) + "deadbeefc5" + cat(b), Frames: strip(a, b), Resyncs: 1},
			{Name: "oversized length", Hex: oversized + cat(b), Frames: strip(b), Resyncs: 1},
			{Name: "unknown kind", Hex: badKind + cat(a), Frames: strip(a), Resyncs: 1},
			{Name: "two resyncs", Hex: "ff" + cat(a) + "ee" + cat(b), Frames: strip(a, b), Resyncs: 2},
			// The cut header swallows the start of the next frame (inevitably), the rest resyncs.
			{Name: "cut frame then good ones", Hex: half + cat(a, b, c), Frames: append([]goldenFrame{{
				Kind: c.Kind, Channel: c.Channel, PayloadHex: half[24:] + a.Hex[:2*(15-(len(half)/2-12))],
			}}, strip(b, c)...), Resyncs: 1},
			{Name: "partial header kept", Hex: cat(a) + "c50a0900", Frames: strip(a), Buffered: 4},
			{Name: "partial payload kept", Hex: cat(a) + c.Hex[:40], Frames: strip(a), Buffered: 20},
		},
	}
}

func TestGolden(t *testing.T) {
	g := build()
	want, _ := json.MarshalIndent(g, "", "  ")
	want = append(want, '\n')
	if os.Getenv("UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(goldenPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	have, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatal(err)
	}
	var file golden
	if err := json.Unmarshal(have, &file); err != nil {
		t.Fatal(err)
	}
	for _, f := range file.Frames {
		p, _ := hex.DecodeString(f.PayloadHex)
		got := hx(Encode(Frame{Kind: Kind(f.Kind), Flags: uint8(f.Flags), Channel: f.Channel, Payload: p}))
		if got != f.Hex {
			t.Errorf("%s: encode = %s, want %s", f.Name, got, f.Hex)
		}
	}
	for _, s := range file.Streams {
		raw, _ := hex.DecodeString(s.Hex)
		for _, whole := range []bool{true, false} {
			var d Decoder
			var got []Frame
			if whole {
				got = d.Push(raw)
			} else {
				for i := range raw {
					got = append(got, d.Push(raw[i:i+1])...)
				}
			}
			if len(got) != len(s.Frames) {
				t.Fatalf("%s (whole=%v): %d frames, want %d", s.Name, whole, len(got), len(s.Frames))
			}
			for i, f := range s.Frames {
				if int(got[i].Kind) != f.Kind || got[i].Channel != f.Channel || hx(got[i].Payload) != f.PayloadHex {
					t.Errorf("%s (whole=%v) frame %d = %v/%d/%s", s.Name, whole, i, got[i].Kind, got[i].Channel, hx(got[i].Payload))
				}
			}
			if d.Resyncs != s.Resyncs {
				t.Errorf("%s (whole=%v): resyncs %d, want %d", s.Name, whole, d.Resyncs, s.Resyncs)
			}
			if d.Buffered() != s.Buffered {
				t.Errorf("%s (whole=%v): buffered %d, want %d", s.Name, whole, d.Buffered(), s.Buffered)
			}
		}
	}
}

// A hand-written vector, independent of Encode: catches a symmetric bug in encoder and decoder.
func TestKnownBytes(t *testing.T) {
	got := hx(Encode(WindowFrame(5, 1<<18)))
	if want := "c50a08000000000500000004" + "00040000"; got != want {
		t.Fatalf("window frame %s, want %s", got, want)
	}
}

func TestMaxPayloadAccepted(t *testing.T) {
	p := make([]byte, MaxPayload)
	var d Decoder
	fs := d.Push(Encode(Frame{Kind: KindStdout, Channel: 1, Payload: p}))
	if len(fs) != 1 || len(fs[0].Payload) != MaxPayload || d.Resyncs != 0 {
		t.Fatalf("1 MiB frame: %d frames, resyncs %d", len(fs), d.Resyncs)
	}
}

func TestReaderRandomChunks(t *testing.T) {
	var buf bytes.Buffer
	for i := 0; i < 200; i++ {
		buf.Write(Encode(Frame{Kind: KindStdout, Channel: uint32(i), Payload: bytes.Repeat([]byte{byte(i)}, i*37)}))
	}
	r := NewReader(&chunky{b: buf.Bytes()})
	for i := 0; i < 200; i++ {
		f, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if f.Channel != uint32(i) || len(f.Payload) != i*37 {
			t.Fatalf("frame %d: channel %d len %d", i, f.Channel, len(f.Payload))
		}
	}
}

type chunky struct {
	b []byte
	n int
}

func (c *chunky) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, nil
	}
	c.n = c.n%13 + 1
	n := copy(p[:min(len(p), c.n)], c.b)
	c.b = c.b[n:]
	return n, nil
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}
