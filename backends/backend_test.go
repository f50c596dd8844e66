package backends

import (
	"errors"
	"testing"
)

// Validate accepts the batches the scheduler builds (runs of different
// sequences, sharing read-only prefix blocks) and refuses runs that read or
// write what another run of the same step writes.
func TestValidateCrossRunBlocks(t *testing.T) {
	const vocab, bs, blocks = 10, 4, 8
	ok := map[string]Batch{
		"one run":                  {Runs: []Run{{Tokens: []int32{1, 2}, Blocks: []int32{0}}}},
		"two sequences":            {Runs: []Run{{Tokens: []int32{1}, Pos: 2, Blocks: []int32{0}}, {Tokens: []int32{2}, Pos: 2, Blocks: []int32{1}}}},
		"shared read-only prefix":  {Runs: []Run{{Tokens: []int32{1}, Pos: 4, Blocks: []int32{0, 2}}, {Tokens: []int32{2, 3}, Pos: 4, Blocks: []int32{0, 3}}}},
		"unused blocks past a run": {Runs: []Run{{Tokens: []int32{1}, Blocks: []int32{0, 1}}, {Tokens: []int32{2}, Blocks: []int32{1}}}},
	}
	for name, b := range ok {
		if err := b.Validate(vocab, bs, blocks); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := map[string]Batch{
		"same sequence twice": {Runs: []Run{{Tokens: []int32{1}, Pos: 1, Blocks: []int32{0}}, {Tokens: []int32{2}, Pos: 2, Blocks: []int32{0}}}},
		"both write a block":  {Runs: []Run{{Tokens: []int32{1}, Pos: 4, Blocks: []int32{0, 2}}, {Tokens: []int32{2}, Pos: 4, Blocks: []int32{1, 2}}}},
		"reads a written one": {Runs: []Run{{Tokens: []int32{1}, Pos: 4, Blocks: []int32{0, 2}}, {Tokens: []int32{2}, Pos: 1, Blocks: []int32{0}}}},
	}
	for name, b := range bad {
		if err := b.Validate(vocab, bs, blocks); !errors.Is(err, ErrBadBatch) {
			t.Errorf("%s: error %v, want ErrBadBatch", name, err)
		}
	}
}
