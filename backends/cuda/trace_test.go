//go:build linux

package cuda

import (
	"strings"
	"testing"
)

// TestSpans builds the timeline tables as the timeline kernels leave them
// (slots in hash order, grid ids + 1 as keys, three readings per block) and
// checks the spans, their order and the table.
func TestSpans(t *testing.T) {
	keys := make([]uint64, traceSlots)
	recs := make([]uint64, 3*traceSlots*traceBlocks)
	put := func(slot, block int, t0, t1, t2 uint64) {
		copy(recs[3*(slot*traceBlocks+block):], []uint64{t0, t1, t2})
	}
	const base = 1_000_000
	// Launch grid 41 in slot 300: the step's second; grid 40 in slot 7, its
	// first; grid 42 in slot 0, its third.
	keys[300], keys[7], keys[0] = 42, 41, 43
	put(7, 0, base, base+500, base+4000)
	put(7, 1, base+100, base+600, base+3500)
	put(300, 0, base+1000, base+4200, base+6000)
	put(300, 2047, base+1200, base+4300, base+6500)
	put(0, 3, base+5000, base+6800, base+9000)
	sp, err := spans(keys, recs, []string{"gemv_q8_1", "rope_kv", "gemv_q8_1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []span{
		{name: "gemv_q8_1", blocks: 2, start: 0, lastStart: 100, released: 500, end: 4000},
		{name: "rope_kv", blocks: 2, start: 1000, lastStart: 1200, released: 4200, end: 6500},
		{name: "gemv_q8_1", blocks: 1, start: 5000, lastStart: 5000, released: 6800, end: 9000},
	}
	for i := range want {
		if sp[i] != want[i] {
			t.Errorf("span %d = %+v, want %+v", i, sp[i], want[i])
		}
	}
	if tick := timerTick(recs); tick != 100 {
		t.Errorf("timer step %d ns, want 100", tick)
	}
	tab := timeline(sp, 100)
	for _, line := range []string{
		"3 launches, 9.0 µs from the first block's start to the last recorded block's exit (its thread 0's); working 8.0 µs, handoffs 0.5 µs in all (timer step 100 ns)",
		// gemv: waited 0.5 + 1.8, worked 3.5 + 2.2 of 8.0, handed off 6.8 − 6.5.
		"| gemv_q8_1 | 2 | 1 | 2.3 | 5.7 | 0.3 | 71.2% |",
		"| rope_kv | 1 | 2 | 3.2 | 2.3 | 0.2 | 28.8% |",
		"| 1 | rope_kv | 2 | 1.00 | 1.20 | 4.20 | 6.50 |",
	} {
		if !strings.Contains(tab, line) {
			t.Errorf("the timeline lacks %q:\n%s", line, tab)
		}
	}
	if strings.Contains(tab, "were recorded") {
		t.Errorf("no grid was cut, yet the table says so:\n%s", tab)
	}
	sp[0].blocks = traceBlocks
	if tab := timeline(sp, 100); !strings.Contains(tab, "| 0 | gemv_q8_1 | 2048+ |") || !strings.Contains(tab, "the first 2048 were recorded") {
		t.Errorf("a cut grid is not marked:\n%s", tab)
	}
	if _, err := spans(keys, recs, []string{"gemv_q8_1"}); err == nil || !strings.Contains(err.Error(), "holds 3 launches, the step made 1") {
		t.Errorf("a launch count that disagrees: %v", err)
	}
	keys[9] = 99
	if _, err := spans(keys, recs, []string{"a", "b", "c", "d"}); err == nil || !strings.Contains(err.Error(), "no block") {
		t.Errorf("a slot without blocks: %v", err)
	}
}
