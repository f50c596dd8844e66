// Package tokenizer turns text into token ids and back, bit-for-bit as
// llama.cpp does for the tokenizers stored in GGUF files: SentencePiece
// ("llama"), byte-level BPE ("gpt2") and WordPiece ("bert").
//
// A Vocab is the raw tokenizer data of a GGUF file (tokenizer.ggml.*),
// read by VocabFromGGUF, written by Vocab.WriteGGUF, or imported from a
// Hugging Face tokenizer.json by VocabFromHF. New builds an immutable
// Tokenizer from it, safe for concurrent use; per-call scratch buffers come
// from sync.Pools.
//
// # Special tokens
//
// Encode first cuts the text on the texts of special tokens, longest first
// (llama.cpp's tokenizer_st_partition): each token in turn splits every raw
// fragment at all its occurrences. CONTROL and UNKNOWN tokens take part only
// with parseSpecial; USER_DEFINED tokens always do, as in llama.cpp and
// Hugging Face (mpt's whitespace-run tokens and deepseek's byte characters
// depend on this). A token with the LSTRIP/RSTRIP attribute eats the ASCII
// whitespace before/after it. The raw fragments are then tokenized by the
// model's algorithm and the special fragments emit their id.
//
// Token attributes start from tokenizer.ggml.token_type and get llama.cpp's
// load-time fixes, all keyed on token text or model name: end-of-generation
// texts (<|eot_id|>, <|im_end|>, <|end|>, <|endoftext|>, </s>, ...) and the
// FIM tokens become CONTROL (so they are not split out without
// parseSpecial), CONTROL tokens named "unused" become UNUSED, gpt-oss's
// <|channel|> family becomes USER_DEFINED, and, when general.name contains
// "phi-3"/"phi3", every special token except <s>, <unk> and <|endoftext|>
// gets RSTRIP (plus </s>). IsEOG is EOS, EOT, EOM and those text-recognised
// tokens, including FIM pad/repo/file-separator tokens, as in llama.cpp.
//
// # SentencePiece (model "llama")
//
// Spaces become U+2581; with add_space_prefix (the default) a U+2581 is
// prepended to every raw fragment that starts the text or follows a special
// token. The text is split into characters, then the adjacent pair whose
// concatenation is a token with the highest score is merged, repeatedly
// (ties: leftmost), with a priority queue whose stale entries are skipped.
// Every merged symbol is a token; a single character that is not becomes
// its <0xNN> byte tokens (byte fallback).
//
// Two things make this fast without changing the result. Merges of two
// tokens are looked up by the pair of ids in a table of every token that is
// the concatenation of two others. And when no token has a U+2581 right
// after another character (checked at New; true of every SentencePiece
// vocabulary seen), no merge can cross the point before a word's U+2581,
// so each word is merged on its own, with a small queue.
//
// Deviations, on inputs llama.cpp mishandles only: a character is taken
// from complete valid UTF-8 (llama.cpp trusts the lead byte and may swallow
// the next character into a byte-fallback symbol), so the tokens always
// render back to the input bytes; and a vocabulary without byte tokens gets
// one UNK per unknown character (llama.cpp throws).
//
// # Byte-level BPE (model "gpt2")
//
// The text is pre-tokenized by the regexes of its tokenizer.ggml.pre type
// (see bpePres; names and regexes are llama.cpp's), applied in sequence:
// each regex splits every piece of the previous step, and the text between
// matches is a piece of its own. Each piece's bytes are mapped to GPT-2's
// byte-to-unicode alphabet and merged from single characters by lowest
// merge rank (ties: leftmost). With ignore_merges (llama-bpe and
// relatives), a piece that is a token is emitted whole. A final symbol that
// is not a token emits the tokens of its bytes, dropping bytes that have
// none (as llama.cpp does).
//
// The regexes give what llama.cpp's give. GPT-2's, Llama 3's and Qwen 2's
// have hand-written splitters (llama.cpp has them for the first two and runs
// Qwen 2's through std::regex), and so have the simple class-run regexes
// that the default, starcoder, falcon and deepseek pre-tokenizers chain
// (\p{N}, \s?\p{L}+, [0-9][0-9][0-9], ...); a test and a fuzz target hold
// each splitter to its regex. The other regexes run on regexp2 over
// llama.cpp's "collapsed" text: every non-ASCII code point is replaced by a
// placeholder for its Unicode category (or by \v for whitespace) and \p{L},
// \p{N}, \p{P}, \p{M}, \p{S} become classes of the placeholder plus the
// ASCII members of the category; regexes with literal non-ASCII characters
// and no categories run on the code points themselves. A final '$' means
// end of piece. Unicode categories and White_Space come from Go's unicode
// package; unassigned code points count as "other", as in llama.cpp.
//
// Some byte-level vocabularies have no token for a few bytes (falcon for
// several control characters such as \v, starcoder for 0xF1 and the bytes
// that never occur in UTF-8); like llama.cpp, Encode drops those bytes.
//
// Deviation: an invalid UTF-8 byte is classified as U+FFFD but keeps its
// own byte (llama.cpp replaces it by U+FFFD's three bytes), so tokens render
// back to the input.
//
// # WordPiece (model "bert")
//
// Each code point is mapped to the first code point of its canonical
// decomposition (llama.cpp's per-code-point NFD table) when stripping
// accents, then: whitespace splits words; NUL, U+FFFD and control
// characters are dropped; combining marks are dropped when stripping
// accents; letters are lowercased; punctuation, ASCII symbols and CJK
// ideographs become one-character words. Each word, prefixed with U+2581
// (llama.cpp's GGUF stores word-initial pieces that way instead of marking
// continuations with "##"), is covered greedily by the longest matching
// token from the left; a word that cannot be covered becomes UNK. With
// addSpecial the sequence is framed by BOS ([CLS]) and SEP ([SEP]).
//
// # Decoding
//
// A token renders as in llama.cpp's token_to_piece: NORMAL tokens with
// U+2581 as space (SentencePiece, WordPiece) or with GPT-2's byte alphabet
// reversed (BPE), <0xNN> byte tokens as the byte, USER_DEFINED tokens
// verbatim, CONTROL and UNKNOWN tokens verbatim only when special is true.
//
// For SentencePiece, the space prefix that Encode adds is dropped again:
// the first token of a text and the token right after each BOS lose one
// leading space (llama2.c's rule; llama.cpp drops it from the very first
// token only, and keeps it when that token is a BOS it removes), so
// Decode(Encode(x, true, false), false) == x. Byte-level BPE and WordPiece
// add no prefix and strip nothing. Decode and NewDecoder take the
// MidText option to keep that space when continuing earlier text.
//
// Deviation: llama.cpp's clean_up_tokenization_spaces pass (which removes
// the space before "?", "'s" and the like for some BPE vocabularies) is not
// applied; decoding is lossless instead. Round trips are exact on valid
// UTF-8 for SentencePiece with byte fallback and for byte-level BPE whose
// vocabulary has a token for every byte of the text (special tokens written
// in the text come back with special = true). They
// are not for WordPiece, which lowercases, strips accents, drops control
// characters and spacing, and maps unknown words to [UNK].
//
// A Decoder never emits broken UTF-8: the bytes of an incomplete sequence
// are held until it completes, and each maximal invalid subsequence (the
// Unicode "substitution of maximal subparts" practice) becomes one U+FFFD,
// also for what Flush finds held. Decode is a Decoder run to the end, so
// the two always agree.
//
// # Metadata
//
// VocabFromGGUF applies llama.cpp's defaults when keys are absent: for
// "llama" BOS 1, EOS 2, UNK 0, add_bos and add_space_prefix on; for "gpt2"
// BOS = EOS = 11, add_bos only for the llama-bpe family (and chameleon);
// for "bert" BOS 101, UNK 100, SEP 102, PAD 0, MASK 103, add_bos and
// add_sep on, lowercase and strip_accents on. A default outside the
// vocabulary is disabled. An id key of 0xFFFFFFFF (or negative) means none;
// any other id outside the vocabulary is ignored in favour of the default,
// as llama.cpp does. The misspelled tokenizer.ggml.seperator_token_id is the
// key real files use. WriteGGUF writes the tokenizer.ggml.* keys (ids of -1
// are left out, the add_* flags always written) and tokenizer.chat_template;
// general.name, which the Phi-3 fix keys on, is left to the model writer.
//
// VocabFromHF imports byte-level BPE tokenizer.json files. The pre-tokenizer
// is recognised by its Split regex (Llama 3's -> "llama-bpe", Qwen 2/3's ->
// "qwen2") or, for a bare ByteLevel one, as "gpt-2". Added tokens become
// CONTROL when flagged special or shaped like <|...|>, USER_DEFINED
// otherwise; holes in the id space become "[PADn]" user-defined tokens.
// bos/eos/unk/pad, add_bos_token/add_eos_token and chat_template come from
// tokenizer_config.json when given; tokenizer.json's normalizer (Qwen's
// NFC) is not applied, as llama.cpp does not apply it either.
package tokenizer
