package backends

import (
	"context"
	"fmt"
)

// Sequence runs a single sequence on a runner, using its KV blocks 0…n-1 in
// order. It is for callers that run one sequence at a time (octet generate,
// evaluation); the scheduler manages block tables itself.
type Sequence struct {
	r      Runner
	blocks []int32
	pos    int
}

// NewSequence claims enough of r's blocks for maxLen positions.
func NewSequence(r Runner, maxLen int) (*Sequence, error) {
	n := (maxLen + r.BlockSize() - 1) / r.BlockSize()
	if n > r.KVBlocks() {
		return nil, fmt.Errorf("backends: a sequence of %d positions needs %d KV blocks, the runner has %d", maxLen, n, r.KVBlocks())
	}
	s := &Sequence{r: r, blocks: make([]int32, n)}
	for i := range s.blocks {
		s.blocks[i] = int32(i)
	}
	return s, nil
}

// Pos is the number of positions already in the cache.
func (s *Sequence) Pos() int { return s.pos }

// Cap is the most positions the sequence can hold.
func (s *Sequence) Cap() int { return len(s.blocks) * s.r.BlockSize() }

// Reset forgets the cached positions.
func (s *Sequence) Reset() { s.pos = 0 }

// Forward appends tokens at the current position and returns their logits
// as mode asks.
func (s *Sequence) Forward(ctx context.Context, tokens []int32, mode LogitsMode) (*Logits, error) {
	if s.pos+len(tokens) > s.Cap() {
		return nil, fmt.Errorf("backends: sequence full: %d + %d positions exceed %d", s.pos, len(tokens), s.Cap())
	}
	b := &Batch{Runs: []Run{{Tokens: tokens, Pos: s.pos, Blocks: s.blocks, Logits: mode}}}
	l, err := s.r.Forward(ctx, b)
	if err != nil {
		return nil, err
	}
	s.pos += len(tokens)
	return l, nil
}
