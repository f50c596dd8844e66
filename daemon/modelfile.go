package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

// fileStat identifies one version of a file: a rewrite in place changes the
// size or the modification time, a rename into place the inode.
type fileStat struct {
	Size  int64
	MTime time.Time
	Ino   uint64
}

func statOf(fi os.FileInfo) fileStat {
	st := fileStat{Size: fi.Size(), MTime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.Ino = sys.Ino
	}
	return st
}

// errChanging says a file changed while it was read.
var errChanging = errors.New("the file changed while it was read")

// errShort says a file ends before its tensors do.
var errShort = errors.New("it is incomplete")

// endsTooSoon reports whether err (of complete) says the file ends too
// soon: it may be a whole file's beginning, still being written.
func endsTooSoon(err error) bool {
	var fe *gguf.FormatError
	return errors.Is(err, errShort) || errors.As(err, &fe) && fe.Short
}

// snapshot is a model file copied into memory of its own (an anonymous
// mapping, outside the Go heap). A served model runs on the snapshot, not on
// a mapping of the file, so that a file rewritten or truncated in place
// changes nothing under the requests still running on the old model (a
// truncated mapping would fault them), and so that SHA256 names exactly the
// bytes served.
type snapshot struct {
	sha256 string
	data   []byte
}

// readSnapshot copies the file at path into memory, hashing it on the way,
// and fails with errChanging when the file's size or time moved meanwhile.
func readSnapshot(path string) (*snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	st := statOf(fi)
	if st.Size == 0 {
		return nil, fmt.Errorf("%s: empty file", path)
	}
	if st.Size != int64(int(st.Size)) {
		return nil, fmt.Errorf("%s: file too large to load", path)
	}
	data, err := syscall.Mmap(-1, 0, int(st.Size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot allocate %d bytes: %w", path, st.Size, err)
	}
	s := &snapshot{data: data}
	h := sha256.New()
	if _, err := io.ReadFull(io.TeeReader(f, h), data); err != nil {
		s.free()
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = errChanging
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if fi, err := os.Stat(path); err != nil || statOf(fi) != st {
		s.free()
		return nil, fmt.Errorf("%s: %w", path, errChanging)
	}
	s.sha256 = hex.EncodeToString(h.Sum(nil))
	return s, nil
}

func (s *snapshot) free() {
	if s.data != nil {
		syscall.Munmap(s.data)
		s.data = nil
	}
}

// model parses the snapshot as a GGUF model, after checking that the file
// is whole: its size must be where its last tensor ends (up to the
// alignment padding).
func (s *snapshot) model(path string) (*model.Model, error) {
	f, err := gguf.Parse(s.data)
	if err != nil {
		var fe *gguf.FormatError
		if errors.As(err, &fe) {
			fe.Path = path
		}
		return nil, err
	}
	if err := wholeFile(f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// f.Path stays empty: the model is these bytes, and a backend must not
	// go back to the file (which may be changing) for its weights.
	m, err := model.FromFile(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.Path = path
	return m, nil
}

// wholeFile checks that a GGUF file's size agrees with its tensor table.
func wholeFile(f *gguf.File) error {
	if len(f.Tensors) == 0 {
		return errors.New("it holds no tensors (a vocabulary-only GGUF file?), so no model")
	}
	end := f.DataOffset
	for i := range f.Tensors {
		end = max(end, f.DataOffset+int64(f.Tensors[i].Offset+f.Tensors[i].Size))
	}
	padded := (end + int64(f.Alignment) - 1) / int64(f.Alignment) * int64(f.Alignment)
	switch {
	case f.Size < end:
		return fmt.Errorf("the file is %d bytes, its tensors end at %d: %w", f.Size, end, errShort)
	case f.Size > padded:
		return fmt.Errorf("the file is %d bytes, its tensors end at %d: %d bytes follow them", f.Size, end, f.Size-end)
	}
	return nil
}

// complete is a cheap check, before a file is read in full, that it is a
// whole GGUF file: header and tensor table parse and the size agrees. The
// file is mapped: if it is truncated while its header is read, the fault
// becomes errChanging instead of ending the process.
func complete(path string) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%s: %w (%v)", path, errChanging, p)
		}
	}()
	f, err := gguf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := wholeFile(f); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// smokeForward runs a few tokens through a freshly loaded runner and checks
// that the logits are finite: a file whose weights parse but do not compute
// (NaN or infinite values) never goes live.
func smokeForward(ctx context.Context, r backends.Runner, m *model.Model) error {
	var toks []int32
	if bos := m.Tok.BOS(); bos >= 0 {
		toks = append(toks, bos)
	}
	toks = append(toks, m.Tok.Encode("Once upon a time", false, false)...)
	toks = toks[:min(len(toks), 8)]
	if len(toks) == 0 {
		toks = []int32{0}
	}
	blocks := make([]int32, (len(toks)+r.BlockSize()-1)/r.BlockSize())
	for i := range blocks {
		blocks[i] = int32(i)
	}
	lg, err := r.Forward(ctx, &backends.Batch{Runs: []backends.Run{{Tokens: toks, Blocks: blocks, Logits: backends.LogitsAll}}})
	if err != nil {
		return fmt.Errorf("test forward pass: %w", err)
	}
	for i, v := range lg.Data {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("test forward pass: logit %d of %d tokens is %v", i%lg.Vocab, len(toks), v)
		}
	}
	return nil
}
