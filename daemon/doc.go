// Package daemon is the `octet serve` process: listeners (TCP and a Unix
// socket, or both from systemd socket activation), the OpenAI-compatible
// API over fasthttp, the model registry, metrics, and the lifecycle
// (readiness, watchdog, reload, graceful shutdown).
//
// Endpoints: POST /v1/completions and /v1/chat/completions (SSE with
// stream: true, usage with stream_options.include_usage), GET /v1/models
// and /v1/models/{id} (by name or alias), POST /tokenize and /detokenize
// (vLLM's shapes; llama.cpp's content field too), GET /health, GET /ready,
// GET /metrics, and OPTIONS on each (204 with Allow; a CORS preflight is
// answered for auth.allowed_origins, whose pages' answers, errors too,
// carry Access-Control-Allow-Origin); on the Unix socket only,
// GET /admin/status and POST /admin/reload, /admin/drain, /admin/resume.
//
// Decisions where the issue and the design are silent:
//   - Liveness and readiness: /health is 200 while the process serves HTTP
//     and every model's request loop that has work moves, and 503
//     {"status": "stalled"} naming the model when one has not for longer
//     than the watchdog allows (its interval, or 30 s without one). /ready is
//     200 only when a completion could succeed: at least one model live and
//     not draining; with no models it is 503 {"status": "no_models"} with
//     a message saying where to put GGUF files. systemd's READY=1 is still
//     sent with no models (the daemon is up; STATUS= says it has none), so
//     that a fresh install starts cleanly.
//   - Every response carries X-Request-Id: the client's, when it sent a
//     plain one (letters, digits, "-_.:", at most 128), or a new one. Every
//     request that ends in an error, and every generation, has one log line
//     that names it (request_id=, last on the line), with the client's
//     address. octet_requests_total counts every answer, refusals before
//     any handler (413, 431, 408) with endpoint "http", unknown paths with
//     "unknown" (connections over limits.max_connections, answered before
//     any request is read, in octet_connections_rejected_total instead);
//     octet_request_errors_total counts errors by their code. A removed
//     model's series are deleted once its last request has ended.
//   - Under systemd, when stderr is the journal (JOURNAL_STREAM), each log
//     line starts with its syslog priority ("<3>" for errors), which
//     journald stores, so that `journalctl -u octet -p warning` finds them.
//   - API keys guard TCP only, and there every path but /health and /ready
//     (and /metrics with auth.public_metrics, for a Prometheus scraping
//     without credentials); the scheme of "Authorization: Bearer KEY" is
//     case-insensitive. The Unix socket is guarded by its file mode and
//     group instead.
//   - model may be omitted when exactly one model is served.
//   - Sampling defaults are OpenAI's (temperature 1, top_p 1, no top-k or
//     min-p); top_k, min_p, repeat_penalty (or vLLM's repetition_penalty,
//     the same penalty; both with different values are a 400) and
//     ignore_eos are accepted as extensions. top_p 0 keeps only the
//     likeliest token (as top_k 1), what OpenAI and llama.cpp users expect
//     of it. A request without seed gets a random one.
//   - A prompt that fills the context is a 400 (context_length_exceeded);
//     max_tokens (or max_completion_tokens) beyond limits.max_tokens, and
//     then beyond the room left, is cut to it, and the answer ends with
//     finish_reason "length" (llama.cpp's behaviour; clients send 8192 or
//     more by default). Below 1 it is a 400.
//   - A generation still running at limits.request_timeout ends as an
//     answer cut there, finish_reason "length", streamed or not (llama.cpp's
//     t_max_predict_ms), with the log line's cut_by=request_timeout. One
//     that had produced no token yet (queued, or reading its prompt) is a
//     503 request_timeout with Retry-After: a 408 would have OpenAI's SDKs
//     retry it at once, tripling the work.
//   - Unknown JSON fields are ignored (clients send many); fields that
//     would change the answer in ways octet cannot honour (n > 16, tools,
//     tool_choice and functions, a response_format other than text,
//     json_object or json_schema, a schema octet cannot honour, best_of > 1,
//     a completion's suffix, vLLM's min_tokens > 0) are a 400 naming the
//     field.
//   - n (1-16) answers with n choices, each a sequence of its own in the
//     scheduler (queued and counted against per-key limits one by one),
//     choice i sampled with the seed plus i. They read the prompt once: the
//     batcher admits a request whose first prompt block a running one is
//     still reading only once that one has keyed the blocks they share in
//     the prefix cache (with prefix_cache on; clients sending one long
//     system prompt together gain the same). Such a request keeps its
//     place in line (those ranked below it go first only while a running
//     slot is left for it), its queue deadline does not count the wait, and
//     the prompt it waits for is read as a prompt alone (whole chunks). An n the engine could never
//     run at once (over max_running or max_running_per_key, or
//     max_queued_per_key) is a 400: choices run in waves would hold a
//     stream back and could outlive their queue deadline on an idle server.
//     A stream's headers wait until every choice has left the queue. A
//     stream's chunks carry the choice's index and each choice ends with
//     its own finishing chunk (with its timings); the usage, the tokens
//     metric and the queue-wait histogram count the prompt and the request
//     once. A choice that fails (its queue deadline, an unload, a backend
//     error) fails the request and cancels the others, before any byte of
//     a stream when the others are still queued: with n choices a client
//     gets n answers or an error.
//   - response_format {"type": "json_object"} holds the answer to one JSON
//     object (model/constrain): each step masks the tokens that cannot
//     continue one; the answer ends "stop" when the object closes (or, rarely,
//     when no token of the vocabulary can continue it), or is cut at
//     max_tokens ("length"); a stop string still cuts it where it occurs.
//     logprobs stay the model's own, unmasked. Whitespace between its tokens is one
//     space, or a newline and up to 20 spaces or tabs (llama.cpp's JSON
//     grammar's bound), so that a model cannot pad forever. The first such
//     request for a model makes the vocabulary's tables (36 ms for 32k
//     tokens, 160 ms for 100k, on the 2-core dev VM); a step's mask then
//     costs 0.05-0.3 ms.
//   - response_format {"type": "json_schema", "json_schema": {"schema":
//     …}} (OpenAI's structured outputs; llama.cpp's {"type":
//     "json_object", "schema": …} and json_schema, and vLLM's guided_json,
//     a schema or its text, too) holds the answer to the texts the
//     schema allows (model/constrain's CompileSchema, which lists what it
//     takes): a deterministic automaton over bytes, properties in the
//     schema's order (required ones always, no others, as OpenAI's strict
//     mode), compact whitespace (one space or none), a value the schema
//     leaves free nested at most 3 deep; minLength/maxLength up to 256
//     characters and minItems/maxItems up to 64 items are kept. Every
//     keyword is asserted: those beside anyOf, allOf, enum, const or $ref
//     are intersected with them (a product of automata); oneOf is taken as
//     anyOf; enum and const values are matched as written (1.0 is not 1).
//     The answer ends "stop" once complete. A keyword that would bound a
//     value in a way the automaton does not honour (pattern, minimum,
//     uniqueItems, …), a recursive $ref, contradicting parts, or a schema
//     whose automaton passes its bounds (16384 states, 16 MB of
//     construction) is a 400 saying which, never silently dropped; a
//     refused schema sent again is refused at once, and at most two
//     compile at a time. Compiling costs 0.13-0.3 ms for a schema of fixed
//     fields, 6 ms with a free value (2-core dev VM); the last 16 schemas
//     are kept with, per vocabulary, the masks of up to 256 states: the
//     first visit of a state makes its mask (inside a string from the
//     vocabulary's tokens of whole characters, by their count: 0.16-0.6
//     ms; elsewhere a walk of the trie), later ones copy it (27 µs at 32k
//     tokens, 89 µs at 100k; json_object's mask in a string: 47 µs,
//     199 µs).
//   - vLLM's guided_choice (a list of texts) holds the answer to exactly
//     one of them, as written (not JSON), ending "stop" there (or, for a
//     text that begins another, where the model ends it). Two ways of
//     holding an answer to a form in one request are a 400.
//   - logit_bias (token ids in decimal to a bias in [-100, 100]) is added to
//     the logits after the penalties, greedy or sampled, as OpenAI's; an id
//     outside the model's vocabulary is a 400. logprobs stay the model's own.
//   - A completion's echo begins its text with the prompt (as the decoder
//     renders the prompt's tokens); with logprobs, its logprobs begin with
//     one entry per prompt token, the first's null, each the token's
//     log-probability given those before it: how lm-eval-harness's
//     local-completions scores a text (it sends a batch of one token-id
//     prompt, which is taken). Such a prompt is computed row by row, without
//     the prefix cache; a step of it holds rows × vocabulary logits; of n
//     choices, choice 0 scores it for all. max_tokens 0 is taken with echo
//     (OpenAI's legacy scoring call): the prompt, scored, and nothing
//     generated (finish_reason "length").
//   - A completion's logprobs end with the end-of-generation token that
//     ended it (its text "", no characters, not counted in
//     completion_tokens), as OpenAI's and vLLM's do: lm-eval-harness scores
//     a continuation by every entry but the last, and would drop the
//     continuation's own last token without it. A chat answer's have no
//     such entry (as OpenAI's).
//   - logprobs follow OpenAI's two shapes: chat's logprobs: true with
//     top_logprobs 0–20 ({"content": [{token, logprob, bytes,
//     top_logprobs}]}), completions' logprobs: N, 0–5 (tokens,
//     token_logprobs, top_logprobs, text_offset, offsets in characters into
//     the completion). The values are the model's own distribution (log-softmax
//     of the raw logits), independent of temperature and penalties; a
//     stream carries each token's entry in the chunk that carries its text.
//   - Chat prompts are tokenized with special-token parsing (the template's
//     markers must become their tokens); completion prompts without it.
//   - Every response carries "timings" (queue, prompt, TTFT, generation,
//     tokens/s); a stream carries them in its finishing chunk. With
//     include_usage, every chunk before the usage chunk has "usage": null,
//     as OpenAI's.
//   - An error answer keeps the headers set before it that still hold:
//     Allow (405) and X-Octet-Model-Sha256.
//   - A client that disconnects is noticed by a write that fails or by a
//     poll of its socket for POLLRDHUP every 50 ms, and its generation is
//     cancelled.
//   - A stream's 200 and headers wait until the engine takes the request
//     from its queue (its role chunk comes then): a streamed request refused
//     while queued (queue deadline, request timeout, shutdown) gets
//     its error's status, body and Retry-After as a whole answer would, so
//     that clients retry it (llama.cpp's server did the same for a stream
//     whose first result is an error in its PR 16486).
//   - Errors after a stream has started are sent as a last SSE event
//     {"error": {...}} followed by data: [DONE]; the status logged and
//     counted is the error's (499 when the client left).
//   - Hot reload (reload.go, watch.go): the models folder and the config
//     folder are watched (fsnotify on the folders, 100 ms debounce, a rescan
//     every 5 s as a backstop); SIGHUP and POST /admin/reload run the same
//     reload now, and also retry files that failed before.
//   - A model file is taken when its (size, mtime, inode) has not changed
//     for 500 ms and its GGUF header, tensor table and size agree; a rename
//     into place takes the same path. It is read into memory of its own
//     (hashed on the way, re-checked unchanged after), so a served model
//     never reads a file being rewritten or truncated under it, and its
//     sha256 names exactly the bytes served. It is parsed, loaded on the
//     backend, run for a few tokens (finite logits), and, when it replaces
//     a model, compared with it by eval.Compare on a held-out text and
//     judged by the gate of its sidecar NAME.toml (default: eval's). Then
//     it is swapped in; requests that started on the old version finish on
//     it (refcount), and X-Octet-Model-Sha256 says which version answered.
//   - A file that fails (incomplete, corrupt, refused by the gate) is
//     reported once and retried when it changes; the live model stays. A
//     replacement with the same bytes (a touch, a copy of the same file)
//     changes nothing. A removed file retires its model.
//   - A config that does not parse or validate changes nothing; one whose
//     parsed form did not change is not applied. Log level, API keys and
//     per-request limits apply at once; tuning.toml is applied by
//     scheduler.Tunable.Retune, or, for the KV cache's shape or an engine
//     that cannot retune, by starting each model again beside the running
//     one and swapping it in. Listener, models, backend, connection-limit
//     and log-format changes are reported as needing a restart and keep
//     their running values.
//   - Every outcome is a log line, octet_reload_total{kind,result}, and the
//     last one is in the STATUS= line; systemd gets RELOADING=1 and then
//     READY=1 around each reload that does something.
package daemon
