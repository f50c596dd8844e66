package daemon

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// apiError is an error answered in OpenAI's shape:
// {"error": {"message", "type", "param", "code"}}.
type apiError struct {
	Status     int
	Type       string
	Param      string
	Code       string
	Msg        string
	RetryAfter time.Duration // sent as Retry-After (429, 503)
}

func (e *apiError) Error() string { return e.Msg }

type errorBody struct {
	Error errorObject `json:"error"`
}

type errorObject struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func (e *apiError) body() []byte {
	o := errorObject{Message: e.Msg, Type: e.Type}
	if e.Param != "" {
		o.Param = &e.Param
	}
	if e.Code != "" {
		o.Code = &e.Code
	}
	b, _ := json.Marshal(errorBody{Error: o})
	return b
}

// keptHeaders survive an error written over a response begun: they say
// who answers (Server, X-Octet-Model-Sha256), which request it was
// (X-Request-Id), how to ask (a 405's Allow) or which web pages may read
// the answer (CORS).
var keptHeaders = [...]string{"Server", "Allow", "X-Octet-Model-Sha256", "X-Request-Id",
	"Access-Control-Allow-Origin", "Access-Control-Expose-Headers", "Vary"}

// write sends e as the response, in place of whatever was set before but
// keptHeaders, and keeps e on ctx for the request's count and log line
// (errorOf).
func (e *apiError) write(ctx *fasthttp.RequestCtx) {
	var kept [len(keptHeaders)]string
	for i, h := range keptHeaders {
		kept[i] = string(ctx.Response.Header.Peek(h))
	}
	ctx.Response.Reset()
	for i, h := range keptHeaders {
		if kept[i] != "" {
			ctx.Response.Header.Set(h, kept[i])
		}
	}
	e.fill(&ctx.Response)
	ctx.SetUserValue(apiErrorValue, e)
}

// fill makes r the answer of e: its status, Retry-After and body.
func (e *apiError) fill(r *fasthttp.Response) {
	r.SetStatusCode(e.Status)
	r.Header.SetContentType("application/json")
	if e.RetryAfter > 0 {
		r.Header.Set("Retry-After", strconv.Itoa(int(e.RetryAfter/time.Second)))
	}
	r.SetBody(e.body())
}

// apiErrorValue is the request's user value holding the error it was
// answered with.
const apiErrorValue = "octet.apierror"

// errorOf is the error ctx was answered with (nil when none).
func errorOf(ctx *fasthttp.RequestCtx) *apiError {
	e, _ := ctx.UserValue(apiErrorValue).(*apiError)
	return e
}

func errNotFound(what string) *apiError {
	return &apiError{Status: 404, Type: "invalid_request_error", Code: "not_found", Msg: what}
}

func errModelNotFound(name string, have []string) *apiError {
	msg := "the model " + strconv.Quote(name) + " does not exist"
	if len(have) > 0 {
		msg += "; models served here: " + joinQuoted(have)
	}
	return &apiError{Status: 404, Type: "invalid_request_error", Param: "model", Code: "model_not_found", Msg: msg}
}

// retryLater is e, for a request the model l cannot take now, with when
// to retry: Retry-After from its engine's drain rate, said in the message
// too.
func retryLater(l *Loaded, e *apiError) *apiError {
	e.RetryAfter = l.Engine.Stats().RetryAfter()
	e.Msg = fmt.Sprintf("%s; retry in %d s", e.Msg, int(e.RetryAfter/time.Second))
	return e
}

func errUnavailable(code, msg string) *apiError {
	return &apiError{Status: 503, Type: "service_unavailable", Code: code, Msg: msg}
}

func errInternal(msg string) *apiError {
	return &apiError{Status: 500, Type: "server_error", Code: "internal_error", Msg: msg}
}

func joinQuoted(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ", "
		}
		out += strconv.Quote(x)
	}
	return out
}
