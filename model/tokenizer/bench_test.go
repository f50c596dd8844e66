package tokenizer

import (
	"strings"
	"testing"
)

// benchText is about 4 KB of English prose.
var benchText = func() string {
	const para = `The history of computing is a story of people who refused to accept that a
task was too tedious to automate. In 1837, Charles Babbage described the Analytical
Engine, a machine that could be programmed with punched cards; Ada Lovelace wrote what
is often called the first program for it, noting that "the engine might compose elaborate
and scientific pieces of music of any degree of complexity." A century later, Alan Turing
asked whether machines could think, and by the 1950s computers filled entire rooms,
consuming 150 kilowatts while performing 5,000 additions per second. Today a phone in
your pocket does billions of operations each second, and it doesn't even get warm! `
	var b strings.Builder
	for b.Len() < 4096 {
		b.WriteString(para)
	}
	return b.String()[:4096]
}()

func BenchmarkEncode(b *testing.B) {
	for _, c := range []struct {
		name string
		load func(testing.TB) *Tokenizer
	}{
		{"spm-llama", func(t testing.TB) *Tokenizer { return ggufTokenizer(t, "llama-spm") }},
		{"bpe-gpt2", func(t testing.TB) *Tokenizer { return ggufTokenizer(t, "gpt-2") }},
		{"bpe-llama3", func(t testing.TB) *Tokenizer { return hfTok(t, "llama3") }},
		{"bpe-qwen2", func(t testing.TB) *Tokenizer { return hfTok(t, "qwen3") }},
		{"bpe-starcoder", func(t testing.TB) *Tokenizer { return ggufTokenizer(t, "starcoder") }},
		{"bpe-falcon", func(t testing.TB) *Tokenizer { return ggufTokenizer(t, "falcon") }},
		{"bpe-deepseek-coder", func(t testing.TB) *Tokenizer { return ggufTokenizer(t, "deepseek-coder") }},
		{"bpe-deepseek-llm", func(t testing.TB) *Tokenizer { return ggufTokenizer(t, "deepseek-llm") }},
		{"wpm-bert", func(t testing.TB) *Tokenizer { return ggufTokenizer(t, "bert-bge") }},
	} {
		b.Run(c.name, func(b *testing.B) {
			tk := c.load(b)
			b.SetBytes(int64(len(benchText)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				tk.Encode(benchText, true, false)
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	tk := hfTok(b, "llama3")
	ids := tk.Encode(benchText, true, false)
	b.SetBytes(int64(len(benchText)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		d := tk.NewDecoder(false)
		for _, id := range ids {
			d.Add(id)
		}
		d.Flush()
	}
}
