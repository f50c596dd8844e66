package pruning

import (
	"fmt"
	"math"
)

// refit returns the k×n matrix R (row-major) that best rebuilds a matrix
// from the kept columns S of its input: a row w of the matrix becomes
// R·w, the least-squares fit of the removed columns' contribution over
// the calibration activations X (min ‖X w − X_S w'‖², so
// w' = G_SS⁻¹ G_S: w with G = XᵀX).
func refit(gram []float64, n int, keep []int) ([]float64, error) {
	k := len(keep)
	a := make([]float64, k*k)
	b := make([]float64, k*n)
	for i, r := range keep {
		for j, c := range keep {
			a[i*k+j] = gram[r*n+c]
		}
		copy(b[i*n:(i+1)*n], gram[r*n:(r+1)*n])
	}
	return solveRidge(a, b, k, n)
}

// solveRidge returns (A + λI)⁻¹ B for the symmetric positive semidefinite
// k×k matrix A and the k×n matrix B, with λ 1% of A's mean diagonal so that
// a rank-deficient A still solves. A is overwritten.
func solveRidge(a, b []float64, k, n int) ([]float64, error) {
	var diag float64
	for i := 0; i < k; i++ {
		diag += a[i*k+i]
	}
	ridge := 0.01 * diag / float64(k)
	if !(ridge > 0) {
		return nil, fmt.Errorf("pruning: the calibration activations are all zero")
	}
	for i := 0; i < k; i++ {
		a[i*k+i] += ridge
	}
	if err := cholesky(a, k); err != nil {
		return nil, err
	}
	out := make([]float64, k*n)
	col := make([]float64, k)
	for c := 0; c < n; c++ {
		for i := 0; i < k; i++ {
			col[i] = b[i*n+c]
		}
		cholSolve(a, k, col)
		for i := range col {
			out[i*n+c] = col[i]
		}
	}
	return out, nil
}

// cholesky factors the symmetric positive definite k×k matrix a in place
// into L (lower triangle, a = L·Lᵀ).
func cholesky(a []float64, k int) error {
	for j := 0; j < k; j++ {
		d := a[j*k+j]
		for p := 0; p < j; p++ {
			d -= a[j*k+p] * a[j*k+p]
		}
		if d <= 0 || math.IsNaN(d) {
			return fmt.Errorf("pruning: Gram matrix is not positive definite")
		}
		d = math.Sqrt(d)
		a[j*k+j] = d
		for i := j + 1; i < k; i++ {
			s := a[i*k+j]
			for p := 0; p < j; p++ {
				s -= a[i*k+p] * a[j*k+p]
			}
			a[i*k+j] = s / d
		}
	}
	return nil
}

// cholSolve solves L·Lᵀ·x = b in place for the factor from cholesky.
func cholSolve(l []float64, k int, b []float64) {
	for i := 0; i < k; i++ {
		s := b[i]
		for p := 0; p < i; p++ {
			s -= l[i*k+p] * b[p]
		}
		b[i] = s / l[i*k+i]
	}
	for i := k - 1; i >= 0; i-- {
		s := b[i]
		for p := i + 1; p < k; p++ {
			s -= l[p*k+i] * b[p]
		}
		b[i] = s / l[i*k+i]
	}
}
