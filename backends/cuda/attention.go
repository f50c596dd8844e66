//go:build linux

package cuda

import (
	"fmt"
	"os"
)

// gmax is GMAX of kernels/octet.cu: query heads of one attention16g block
// at most.
const gmax = 8

// attnMode chooses among the attention kernels of an f16 cache: OCTET_CUDA_ATTENTION
// = auto (the default), heads (a block per query head, as the f32 cache's)
// or grouped (a block per KV head, for all the query heads it serves).
// There is no grouped kernel for an f32 cache or for heads whose width is
// not a multiple of 8: those take the per-head kernels whatever the mode.
type attnMode int

const (
	attnAuto attnMode = iota
	attnHeads
	attnGrouped
)

// attnModeFromEnv reads OCTET_CUDA_ATTENTION.
func attnModeFromEnv() (attnMode, error) {
	switch v := os.Getenv("OCTET_CUDA_ATTENTION"); v {
	case "", "auto":
		return attnAuto, nil
	case "heads":
		return attnHeads, nil
	case "grouped":
		return attnGrouped, nil
	default:
		return 0, fmt.Errorf("cuda: OCTET_CUDA_ATTENTION=%q: want auto, heads or grouped", v)
	}
}

// attnShape is what the choice of an attention kernel depends on: a
// layer's heads, the step's tokens, the GPU's SMs, the cache's values.
type attnShape struct {
	hd, heads, kvHeads, tokens, sms int
	f16                             bool
	mode                            attnMode
}

// attnChoice is an attention kernel: grouped (attention16g, width index
// w: heads of at most 64<<w values) or per query head (attention or
// attention16, heads of at most 32<<w values; many: 4 warps per block
// instead of 16).
type attnChoice struct {
	grouped, many bool
	w             int
}

// choose picks the kernel. Per query head, a (head, token) pair has 16
// warps when there are fewer pairs than SMs and 4 when there are more. An
// f16 cache with heads of a multiple of 8 values takes the grouped kernel,
// which reads each cached row once per KV head rather than once per query
// head, when its blocks (KV heads × tokens) fill at least half the SMs:
// below that the per-head kernel's more blocks keep more of the GPU
// reading.
func (s attnShape) choose() (attnChoice, error) {
	if s.hd < 1 || s.hd > maxHeadDim {
		return attnChoice{}, fmt.Errorf("cuda: no attention kernel for heads of %d values (at most %d)", s.hd, maxHeadDim)
	}
	if s.f16 && s.hd%8 == 0 && s.mode != attnHeads && (s.mode == attnGrouped || 2*s.groupedBlocks() >= s.sms) {
		return attnChoice{grouped: true, w: widthIndex(s.hd, 64)}, nil
	}
	return attnChoice{many: s.heads*s.tokens > s.sms, w: widthIndex(s.hd, 32)}, nil
}

// widthIndex is the w of the narrowest kernel, of those for heads of at
// most narrowest<<w values, that takes heads of hd values.
func widthIndex(hd, narrowest int) int {
	w := 0
	for narrowest<<w < hd {
		w++
	}
	return w
}

// groupedWarps is the warps of attention16g_1, _2 and _4 (kernels/octet.cu,
// ATTENTION_GROUPED).
var groupedWarps = [3]int{8, 8, 4}

// groupedParts is the grouped kernel's blocks per KV head and token: a
// group of more than gmax query heads takes several.
func (s attnShape) groupedParts() int { return (s.heads/s.kvHeads + gmax - 1) / gmax }

// groupedBlocks is the grouped kernel's grid size.
func (s attnShape) groupedBlocks() int { return s.kvHeads * s.groupedParts() * s.tokens }

// attnLaunch is an attention kernel with its grid and block size.
type attnLaunch struct {
	k       *kernel
	grid    [2]int
	threads int
}

// attentionFor is the attention kernel for s and its launch shape.
func (m *module) attentionFor(s attnShape) (attnLaunch, error) {
	c, err := s.choose()
	if err != nil {
		return attnLaunch{}, err
	}
	if c.grouped {
		return attnLaunch{m.grouped[c.w], [2]int{s.kvHeads * s.groupedParts(), s.tokens}, groupedWarps[c.w] * 32}, nil
	}
	f16, many, threads := 0, 0, 16*32
	if s.f16 {
		f16 = 1
	}
	if c.many {
		many, threads = 1, 4*32
	}
	return attnLaunch{m.attention[f16][many][c.w], [2]int{s.heads, s.tokens}, threads}, nil
}
