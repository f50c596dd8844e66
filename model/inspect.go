package model

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/octet-dev/octet/model/gguf"
	"github.com/octet-dev/octet/model/tokenizer"
)

// Inspect writes a description of the GGUF file at path: its
// architecture and hyperparameters, tokenizer, tensor table and the
// provenance that octet's tools record (octet.* keys). A file that parses
// but cannot run is still described, with the reason it cannot run.
// full prints every metadata value; otherwise long arrays are summarised.
func Inspect(w io.Writer, path string, full bool) error {
	f, err := gguf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()

	fmt.Fprintf(tw, "file\t%s\n", path)
	fmt.Fprintf(tw, "format\tGGUF v%d, %s, %d tensors, %d metadata keys, alignment %d\n",
		f.Version, humanBytes(f.Size), len(f.Tensors), len(f.KV), f.Alignment)

	section(tw, "architecture")
	if c, err := ReadConfig(f); err != nil {
		fmt.Fprintf(tw, "runnable\tno: %v\n", err)
	} else {
		fmt.Fprintf(tw, "arch\t%s (%s)\n", c.Arch, c.Name)
		fmt.Fprintf(tw, "dim / layers\t%d / %d\n", c.Dim, c.Layers)
		fmt.Fprintf(tw, "heads / kv heads / head dim\t%d / %d / %d\n", c.Heads, c.KVHeads, c.HeadDim)
		fmt.Fprintf(tw, "ffn\t%s\n", widths(c.LayerFFN))
		fmt.Fprintf(tw, "context\t%d\n", c.ContextLength)
		fmt.Fprintf(tw, "rope\tdims %d, base %g, scale %g, %s, scaling %s\n", c.Rope.Dims, c.Rope.Base, c.Rope.FreqScale, ropeOrder(c.Rope.NeoX), c.Rope.Scaling)
		fmt.Fprintf(tw, "rms eps\t%g\n", c.NormEps)
	}

	section(tw, "tokenizer")
	if v, err := tokenizer.VocabFromGGUF(f); err != nil {
		fmt.Fprintf(tw, "tokenizer\tunusable: %v\n", err)
	} else {
		fmt.Fprintf(tw, "model / pre\t%s / %s\n", v.Model, v.Pre)
		fmt.Fprintf(tw, "tokens / merges\t%d / %d\n", len(v.Tokens), len(v.Merges))
		fmt.Fprintf(tw, "bos / eos / eot\t%s / %s / %s\n", tokName(v, v.BOS), tokName(v, v.EOS), tokName(v, v.EOT))
		fmt.Fprintf(tw, "add bos / eos / space prefix\t%v / %v / %v\n", v.AddBOS, v.AddEOS, v.AddSpacePrefix)
		fmt.Fprintf(tw, "chat template\t%v\n", v.ChatTemplate != "")
	}

	section(tw, "metadata")
	for _, kv := range f.KV {
		if !full && strings.HasPrefix(kv.Key, "tokenizer.") && kv.Value.Type == gguf.TypeArray {
			continue
		}
		s := kv.Value.String()
		if full {
			s = fmt.Sprint(kv.Value.Any())
		} else if len(s) > 100 {
			s = s[:100] + "…"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", kv.Key, kv.Value.Type, s)
	}

	section(tw, "provenance (octet.*)")
	found := false
	for _, kv := range f.KV {
		if strings.HasPrefix(kv.Key, "octet.") {
			fmt.Fprintf(tw, "%s\t%s\n", kv.Key, kv.Value)
			found = true
		}
	}
	if !found {
		fmt.Fprintln(tw, "none\t(not written by octet quantize/prune)")
	}

	section(tw, "tensors")
	fmt.Fprintln(tw, "name\ttype\tshape\tbytes")
	byType := map[gguf.TensorType]uint64{}
	var total uint64
	for _, t := range f.Tensors {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%d\n", t.Name, t.Type, t.Dims, t.Size)
		byType[t.Type] += t.Size
		total += t.Size
	}
	var types []string
	for t, n := range byType {
		types = append(types, fmt.Sprintf("%s %s", t, humanBytes(int64(n))))
	}
	sort.Strings(types)
	fmt.Fprintf(tw, "total\t%s\t(%s)\n", humanBytes(int64(total)), strings.Join(types, ", "))
	return nil
}

func section(w io.Writer, name string) { fmt.Fprintf(w, "\n[%s]\n", name) }

func ropeOrder(neox bool) string {
	if neox {
		return "neox order"
	}
	return "normal order"
}

func widths(ws []int) string {
	for _, w := range ws {
		if w != ws[0] {
			return fmt.Sprint(ws)
		}
	}
	return fmt.Sprint(ws[0])
}

func tokName(v *tokenizer.Vocab, id int32) string {
	if id < 0 || int(id) >= len(v.Tokens) {
		return "none"
	}
	return fmt.Sprintf("%d %q", id, v.Tokens[id])
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
