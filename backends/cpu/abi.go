package cpu

import (
	"fmt"
	"slices"
	"unsafe"
)

// The Go mirrors of the structs of native/octet.h and native/api.c. Every
// field is 8 bytes wide (int64, float64 or a pointer), so Go and C lay them
// out the same way; checkLayout compares them with the library's own
// offsets before any other call.
//
// Pointer fields are unsafe.Pointer, never uintptr: a struct passed to C is
// itself passed through library.call's uintptr-escaping arguments, which
// moves it, and everything its pointers reach, to the heap and keeps it
// alive for the call.

type ocTensor struct {
	data            unsafe.Pointer // into the mapped model file
	typ, rows, cols int64
}

type ocLayer struct {
	heads, kvHeads, ffn            int64
	wq, wk, wv, wo, gate, up, down ocTensor
	attnNorm, ffnNorm, bq, bk, bv  unsafe.Pointer
}

type ocModel struct {
	abi, dim, nLayers, headDim, vocab        int64
	normEps                                  float64
	ropeDims, ropeNeox                       int64
	ropeBase, ropeFreqScale                  float64
	ropeFreqs                                unsafe.Pointer
	tokEmbd, output                          ocTensor
	outputNorm                               unsafe.Pointer
	layers                                   unsafe.Pointer
	blockSize, kvBlocks, maxContext, threads int64
	repack                                   int64
	kvType                                   int64
}

type ocBatch struct {
	n                          int64
	tokens, pos, table, blocks unsafe.Pointer
	nOut                       int64
	outRows                    unsafe.Pointer
	logits                     unsafe.Pointer
}

type ocKArgs struct {
	w                                       unsafe.Pointer
	x, x2, y                                unsafe.Pointer
	blocks                                  unsafe.Pointer
	typ, rows, cols, n                      int64
	r0, r1, tid, path, acc                  int64
	heads, kvHeads, headDim, blockSize, pos int64
	ropeDims, neox                          int64
	eps, ropeBase, ropeFreqScale            float64
	ropeFreqs                               unsafe.Pointer
}

const abiVersion = 6

// goLayout lists what oc_abi_layout returns, computed on the Go side.
func goLayout() []int64 {
	var t ocTensor
	var l ocLayer
	var m ocModel
	var b ocBatch
	var k ocKArgs
	o := func(v uintptr) int64 { return int64(v) }
	return []int64{
		o(unsafe.Sizeof(t)), o(unsafe.Offsetof(t.typ)), o(unsafe.Offsetof(t.cols)),
		o(unsafe.Sizeof(l)), o(unsafe.Offsetof(l.wq)), o(unsafe.Offsetof(l.down)), o(unsafe.Offsetof(l.attnNorm)), o(unsafe.Offsetof(l.bv)),
		o(unsafe.Sizeof(m)), o(unsafe.Offsetof(m.normEps)), o(unsafe.Offsetof(m.ropeFreqs)), o(unsafe.Offsetof(m.tokEmbd)),
		o(unsafe.Offsetof(m.output)), o(unsafe.Offsetof(m.outputNorm)), o(unsafe.Offsetof(m.layers)), o(unsafe.Offsetof(m.threads)),
		o(unsafe.Offsetof(m.repack)), o(unsafe.Offsetof(m.kvType)),
		o(unsafe.Sizeof(b)), o(unsafe.Offsetof(b.blocks)), o(unsafe.Offsetof(b.nOut)), o(unsafe.Offsetof(b.logits)),
		o(unsafe.Sizeof(k)), o(unsafe.Offsetof(k.blocks)), o(unsafe.Offsetof(k.typ)), o(unsafe.Offsetof(k.neox)), o(unsafe.Offsetof(k.eps)), o(unsafe.Offsetof(k.ropeFreqs)),
	}
}

// checkLayout compares the library's struct layout with the Go mirrors.
func (l *library) checkLayout() error {
	want := goLayout()
	got := make([]int64, len(want)+8)
	n := int(l.call(l.fn.abiLayout, uintptr(uptr(got)), uintptr(len(got))))
	if n != len(want) || !slices.Equal(got[:n], want) {
		return fmt.Errorf("struct layout differs from the Go side (library %v, Go %v)", got[:min(n, len(got))], want)
	}
	return nil
}
