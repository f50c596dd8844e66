package cpu

import (
	"runtime"
	"strings"

	"golang.org/x/sys/cpu"
)

// candidate is a library variant and whether this CPU can run it.
type candidate struct {
	variant string
	ok      bool
	why     string // the features that decide it
}

// candidates lists the variants built for this architecture, best first,
// with what the CPU (and OS: AVX-512 needs its register state saved)
// offers for each.
func candidates() []candidate {
	switch runtime.GOARCH {
	case "amd64":
		x := cpu.X86
		avx2 := x.HasAVX2 && x.HasFMA
		return []candidate{
			{"avx512", avx2 && x.HasAVX512F && x.HasAVX512BW && x.HasAVX512VL && x.HasAVX512DQ && x.HasAVX512VNNI,
				features("AVX-512", map[string]bool{"F": x.HasAVX512F, "BW": x.HasAVX512BW, "VL": x.HasAVX512VL, "DQ": x.HasAVX512DQ, "VNNI": x.HasAVX512VNNI})},
			{"avxvnni", avx2 && x.HasAVXVNNI, features("", map[string]bool{"AVX2+FMA": avx2, "AVX-VNNI": x.HasAVXVNNI})},
			{"avx2", avx2, features("", map[string]bool{"AVX2": x.HasAVX2, "FMA": x.HasFMA})},
			{"portable", true, "any x86-64"},
		}
	case "arm64":
		return []candidate{
			{"neon-dotprod", cpu.ARM64.HasASIMDDP, features("", map[string]bool{"NEON dot product": cpu.ARM64.HasASIMDDP})},
			{"portable", true, "any arm64"},
		}
	}
	return []candidate{{"portable", true, "any " + runtime.GOARCH}}
}

// features describes a set of CPU features as "has X, Y; lacks Z".
func features(prefix string, fs map[string]bool) string {
	var has, lacks []string
	for _, name := range []string{"F", "BW", "VL", "DQ", "VNNI", "AVX2+FMA", "AVX-VNNI", "AVX2", "FMA", "NEON dot product"} {
		ok, present := fs[name]
		if !present {
			continue
		}
		if prefix != "" {
			name = prefix + " " + name
		}
		if ok {
			has = append(has, name)
		} else {
			lacks = append(lacks, name)
		}
	}
	s := ""
	if len(has) > 0 {
		s = "CPU has " + strings.Join(has, ", ")
	}
	if len(lacks) > 0 {
		if s != "" {
			s += "; "
		}
		s += "CPU lacks " + strings.Join(lacks, ", ")
	}
	return s
}

// Variants lists the variants this CPU can execute, best first.
func Variants() []string {
	var out []string
	for _, c := range candidates() {
		if c.ok {
			out = append(out, c.variant)
		}
	}
	return out
}
