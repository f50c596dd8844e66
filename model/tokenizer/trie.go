package tokenizer

// Trie is the vocabulary as a prefix tree of the bytes each token renders
// to (TokenBytes, without special tokens): a walk of it with a byte
// automaton visits each shared prefix once, so that constrained decoding
// finds the tokens that may come next without trying every token alone.
// Node 0 is the root (the empty prefix).
type Trie struct {
	// Node n's children are edges[first[n]:first[n+1]], the tokens whose
	// bytes end there ids[endAt[n]:endAt[n+1]]: flat arrays, about 13 bytes
	// a node.
	first, endAt []int32
	edges        []TrieEdge
	ids          []int32
}

// TrieEdge is a child of a node: the byte leading to it, and its node.
type TrieEdge struct {
	Byte byte
	Node int32
}

// Derived returns the value build makes for key, made on the first call
// with that key and kept as long as the tokenizer: tables derived from the
// vocabulary that each request would otherwise make again (constrained
// decoding's). key must be comparable; build must not call Derived.
func (t *Tokenizer) Derived(key any, build func() any) any {
	t.derivedMu.Lock()
	defer t.derivedMu.Unlock()
	if v, ok := t.derived[key]; ok {
		return v
	}
	if t.derived == nil {
		t.derived = map[any]any{}
	}
	v := build()
	t.derived[key] = v
	return v
}

// Trie returns the tokenizer's trie, built on the first call (about a
// second for a 128k-token vocabulary on the 2-core dev VM; it then lives as
// long as the tokenizer).
func (t *Tokenizer) Trie() *Trie {
	t.trieOnce.Do(func() { t.trie = newTrie(t) })
	return t.trie
}

func newTrie(t *Tokenizer) *Trie {
	// Built with a slice per node, then laid out flat.
	edges, ends := [][]TrieEdge{nil}, [][]int32{nil}
	child := func(n int32, c byte) int32 {
		for _, e := range edges[n] {
			if e.Byte == c {
				return e.Node
			}
		}
		m := int32(len(edges))
		edges, ends = append(edges, nil), append(ends, nil)
		edges[n] = append(edges[n], TrieEdge{Byte: c, Node: m})
		return m
	}
	for id := range int32(len(t.pieces)) {
		n := int32(0)
		b := t.TokenBytes(id, false)
		if len(b) == 0 {
			continue
		}
		for _, c := range b {
			n = child(n, c)
		}
		ends[n] = append(ends[n], id)
	}
	tr := &Trie{first: make([]int32, 1, len(edges)+1), endAt: make([]int32, 1, len(edges)+1)}
	for n := range edges {
		tr.edges = append(tr.edges, edges[n]...)
		tr.ids = append(tr.ids, ends[n]...)
		tr.first = append(tr.first, int32(len(tr.edges)))
		tr.endAt = append(tr.endAt, int32(len(tr.ids)))
	}
	return tr
}

// Edges returns node n's children.
func (tr *Trie) Edges(n int32) []TrieEdge { return tr.edges[tr.first[n]:tr.first[n+1]] }

// Ends returns the tokens whose bytes end at node n.
func (tr *Trie) Ends(n int32) []int32 { return tr.ids[tr.endAt[n]:tr.endAt[n+1]] }

// Nodes is the number of nodes, the root included.
func (tr *Trie) Nodes() int { return len(tr.first) - 1 }
