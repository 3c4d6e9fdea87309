package server

import (
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"createos/agent/internal/wire"
)

// errnoCode names the errno behind err ("ENOENT" …) for the host to map.
func errnoCode(err error) string {
	var en syscall.Errno
	if errors.As(err, &en) {
		switch en {
		case syscall.ENOENT:
			return "ENOENT"
		case syscall.EISDIR:
			return "EISDIR"
		case syscall.EACCES, syscall.EPERM:
			return "EACCES"
		case syscall.ENOTDIR:
			return "ENOTDIR"
		case syscall.ENOSPC:
			return "ENOSPC"
		case syscall.EROFS:
			return "EROFS"
		case syscall.EEXIST:
			return "EEXIST"
		case syscall.ECONNREFUSED:
			return "ECONNREFUSED"
		case syscall.ETIMEDOUT:
			return "ETIMEDOUT"
		case syscall.EHOSTUNREACH, syscall.ENETUNREACH:
			return "EHOSTUNREACH"
		case syscall.EINVAL:
			return "EINVAL"
		case syscall.EMFILE, syscall.ENFILE:
			return "EMFILE"
		}
		return "EIO"
	}
	if errors.Is(err, os.ErrNotExist) {
		return "ENOENT"
	}
	if errors.Is(err, os.ErrPermission) {
		return "EACCES"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "ETIMEDOUT"
	}
	return "EIO"
}

func (s *Server) runFileRead(ch *channel, req *openReq) {
	if !filepath.IsAbs(req.Path) {
		ch.finish(errResult("path must be absolute", "EINVAL"))
		return
	}
	f, err := os.Open(req.Path)
	if err != nil {
		ch.finish(errResult(err.Error(), errnoCode(err)))
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		ch.finish(errResult(err.Error(), errnoCode(err)))
		return
	}
	if st.IsDir() {
		ch.finish(errResult(fmt.Sprintf("%s: is a directory", req.Path), "EISDIR"))
		return
	}
	var stop sync.Once
	closeF := func() { stop.Do(func() { f.Close() }) }
	ch.setCtrl(func(m ctrlMsg) {
		if m.Cancel {
			closeF()
		}
	})
	ch.setDetach(closeF)
	_ = ch.sendCtrl(map[string]interface{}{"size": st.Size(), "mode": uint32(st.Mode().Perm()) | modeBits(st.Mode())})
	buf := make([]byte, 256<<10)
	var total int64
	for {
		n, rerr := f.Read(buf)
		if n > 0 {
			if ch.sendData(wire.KindStdout, buf[:n]) != nil {
				ch.finish(errResult("cancelled", "ECANCELED"))
				return
			}
			total += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			code := errnoCode(rerr)
			if errors.Is(rerr, os.ErrClosed) {
				ch.finish(errResult("cancelled", "ECANCELED"))
				return
			}
			ch.finish(errResult(rerr.Error(), code))
			return
		}
	}
	_ = ch.sendEOF()
	ch.finish(map[string]interface{}{"ok": true, "bytes": total})
}

// modeBits keeps setuid/setgid/sticky, which os.FileMode stores outside Perm().
func modeBits(m os.FileMode) uint32 {
	var b uint32
	if m&os.ModeSetuid != 0 {
		b |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		b |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		b |= 0o1000
	}
	return b
}

func (s *Server) runFileWrite(ch *channel, req *openReq) {
	if !filepath.IsAbs(req.Path) || filepath.Base(req.Path) == "/" {
		ch.finish(errResult("path must be an absolute file path", "EINVAL"))
		return
	}
	path := filepath.Clean(req.Path)
	mode := os.FileMode(0o644)
	if req.Mode != nil {
		mode = os.FileMode(*req.Mode) & os.ModePerm
	}
	dir := filepath.Dir(path)
	if req.Mkdirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			ch.finish(errResult(err.Error(), errnoCode(err)))
			return
		}
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		ch.finish(errResult(fmt.Sprintf("%s: is a directory", path), "EISDIR"))
		return
	}
	tmp := filepath.Join(dir, "."+filepath.Base(path)+".createos-"+strconv.FormatInt(rand.Int63(), 36))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		ch.finish(errResult(err.Error(), errnoCode(err)))
		return
	}
	var abortOnce sync.Once
	aborted := false
	abort := func() {
		abortOnce.Do(func() {
			aborted = true
			ch.in.close()
		})
	}
	ch.setCtrl(func(m ctrlMsg) {
		if m.Cancel {
			abort()
		}
	})
	ch.setDetach(abort)
	if err := ch.sendCtrl(map[string]interface{}{"ready": true}); err != nil {
		f.Close()
		os.Remove(tmp)
		return
	}
	n, werr := ch.in.drainTo(f)
	fail := func(msg, code string) {
		f.Close()
		os.Remove(tmp)
		ch.finish(errResult(msg, code))
	}
	if aborted || ch.isDetached() {
		fail("cancelled", "ECANCELED")
		return
	}
	if werr != nil {
		fail(werr.Error(), errnoCode(werr))
		return
	}
	// Chmod: the umask trimmed the mode given to open.
	if err := f.Chmod(mode); err != nil {
		fail(err.Error(), errnoCode(err))
		return
	}
	if err := f.Sync(); err != nil {
		fail(err.Error(), errnoCode(err))
		return
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		ch.finish(errResult(err.Error(), errnoCode(err)))
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		ch.finish(errResult(err.Error(), errnoCode(err)))
		return
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	ch.finish(map[string]interface{}{"ok": true, "bytes": n})
}

func (s *Server) runTCP(ch *channel, req *openReq) {
	host := req.Host
	if host == "" {
		host = "127.0.0.1"
	}
	if req.Port <= 0 || req.Port > 65535 {
		ch.finish(errResult("bad port", "EINVAL"))
		return
	}
	c, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(req.Port)), 10*time.Second)
	if err != nil {
		ch.finish(errResult(err.Error(), errnoCode(err)))
		return
	}
	tc, _ := c.(*net.TCPConn)
	var closeOnce sync.Once
	closeC := func() { closeOnce.Do(func() { c.Close() }) }
	ch.setCtrl(func(m ctrlMsg) {
		if m.Cancel {
			closeC()
			ch.in.close()
		}
	})
	ch.setDetach(closeC)
	_ = ch.sendCtrl(map[string]interface{}{"connected": true})
	var wg sync.WaitGroup
	wg.Add(2)
	s.Go("tcp-in", func() {
		defer wg.Done()
		_, err := ch.in.drainTo(c)
		if err != nil {
			closeC()
			return
		}
		if tc != nil {
			_ = tc.CloseWrite()
		}
	})
	s.Go("tcp-out", func() {
		defer wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 && ch.sendData(wire.KindStdout, buf[:n]) != nil {
				closeC()
				return
			}
			if err != nil {
				if err != io.EOF {
					// Reset: nothing more will flow either way.
					closeC()
					ch.in.close()
				}
				break
			}
		}
		_ = ch.sendEOF()
		if tc != nil {
			_ = tc.CloseRead()
		}
	})
	wg.Wait()
	closeC()
	ch.finish(map[string]interface{}{"ok": true})
}
