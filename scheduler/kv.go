package scheduler

import (
	"container/list"
	"encoding/binary"
	"hash/maphash"
	"slices"
)

// blockPool hands out a runner's KV blocks and keeps the prefix cache.
//
// A block is in use while its reference count is above zero. A full block
// whose positions hold a known token prefix is keyed by the hash of that
// prefix (the hash of the previous block's key and this block's tokens), so
// a sequence whose prompt starts with the same tokens takes the block
// instead of computing it: shared, not copied, with one reference per
// sequence. A keyed block nobody uses stays cached in LRU order and is
// evicted only when a fresh block is needed and no unkeyed one is free.
type blockPool struct {
	size int // positions per block
	seed maphash.Seed

	refs  []int32
	keys  []*blockKey // the key of a cached block, else nil
	lru   *list.List  // cached blocks with no references, oldest first
	elems []*list.Element
	free  []int32 // unkeyed blocks with no references
	index map[uint64]int32
}

// blockKey is what a cached block holds: the prefix before it (by hash)
// and its own tokens, compared on every hit so a hash collision is a miss.
type blockKey struct {
	parent, hash uint64
	tokens       []int32
}

func newBlockPool(n, size int) *blockPool {
	p := &blockPool{size: size, seed: maphash.MakeSeed(), refs: make([]int32, n), keys: make([]*blockKey, n),
		lru: list.New(), elems: make([]*list.Element, n), index: map[uint64]int32{}}
	for b := n - 1; b >= 0; b-- {
		p.free = append(p.free, int32(b))
	}
	return p
}

// total is the number of blocks.
func (p *blockPool) total() int { return len(p.refs) }

// available is the number of blocks alloc can hand out now.
func (p *blockPool) available() int { return len(p.free) + p.lru.Len() }

// used is the number of blocks some sequence holds.
func (p *blockPool) used() int { return p.total() - p.available() }

// cached is the number of blocks in the prefix cache.
func (p *blockPool) cached() int { return len(p.index) }

// alloc takes a free block, evicting the least recently used cached block
// when no unkeyed one is left.
func (p *blockPool) alloc() (int32, bool) {
	var b int32
	switch {
	case len(p.free) > 0:
		b = p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
	case p.lru.Len() > 0:
		b = p.lru.Remove(p.lru.Front()).(int32)
		p.elems[b] = nil
		p.forget(b)
	default:
		return -1, false
	}
	p.refs[b] = 1
	return b, true
}

// release drops one reference to each block.
func (p *blockPool) release(blocks []int32) {
	for _, b := range blocks {
		p.refs[b]--
		switch {
		case p.refs[b] > 0:
		case p.keys[b] != nil:
			p.elems[b] = p.lru.PushBack(b)
		default:
			p.free = append(p.free, b)
		}
	}
}

// hash is the key of a block holding tokens after the prefix parent.
func (p *blockPool) hash(parent uint64, tokens []int32) uint64 {
	var h maphash.Hash
	h.SetSeed(p.seed)
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], parent)
	h.Write(buf[:])
	for _, t := range tokens {
		binary.LittleEndian.PutUint32(buf[:4], uint32(t))
		h.Write(buf[:4])
	}
	return h.Sum64()
}

// lookup returns the cached block holding tokens after parent, with a
// reference taken, and the block's hash.
func (p *blockPool) lookup(parent uint64, tokens []int32) (int32, uint64, bool) {
	h := p.hash(parent, tokens)
	b, ok := p.index[h]
	if !ok || p.keys[b].parent != parent || !slices.Equal(p.keys[b].tokens, tokens) {
		return -1, h, false
	}
	if p.refs[b] == 0 {
		p.lru.Remove(p.elems[b])
		p.elems[b] = nil
	}
	p.refs[b]++
	return b, h, true
}

// register keys block b, now full with tokens after parent, and returns
// its hash. When another block already holds that prefix, b stays unkeyed.
func (p *blockPool) register(b int32, parent uint64, tokens []int32) uint64 {
	h := p.hash(parent, tokens)
	if _, dup := p.index[h]; !dup && p.keys[b] == nil {
		p.keys[b] = &blockKey{parent: parent, hash: h, tokens: slices.Clone(tokens)}
		p.index[h] = b
	}
	return h
}

// forget removes block b's key from the cache.
func (p *blockPool) forget(b int32) {
	if k := p.keys[b]; k != nil {
		delete(p.index, k.hash)
		p.keys[b] = nil
	}
}

// dropCache empties the prefix cache: idle cached blocks become free, and
// blocks in use stop being shared with newcomers.
func (p *blockPool) dropCache() {
	for e := p.lru.Front(); e != nil; e = e.Next() {
		b := e.Value.(int32)
		p.elems[b] = nil
		p.free = append(p.free, b)
	}
	p.lru.Init()
	for b := range p.keys {
		p.forget(int32(b))
	}
}
