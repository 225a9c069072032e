package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/daftka/daftka"
)

// Options configures the gateway. The zero value serves a single-node
// developer: every zero field takes its default.
type Options struct {
	// MaxBodyBytes bounds a request body; a larger one is a 413
	// body_too_large. Default 8 MiB.
	MaxBodyBytes int64
	// MaxBatchRecords bounds the records of one produce request
	// (producer.max_batch_records); more is a 400 too_many_records.
	// Default 1000.
	MaxBatchRecords int
	// RequestTimeout bounds how long a produce or an offset commit may wait
	// for its quorum; past it the answer is 503 timeout (outcome unknown).
	// A fetch may wait its wait_ms plus RequestTimeout. Default 5 s.
	RequestTimeout time.Duration
	// Logger receives one access log line per request, and the causes of
	// 5xx answers. Nil discards.
	Logger *slog.Logger
	// Metrics receives the gateway's metrics and is what GET /metrics
	// writes (with the process metrics). Nil is a private set.
	Metrics *metrics.Set
}

// Defaults of Options.
const (
	DefaultMaxBodyBytes    = 8 << 20
	DefaultMaxBatchRecords = 1000
	DefaultRequestTimeout  = 5 * time.Second
)

// readyTimeout bounds GET /readyz.
const readyTimeout = 2 * time.Second

// gateway is the HTTP handler over one daftka.API.
type gateway struct {
	api  daftka.API
	opts Options
	log  *slog.Logger
	met  *metrics.Set
	mux  *http.ServeMux

	// paths is every served path pattern with its methods, for requests
	// ServeMux cannot route: a dot segment in a name position.
	paths []servedPath
	// uncounted leaves requests out of the request metrics (the metrics
	// listener, MetricsHandler).
	uncounted bool

	// shutdown holds, per server, a channel closed when it begins
	// Shutdown: streams end on it (shutdownSignal).
	shutMu   sync.Mutex
	shutdown map[*http.Server]chan struct{}
}

// servedPath is one path pattern, split into segments, and the methods it
// serves (HEAD included with GET), sorted and joined as for Allow.
type servedPath struct {
	path    string
	segs    []string
	allowed string
}

// New returns the HTTP handler of the v1 JSON API (api-v1.md) over api. The
// handler is stateless: every request goes to api.
func New(api daftka.API, opts Options) http.Handler {
	g := newGateway(api, opts)
	g.routes(g.routeList())
	return g
}

// MetricsHandler returns the handler of a node's metrics listener: GET (and
// HEAD) /metrics, writing opts.Metrics and the process metrics, behind the
// same middleware as the API — X-Request-Id on every answer, problem
// documents for an unknown path (404) or method (405, with Allow), panic
// recovery, the access log. Its requests are not counted in
// daftka_gateway_requests_total: that counts the API's listener.
func MetricsHandler(opts Options) http.Handler {
	g := newGateway(nil, opts)
	g.uncounted = true
	g.routes([]route{{"GET", "/metrics", g.metrics}})
	return g
}

func newGateway(api daftka.API, opts Options) *gateway {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.MaxBatchRecords <= 0 {
		opts.MaxBatchRecords = DefaultMaxBatchRecords
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	g := &gateway{api: api, opts: opts, log: opts.Logger, met: opts.Metrics, mux: http.NewServeMux()}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.met == nil {
		g.met = metrics.NewSet()
	}
	return g
}

// route is one endpoint: a method and a ServeMux path pattern.
type route struct {
	method, path string
	h            http.HandlerFunc
}

// routeList is every endpoint the gateway serves.
func (g *gateway) routeList() []route {
	rs := []route{
		{"POST", "/v1/topics", g.createTopic},
		{"GET", "/v1/topics", g.listTopics},
		{"GET", "/v1/topics/{topic}", g.describeTopic},
		{"DELETE", "/v1/topics/{topic}", g.deleteTopic},
		{"PATCH", "/v1/topics/{topic}/config", g.patchConfig},
		{"GET", "/v1/topics/{topic}/partitions/{partition}", g.describePartition},
		{"POST", "/v1/topics/{topic}/records", g.produce},
		{"GET", "/v1/topics/{topic}/partitions/{partition}/records", g.fetch},
		{"GET", "/v1/topics/{topic}/partitions/{partition}/records/stream", g.stream},
		{"GET", "/v1/topics/{topic}/partitions/{partition}/offsets", g.offsetForTime},
		{"POST", "/v1/groups/{group}/offsets", g.commitOffsets},
		{"GET", "/v1/groups/{group}/offsets", g.groupOffsets},
		{"GET", "/v1/cluster", g.cluster},
		{"GET", "/healthz", g.healthz},
		{"GET", "/readyz", g.readyz},
		{"GET", "/metrics", g.metrics},
	}
	return rs
}

// routes registers the endpoints rs. Each path also gets a method-less
// pattern answering 405 (with Allow) for the methods it does not serve, and
// "/" answers 404: ServeMux's own 404 and 405 answers are plain text.
func (g *gateway) routes(rs []route) {
	allow := map[string][]string{}
	var paths []string
	for _, r := range rs {
		if _, ok := allow[r.path]; !ok {
			paths = append(paths, r.path)
		}
		allow[r.path] = append(allow[r.path], r.method)
		if r.method == "GET" {
			allow[r.path] = append(allow[r.path], "HEAD")
		}
		g.mux.Handle(r.method+" "+r.path, g.withRoute(r.path, r.h))
	}
	for _, p := range paths {
		methods := allow[p]
		sort.Strings(methods)
		allowed := strings.Join(methods, ", ")
		g.paths = append(g.paths, servedPath{path: p, segs: strings.Split(p, "/"), allowed: allowed})
		g.mux.Handle(p, g.withRoute(p, func(w http.ResponseWriter, r *http.Request) {
			g.methodNotAllowed(w, r, p, allowed)
		}))
	}
	g.mux.Handle("/", http.HandlerFunc(g.notFound))
}

func (g *gateway) methodNotAllowed(w http.ResponseWriter, r *http.Request, path, allowed string) {
	w.Header().Set("Allow", allowed)
	g.writeProblem(w, r, epDefault, newProblem(daftka.CodeMethodNotAllowed,
		fmt.Sprintf("%s is not served on %s; allowed: %s", r.Method, path, allowed)))
}

// dotName answers a request whose path is not clean only because a topic
// or group name in it is "." or ".." (GET /v1/topics/%2E%2E): api-v1.md
// makes a bad name a 400, and ServeMux would clean such a path into
// another one. It answers as the route would — 405 for a method the path
// does not serve, else 400 with the name's code — and reports true; for any
// other unclean path (empty segments, a trailing slash, dot segments
// elsewhere) it does nothing and reports false.
func (g *gateway) dotName(w http.ResponseWriter, r *http.Request) bool {
	segs := strings.Split(r.URL.Path, "/")
	for _, sp := range g.paths {
		if len(sp.segs) != len(segs) {
			continue
		}
		var bad *problem
		match := true
		for i, ps := range sp.segs {
			v := segs[i]
			switch ps {
			case "{topic}", "{group}":
				if v == "" {
					match = false
				} else if (v == "." || v == "..") && bad == nil {
					if ps == "{topic}" {
						bad = newProblem(daftka.CodeInvalidTopicName, nameRule("topic name", v))
					} else {
						bad = newProblem(daftka.CodeInvalidGroupName, nameRule("group name", v))
					}
				}
			case "{partition}":
				match = v != "" && v != "." && v != ".."
			default:
				match = v == ps
			}
			if !match {
				break
			}
		}
		if !match || bad == nil {
			continue
		}
		if info := infoFrom(r.Context()); info != nil {
			info.route = sp.path
		}
		served := false
		for _, m := range strings.Split(sp.allowed, ", ") {
			served = served || m == r.Method
		}
		if !served {
			g.methodNotAllowed(w, r, sp.path, sp.allowed)
		} else {
			g.writeProblem(w, r, epDefault, bad)
		}
		return true
	}
	return false
}

func (g *gateway) notFound(w http.ResponseWriter, r *http.Request) {
	g.writeProblem(w, r, epDefault, newProblem(daftka.CodeNotFound, "no such path"))
}

// withRoute records the route of a request for the access log and metrics,
// and the topic / partition / group of its path.
func (g *gateway) withRoute(route string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if info := infoFrom(r.Context()); info != nil {
			info.route = route
			info.topic = r.PathValue("topic")
			info.partition = r.PathValue("partition")
			info.group = r.PathValue("group")
		}
		h(w, r)
	})
}

// reqInfo is what the access log and the metrics need to know about a
// request; handlers fill it in as they learn it.
type reqInfo struct {
	requestID string
	route     string
	topic     string
	partition string
	group     string
	bytesIn   int64
	code      daftka.Code // of a problem answer
	cause     error       // of a 5xx answer, logged
}

type infoKey struct{}

func infoFrom(ctx context.Context) *reqInfo {
	info, _ := ctx.Value(infoKey{}).(*reqInfo)
	return info
}

// ServeHTTP is the outer middleware: request id, path sanity, panic
// recovery, access log and metrics, around the router.
func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	info := &reqInfo{requestID: requestID(r.Header.Get("X-Request-Id")), route: "unmatched"}
	r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
	w.Header().Set("X-Request-Id", info.requestID)
	rec := &recorder{ResponseWriter: w}

	aborted := g.serveRecovering(rec, r)

	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	elapsed := time.Since(start)
	g.accessLog(r, info, status, rec.bytes, elapsed)
	if !g.uncounted {
		method := r.Method
		switch method {
		case "GET", "HEAD", "POST", "PATCH", "DELETE", "PUT", "OPTIONS":
		default:
			method = "other" // bound the label's values
		}
		g.met.GetOrCreateCounter(fmt.Sprintf(`daftka_gateway_requests_total{route=%q,method=%q,status="%d"}`, info.route, method, status)).Inc()
		g.met.GetOrCreateHistogram(fmt.Sprintf(`daftka_gateway_request_duration_seconds{route=%q}`, info.route)).Update(elapsed.Seconds())
	}
	if aborted {
		// A panic after the answer had begun: the only honest thing left
		// is to cut the connection.
		panic(http.ErrAbortHandler)
	}
}

// serveRecovering routes r, turning a panic into a logged 500 problem (or,
// when the answer has begun, into an aborted connection: reported true).
func (g *gateway) serveRecovering(w *recorder, r *http.Request) (aborted bool) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v == http.ErrAbortHandler {
			aborted = true
			return
		}
		info := infoFrom(r.Context())
		info.cause = fmt.Errorf("panic: %v", v)
		g.log.LogAttrs(r.Context(), slog.LevelError, "gateway: handler panic",
			slog.String("request_id", info.requestID), slog.String("route", info.route),
			slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
		if w.status != 0 {
			aborted = true
			return
		}
		h := w.Header() // drop what the handler set for the answer it meant
		for k := range h {
			if k != "X-Request-Id" {
				delete(h, k)
			}
		}
		g.writeProblem(w, r, epDefault, &problem{Code: daftka.CodeInternal, Detail: "internal error"})
	}()
	if p := path.Clean(r.URL.Path); r.URL.Path != p || !strings.HasPrefix(p, "/") {
		// ServeMux would answer a redirect to the cleaned path; a path
		// with dot segments, empty segments or a trailing slash names no
		// resource here — unless the dot segment is a topic or group
		// name, which is a bad name (400).
		if !g.dotName(w, r) {
			g.notFound(w, r)
		}
		return false
	}
	g.mux.ServeHTTP(w, r)
	return false
}

func (g *gateway) accessLog(r *http.Request, info *reqInfo, status int, bytesOut int64, elapsed time.Duration) {
	level := slog.LevelInfo
	switch {
	case r.Context().Err() != nil && status >= 500:
		// The client went away (or the node is stopping): not a server
		// fault, and nobody read the answer.
		level = slog.LevelWarn
	case status == http.StatusServiceUnavailable:
		// Retry later: no leader yet, not ready, stopping, a timeout —
		// expected during starts, elections and restarts, not a fault.
		level = slog.LevelWarn
	case status >= 500:
		level = slog.LevelError
	}
	if !g.log.Enabled(r.Context(), level) {
		return
	}
	attrs := make([]slog.Attr, 0, 14)
	attrs = append(attrs,
		slog.String("method", r.Method),
		slog.String("route", info.route),
		slog.Int("status", status),
		slog.Float64("latency_ms", float64(elapsed.Microseconds())/1000),
		slog.String("request_id", info.requestID),
		slog.Int64("bytes_in", info.bytesIn),
		slog.Int64("bytes_out", bytesOut),
	)
	if info.topic != "" {
		attrs = append(attrs, slog.String("topic", clip(info.topic)))
	}
	if info.partition != "" {
		attrs = append(attrs, slog.String("partition", clip(info.partition)))
	}
	if info.group != "" {
		attrs = append(attrs, slog.String("group", clip(info.group)))
	}
	if info.code != "" {
		attrs = append(attrs, slog.String("code", string(info.code)))
	}
	if info.cause != nil {
		attrs = append(attrs, slog.String("error", info.cause.Error()))
	}
	g.log.LogAttrs(r.Context(), level, "http request", attrs...)
}

// requestID returns the client's X-Request-Id when it is 1..128 printable
// ASCII characters, else a fresh one.
func requestID(client string) string {
	if n := len(client); n >= 1 && n <= 128 {
		ok := true
		for i := 0; i < n; i++ {
			if client[i] < 0x20 || client[i] > 0x7e {
				ok = false
				break
			}
		}
		if ok {
			return client
		}
	}
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// recorder notes the status and size of an answer. It passes Flush on, and
// Unwrap lets http.ResponseController reach the connection.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (rw *recorder) WriteHeader(code int) {
	if rw.status == 0 {
		rw.status = code
	}
	rw.ResponseWriter.WriteHeader(code)
}

func (rw *recorder) Write(b []byte) (int, error) {
	if rw.status == 0 {
		rw.status = http.StatusOK
	}
	n, err := rw.ResponseWriter.Write(b)
	rw.bytes += int64(n)
	return n, err
}

func (rw *recorder) Flush() {
	if rw.status == 0 {
		rw.status = http.StatusOK
	}
	if f, ok := rw.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (rw *recorder) Unwrap() http.ResponseWriter { return rw.ResponseWriter }

// readBody checks the media type and size of a request body and parses it.
// Order: 415 (media type, content coding), then 413, then the JSON itself
// (400).
func (g *gateway) readBody(w http.ResponseWriter, r *http.Request) (jsonValue, *problem) {
	if p := checkContentType(r.Header.Values("Content-Type")); p != nil {
		return jsonValue{}, p
	}
	for _, ce := range r.Header.Values("Content-Encoding") {
		if !strings.EqualFold(strings.TrimSpace(ce), "identity") {
			// RFC 9110 §15.5.16: 415 for an unsupported content coding.
			return jsonValue{}, newProblem(daftka.CodeUnsupportedMediaType, "request bodies may not be compressed (Content-Encoding)")
		}
	}
	tooLarge := newProblem(daftka.CodeBodyTooLarge, fmt.Sprintf("the body is larger than %d bytes", g.opts.MaxBodyBytes))
	if r.ContentLength > g.opts.MaxBodyBytes {
		return jsonValue{}, tooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.opts.MaxBodyBytes))
	if info := infoFrom(r.Context()); info != nil {
		info.bytesIn = int64(len(body))
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return jsonValue{}, tooLarge
		}
		return jsonValue{}, newProblem(daftka.CodeMalformedJSON, "the body could not be read")
	}
	return parseJSON(body)
}

// checkContentType accepts exactly application/json, optionally with
// charset=utf-8, given once.
func checkContentType(values []string) *problem {
	bad := func(detail string) *problem {
		return newProblem(daftka.CodeUnsupportedMediaType, detail)
	}
	if len(values) != 1 {
		return bad("the body must be application/json (one Content-Type header)")
	}
	mt, params, err := mime.ParseMediaType(values[0])
	if err != nil || mt != "application/json" {
		return bad(fmt.Sprintf("the body must be application/json, not %q", clip(values[0])))
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return bad("application/json takes only the parameter charset=utf-8")
		}
	}
	return nil
}

// writeJSON answers status with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := marshalJSON(v)
	if err != nil { // cannot happen for the gateway's response types
		panic(fmt.Sprintf("gateway: marshal %T: %v", v, err))
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// marshalJSON encodes v with a trailing newline, without HTML escaping:
// record values come back byte for byte as they were written.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
