package pruning

import "math"

// rowScores writes the score of every weight of row into s: |w_j|, times
// norm[j] when norm is set (Wanda).
func rowScores(s []float64, row []float32, norm []float64) {
	for j, v := range row {
		s[j] = math.Abs(float64(v))
		if norm != nil {
			s[j] *= norm[j]
		}
	}
}

// zeroLowest sets to zero the n weights of row with the lowest scores (the
// lower index first among equal scores) and returns n.
func zeroLowest(row []float32, s []float64, n int, scratch []float64) int {
	if n <= 0 {
		return 0
	}
	if n >= len(row) {
		clear(row)
		return len(row)
	}
	scratch = append(scratch[:0], s...)
	thr := nthSmallest(scratch, n-1)
	below := 0
	for _, v := range s {
		if v < thr {
			below++
		}
	}
	ties := n - below // weights scored exactly thr to zero as well
	for j, v := range s {
		switch {
		case v < thr:
			row[j] = 0
		case v == thr && ties > 0:
			row[j] = 0
			ties--
		}
	}
	return n
}

// nthSmallest returns the k-th smallest value of a (0-based), reordering a
// (Hoare's selection).
func nthSmallest(a []float64, k int) float64 {
	lo, hi := 0, len(a)-1
	for lo < hi {
		p := a[lo+(hi-lo)/2]
		i, j := lo, hi
		for i <= j {
			for a[i] < p {
				i++
			}
			for a[j] > p {
				j--
			}
			if i <= j {
				a[i], a[j] = a[j], a[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return a[k]
		}
	}
	return a[k]
}

// zeroNM keeps the n highest-scored weights of every group of m
// consecutive weights of row and zeroes the rest; it returns the number
// zeroed. len(row) must be a multiple of m.
func zeroNM(row []float32, s []float64, n, m int) int {
	zeroed := 0
	for g := 0; g+m <= len(row); g += m {
		for drop := 0; drop < m-n; drop++ {
			lo := -1
			for j := g; j < g+m; j++ {
				if s[j] >= 0 && (lo < 0 || s[j] < s[lo]) {
					lo = j
				}
			}
			row[lo] = 0
			s[lo] = -1 // taken
			zeroed++
		}
	}
	return zeroed
}

// ValidNM reports whether every group of m consecutive values of every row
// (rows of cols values) has at most n nonzero values.
func ValidNM(data []float32, cols, n, m int) bool {
	if m <= 0 || cols%m != 0 {
		return false
	}
	for g := 0; g+m <= len(data); g += m {
		nz := 0
		for _, v := range data[g : g+m] {
			if v != 0 {
				nz++
			}
		}
		if nz > n {
			return false
		}
	}
	return true
}
