//go:build linux

package cuda

import (
	"cmp"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"unsafe"
)

// The timeline build of the kernels (OCTET_TRACE in kernels/octet.cu,
// built into kernels/octet.trace.sm90.ptx and loaded with
// OCTET_CUDA_PTX=PATH) notes, for each block of each launch of a step,
// three global-timer readings: when the block reached GRID_START, when its
// wait for the kernel before returned, and when it left. A device with
// that PTX loaded traces every step: runner.run captures the step's graph
// afresh (so that the launches' names are known in order), zeroes the
// tables, replays it and reads them. Its steps are slower (a capture each,
// and a few atomics per block); the timeline of the replay is what counts.

// The sizes of octet_trace_keys and octet_trace (TRACE_SLOTS, TRACE_BLOCKS).
const (
	traceSlots  = 512
	traceBlocks = 2048
)

// tracer holds the timeline build's tables and the launches of the step
// being traced.
type tracer struct {
	keys, recs devPtr
	capturing  bool // launches are being captured: their names are kept
	names      []string
	last       []span // the last traced step's launches
	tick       int64  // the smallest step of the global timer seen in it, ns
}

// newTracer finds the timeline build's tables in module m.
func (d *device) newTracer(m *module) (*tracer, error) {
	t := &tracer{}
	for _, g := range []struct {
		name string
		dst  *devPtr
		size uint64
	}{{"octet_trace_keys", &t.keys, 8 * traceSlots}, {"octet_trace", &t.recs, 8 * 3 * traceSlots * traceBlocks}} {
		cname := cString(g.name)
		err := d.drv.call("cuModuleGetGlobal "+g.name, d.drv.cuModuleGetGlobal, d.outAt(0), d.outAt(1), m.handle, uintptr(unsafe.Pointer(cname)))
		runtime.KeepAlive(cname)
		if err != nil {
			return nil, err
		}
		if size := d.outU64(1); size != g.size {
			return nil, fmt.Errorf("cuda: the timeline build's %s is %d bytes, this build reads %d", g.name, size, g.size)
		}
		*g.dst = devPtr(d.outU64(0))
	}
	return t, nil
}

// runTraced runs a step of shape s from a graph captured for it alone,
// with the timeline tables zeroed first and read after, into d.trace.last.
func (r *runner) runTraced(s stepShape) error {
	d, t := r.dev, r.dev.trace
	t.capturing = true
	g, err := d.capture(func() error {
		t.names = t.names[:0] // a capture may be tried twice (device.capture)
		return r.launch(s)
	})
	t.capturing = false
	if err != nil {
		return err
	}
	defer d.dropGraph(g)
	if len(t.names) > traceSlots { // the table cannot hold them: run it untraced
		t.last = nil
		return d.replay(g)
	}
	for _, z := range []struct {
		p devPtr
		n int
	}{{t.keys, 8 * traceSlots}, {t.recs, 8 * 3 * traceSlots * traceBlocks}} {
		if err := d.drv.call("cuMemsetD8", d.drv.cuMemsetD8, uintptr(z.p), 0, uintptr(z.n)); err != nil {
			return err
		}
	}
	if err := d.replay(g); err != nil {
		return err
	}
	if err := d.sync(); err != nil {
		return err
	}
	keys := make([]uint64, traceSlots)
	recs := make([]uint64, 3*traceSlots*traceBlocks)
	if err := download(d, keys, t.keys); err != nil {
		return err
	}
	if err := download(d, recs, t.recs); err != nil {
		return err
	}
	t.last, err = spans(keys, recs, t.names)
	t.tick = timerTick(recs)
	return err
}

// timerTick is the smallest difference between two distinct readings in
// recs: the global timer's resolution, or more.
func timerTick(recs []uint64) int64 {
	var ts []uint64
	for _, v := range recs {
		if v != 0 {
			ts = append(ts, v)
		}
	}
	slices.Sort(ts)
	ts = slices.Compact(ts)
	tick := int64(0)
	for i := 1; i < len(ts); i++ {
		if d := int64(ts[i] - ts[i-1]); tick == 0 || d < tick {
			tick = d
		}
	}
	return tick
}

// span is one launch of a traced step, in ns from the step's first
// GRID_START.
type span struct {
	name      string
	blocks    int   // blocks recorded (the first traceBlocks of the grid: traceBlocks means more were cut)
	start     int64 // the first block reached GRID_START
	lastStart int64 // the last block did
	released  int64 // the first block's wait returned
	end       int64 // the last block's thread 0 left (its other warps may leave a little later)
}

// spans turns the timeline tables into one span per launch, in launch
// order (the grid ids, the context's launch numbers, rise with it), named
// from names.
func spans(keys, recs []uint64, names []string) ([]span, error) {
	type launch struct {
		grid uint64
		slot int
	}
	var ls []launch
	for s, k := range keys {
		if k != 0 {
			ls = append(ls, launch{k - 1, s})
		}
	}
	if len(ls) != len(names) {
		return nil, fmt.Errorf("cuda: the trace holds %d launches, the step made %d", len(ls), len(names))
	}
	slices.SortFunc(ls, func(a, b launch) int { return cmp.Compare(a.grid, b.grid) })
	out := make([]span, len(ls))
	first := int64(math.MaxInt64)
	for i, l := range ls {
		sp := span{name: names[i], start: math.MaxInt64, released: math.MaxInt64}
		for b := range traceBlocks {
			r := recs[3*(l.slot*traceBlocks+b):][:3]
			if r[0] == 0 {
				continue
			}
			sp.blocks++
			sp.start, sp.lastStart = min(sp.start, int64(r[0])), max(sp.lastStart, int64(r[0]))
			sp.released, sp.end = min(sp.released, int64(r[1])), max(sp.end, int64(r[2]))
		}
		if sp.blocks == 0 {
			return nil, fmt.Errorf("cuda: launch %d (%s) holds a slot and no block", i, sp.name)
		}
		first = min(first, sp.start)
		out[i] = sp
	}
	for i := range out {
		out[i].start -= first
		out[i].lastStart -= first
		out[i].released -= first
		out[i].end -= first
	}
	return out, nil
}

// timeline writes a step's spans as markdown: per kernel, the time its
// blocks waited for the kernel before (released − start), the time they
// worked after (end − released) and the handoff (released − the previous
// launch's end: how long the wait took to return once the kernel before
// had left), summed over its launches; then the first and last launches
// one by one.
func timeline(sp []span, tick int64) string {
	var b strings.Builder
	if len(sp) == 0 {
		return "no launches\n"
	}
	type sum struct {
		n, blocks                  int
		waiting, working, handoffs int64
	}
	var order []string
	sums := map[string]*sum{}
	var work, hand int64
	cut := false
	for i, s := range sp {
		cut = cut || s.blocks == traceBlocks
		k := sums[s.name]
		if k == nil {
			k = &sum{}
			sums[s.name] = k
			order = append(order, s.name)
		}
		k.n++
		k.blocks += s.blocks
		k.waiting += s.released - s.start
		k.working += s.end - s.released
		work += s.end - s.released
		if i > 0 {
			h := s.released - sp[i-1].end
			k.handoffs += h
			hand += h
		}
	}
	end := sp[len(sp)-1].end
	for _, s := range sp {
		end = max(end, s.end)
	}
	fmt.Fprintf(&b, "%d launches, %.1f µs from the first block's start to the last recorded block's exit (its thread 0's); working %.1f µs, handoffs %.1f µs in all (timer step %d ns)\n\n",
		len(sp), us(end), us(work), us(hand), tick)
	b.WriteString("| kernel | launches | blocks each | waiting µs | working µs | handoff µs | share of working |\n|---|---|---|---|---|---|---|\n")
	for _, name := range order {
		k := sums[name]
		fmt.Fprintf(&b, "| %s | %d | %d | %.1f | %.1f | %.1f | %.1f%% |\n", name, k.n, k.blocks/k.n, us(k.waiting), us(k.working), us(k.handoffs), 100*float64(k.working)/float64(max(work, 1)))
	}
	b.WriteString("\n| # | kernel | blocks | start µs | last block in µs | released µs | end µs |\n|---|---|---|---|---|---|---|\n")
	for i, s := range sp {
		if i >= 10 && i < len(sp)-3 {
			if i == 10 {
				b.WriteString("| … | | | | | | |\n")
			}
			continue
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %.2f | %.2f | %.2f | %.2f |\n", i, s.name, blocks(s.blocks), us(s.start), us(s.lastStart), us(s.released), us(s.end))
	}
	if cut {
		fmt.Fprintf(&b, "\n(%d+: a grid of more blocks, of which the first %d were recorded; its end is theirs)\n", traceBlocks, traceBlocks)
	}
	return b.String()
}

func us(ns int64) float64 { return float64(ns) / 1e3 }

// blocks writes a launch's recorded block count, "N+" when its grid was cut.
func blocks(n int) string {
	if n == traceBlocks {
		return fmt.Sprintf("%d+", n)
	}
	return fmt.Sprint(n)
}
