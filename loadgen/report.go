package loadgen

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// WriteTable prints one row per level.
func WriteTable(w io.Writer, levels []Level) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "conc\treqs\terrors\tTTFT p50\tp90\tp99 ms\tITL p50\tp99 ms\te2e p50\tp99 ms\ttok/s\ttok/s/req\t")
	for _, l := range levels {
		if !l.answered() { // no latency was measured
			fmt.Fprintf(tw, "%d\t%d\t%d\t–\t–\t–\t–\t–\t–\t–\t%.1f\t–\t\n", l.Concurrency, l.Requests, l.Errors, l.TokensPerS)
			continue
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%.0f\t%.0f\t%.0f\t%.1f\t%.1f\t%.0f\t%.0f\t%.1f\t%.1f\t\n", l.Concurrency, l.Requests, l.Errors,
			l.TTFTP50, l.TTFTP90, l.TTFTP99, l.ITLP50, l.ITLP99, l.E2EP50, l.E2EP99, l.TokensPerS, l.PerReqTokS)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, l := range levels {
		if l.Errors == 0 {
			continue
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(l.ErrorsBy)) {
			parts = append(parts, fmt.Sprintf("%s ×%d", k, l.ErrorsBy[k]))
		}
		fmt.Fprintf(w, "concurrency %d errors: %s\n", l.Concurrency, strings.Join(parts, ", "))
	}
	return nil
}

// answered reports whether some request of l succeeded: its latency
// figures mean something (they are 0 otherwise).
func (l Level) answered() bool { return l.Errors < l.Requests }

// WriteSVG plots latency against aggregate throughput, one point per
// level that had an answer (labelled with its concurrency): TTFT p50 and p99, and end-to-end
// p50, in milliseconds on the y axis, tokens/s on the x axis.
func WriteSVG(w io.Writer, levels []Level) error {
	levels = slices.DeleteFunc(slices.Clone(levels), func(l Level) bool { return !l.answered() })
	const W, H, left, right, top, bottom = 640, 400, 70, 20, 30, 50
	xmax, ymax := 1.0, 1.0
	for _, l := range levels {
		xmax = max(xmax, l.TokensPerS)
		ymax = max(ymax, l.TTFTP99, l.E2EP50)
	}
	xmax, ymax = nice(xmax), nice(ymax)
	x := func(v float64) float64 { return left + v/xmax*(W-left-right) }
	y := func(v float64) float64 { return H - bottom - v/ymax*(H-top-bottom) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14">latency vs throughput (points: concurrency)</text>`+"\n", left)
	for i := 0; i <= 4; i++ {
		xv, yv := xmax*float64(i)/4, ymax*float64(i)/4
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x(xv), top, x(xv), H-bottom)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(yv), W-right, y(yv))
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%g</text>`+"\n", x(xv), H-bottom+16, xv)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n", left-6, y(yv)+4, yv)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">aggregate completion tokens/s</text>`+"\n", (left+W-right)/2, H-12)
	fmt.Fprintf(&b, `<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">latency, ms</text>`+"\n", (top+H-bottom)/2, (top+H-bottom)/2)
	series := []struct {
		name, color string
		v           func(Level) float64
	}{
		{"TTFT p50", "#1f77b4", func(l Level) float64 { return l.TTFTP50 }},
		{"TTFT p99", "#ff7f0e", func(l Level) float64 { return l.TTFTP99 }},
		{"e2e p50", "#2ca02c", func(l Level) float64 { return l.E2EP50 }},
	}
	for si, s := range series {
		var pts []string
		for _, l := range levels {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(l.TokensPerS), y(s.v(l))))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", s.color, strings.Join(pts, " "))
		for _, l := range levels {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x(l.TokensPerS), y(s.v(l)), s.color)
			if si == 0 {
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%d</text>`+"\n", x(l.TokensPerS)+5, y(s.v(l))-5, l.Concurrency)
			}
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s">%s</text>`+"\n", W-right-90, top+16*(si+1), s.color, s.name)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// nice rounds v up to 1, 2 or 5 times a power of ten.
func nice(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}
