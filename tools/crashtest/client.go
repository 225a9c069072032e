package crashtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
)

// Client speaks the few endpoints of api-v1.md the crash test needs. Every
// call is bounded by RequestTimeout as well as by its ctx.
type Client struct {
	Base           string // e.g. http://127.0.0.1:4001
	RequestTimeout time.Duration
	hc             *http.Client
	retries        atomic.Int64 // fetches retried after a 503, 429 or no answer
}

// Retries counts the fetches ReadPartition has retried so far.
func (c *Client) Retries() int64 { return c.retries.Load() }

// NewClient returns a client of the gateway at base.
func NewClient(base string) *Client {
	return &Client{
		Base:           base,
		RequestTimeout: 10 * time.Second,
		hc: &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: 32,
			IdleConnTimeout:     30 * time.Second,
		}},
	}
}

// CloseIdle drops pooled connections: after a kill they lead nowhere.
func (c *Client) CloseIdle() { c.hc.CloseIdleConnections() }

// Answer is an HTTP answer read whole.
type Answer struct {
	Status     int
	Body       []byte
	RetryAfter time.Duration // from Retry-After on 429 and 503, else 0
}

func (c *Client) do(ctx context.Context, method, path string, body any) (Answer, error) {
	ctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return Answer{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return Answer{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return Answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return Answer{}, fmt.Errorf("read answer: %w", err)
	}
	a := Answer{Status: resp.StatusCode, Body: b}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
		a.RetryAfter = time.Duration(s) * time.Second
	}
	return a, nil
}

// CreateTopic creates a topic; an answer other than 201 is an error.
func (c *Client) CreateTopic(ctx context.Context, name string, partitions int) (Answer, error) {
	a, err := c.do(ctx, http.MethodPost, "/v1/topics", map[string]any{"name": name, "partitions": partitions})
	if err == nil && a.Status != http.StatusCreated {
		err = fmt.Errorf("create topic %s: %d %s", name, a.Status, a.Body)
	}
	return a, err
}

type produceRecord struct {
	Key       *string `json:"key,omitempty"`
	Value     string  `json:"value"`
	Partition *int32  `json:"partition,omitempty"`
}

type offsetJSON struct {
	Partition int32  `json:"partition"`
	Offset    *int64 `json:"offset"`
	ErrorCode string `json:"error_code"`
}

// ProduceResult is the outcome of one produce request.
type ProduceResult struct {
	Answer  Answer
	Offsets []Offset // from a 200, or from a partly failed produce's problem document
	Full    bool     // a 200: every record committed
}

// ErrBadAnswer wraps an answer that does not parse as the contract says.
var ErrBadAnswer = errors.New("crashtest: answer does not follow api-v1.md")

// Produce sends one batch. A transport error (the node died) is returned
// as is: the records' fate is unknown.
func (c *Client) Produce(ctx context.Context, topic string, recs []Rec) (ProduceResult, error) {
	body := struct {
		Records []produceRecord `json:"records"`
	}{Records: make([]produceRecord, len(recs))}
	for i, r := range recs {
		body.Records[i] = produceRecord(r)
	}
	a, err := c.do(ctx, http.MethodPost, "/v1/topics/"+url.PathEscape(topic)+"/records", body)
	if err != nil {
		return ProduceResult{}, err
	}
	res := ProduceResult{Answer: a, Full: a.Status == http.StatusOK}
	var doc struct {
		Offsets []offsetJSON `json:"offsets"`
	}
	if err := json.Unmarshal(a.Body, &doc); err != nil {
		return res, fmt.Errorf("%w: produce %d: %v: %.200s", ErrBadAnswer, a.Status, err, a.Body)
	}
	for _, o := range doc.Offsets {
		res.Offsets = append(res.Offsets, Offset{Partition: o.Partition, Offset: o.Offset})
	}
	if res.Full && len(res.Offsets) != len(recs) {
		return res, fmt.Errorf("%w: 200 with %d offsets for %d records", ErrBadAnswer, len(res.Offsets), len(recs))
	}
	return res, nil
}

type fetchJSON struct {
	Records []struct {
		Offset int64   `json:"offset"`
		Key    *string `json:"key"`
		Value  *string `json:"value"`
	} `json:"records"`
	NextOffset     int64 `json:"next_offset"`
	HighWatermark  int64 `json:"high_watermark"`
	LogStartOffset int64 `json:"log_start_offset"`
}

// pageRecords is max_records per fetch: pages of 1,000 small records.
const pageRecords = 1000

// maxPages bounds ReadPartition: enough for ten million records.
const maxPages = 10_000

// TopicHighWatermarks describes a topic: each partition's high watermark
// from a 200, and the answer as it came.
func (c *Client) TopicHighWatermarks(ctx context.Context, topic string) (map[int32]int64, Answer, error) {
	a, err := c.do(ctx, http.MethodGet, "/v1/topics/"+url.PathEscape(topic), nil)
	if err != nil || a.Status != http.StatusOK {
		return nil, a, err
	}
	var d struct {
		Partitions []struct {
			Partition int32  `json:"partition"`
			HWM       *int64 `json:"high_watermark"`
		} `json:"partitions"`
	}
	if err := json.Unmarshal(a.Body, &d); err != nil {
		return nil, a, fmt.Errorf("%w: describe topic: %.200s", ErrBadAnswer, a.Body)
	}
	out := map[int32]int64{}
	for _, p := range d.Partitions {
		if p.HWM == nil {
			return nil, a, fmt.Errorf("%w: describe topic: partition %d without high_watermark", ErrBadAnswer, p.Partition)
		}
		out[p.Partition] = *p.HWM
	}
	return out, a, nil
}

// HighWatermark describes one partition: its high watermark from a 200,
// and the answer as it came.
func (c *Client) HighWatermark(ctx context.Context, topic string, part int32) (int64, Answer, error) {
	a, err := c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/topics/%s/partitions/%d", url.PathEscape(topic), part), nil)
	if err != nil || a.Status != http.StatusOK {
		return 0, a, err
	}
	var d struct {
		HWM *int64 `json:"high_watermark"`
	}
	if err := json.Unmarshal(a.Body, &d); err != nil || d.HWM == nil {
		return 0, a, fmt.Errorf("%w: describe partition: %.200s", ErrBadAnswer, a.Body)
	}
	return *d.HWM, a, nil
}

// ReadPartition reads a partition whole, from offset 0 to the high
// watermark, page by page. It retries 503s and transport errors (a node
// just restarted may not have a leader yet) until ctx ends. It keeps
// reading while the high watermark grows, so it is meant for a quiet
// partition. Paging stops only at the high watermark; a page that makes
// no progress below it is an error.
func (c *Client) ReadPartition(ctx context.Context, topic string, part int32) (PartitionLog, error) {
	var pl PartitionLog
	var off int64
	first := true
	for range maxPages {
		path := fmt.Sprintf("/v1/topics/%s/partitions/%d/records?offset=%d&max_records=%d",
			url.PathEscape(topic), part, off, pageRecords)
		var page fetchJSON
		for {
			a, err := c.do(ctx, http.MethodGet, path, nil)
			if err == nil && a.Status == http.StatusOK {
				if err := json.Unmarshal(a.Body, &page); err != nil {
					return pl, fmt.Errorf("%w: fetch: %v: %.200s", ErrBadAnswer, err, a.Body)
				}
				break
			}
			if err == nil && a.Status == http.StatusRequestedRangeNotSatisfiable && first {
				// Retention moved the log start past 0: start there.
				var prob struct {
					LogStart *int64 `json:"log_start_offset"`
				}
				if json.Unmarshal(a.Body, &prob) == nil && prob.LogStart != nil && *prob.LogStart > off {
					off = *prob.LogStart
					path = fmt.Sprintf("/v1/topics/%s/partitions/%d/records?offset=%d&max_records=%d",
						url.PathEscape(topic), part, off, pageRecords)
					continue
				}
			}
			retryable := err != nil || a.Status == http.StatusServiceUnavailable || a.Status == http.StatusTooManyRequests
			if !retryable {
				return pl, fmt.Errorf("fetch %s: %d %.300s", path, a.Status, a.Body)
			}
			if ctx.Err() != nil {
				return pl, fmt.Errorf("fetch %s: gave up: %w (last: %v %d %.200s)", path, ctx.Err(), err, a.Status, a.Body)
			}
			c.retries.Add(1)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
		if first {
			pl.LogStart, first = page.LogStartOffset, false
			off = page.LogStartOffset
			if off != 0 {
				// Read from the log start instead; Verify reports it.
				pl.HWM = page.HighWatermark
				continue
			}
		}
		if page.HighWatermark < pl.HWM {
			return pl, fmt.Errorf("partition %d: high watermark went from %d to %d between two pages", part, pl.HWM, page.HighWatermark)
		}
		pl.HWM = page.HighWatermark
		for _, r := range page.Records {
			pl.Records = append(pl.Records, Fetched{Offset: r.Offset, Key: r.Key, Value: r.Value})
		}
		if len(page.Records) > 0 {
			last := page.Records[len(page.Records)-1].Offset
			if page.NextOffset != last+1 {
				return pl, fmt.Errorf("partition %d: fetch at %d: next_offset %d after last record %d", part, off, page.NextOffset, last)
			}
			if page.NextOffset <= off {
				return pl, fmt.Errorf("partition %d: fetch at %d: next_offset %d does not advance", part, off, page.NextOffset)
			}
			off = page.NextOffset
		}
		if off >= pl.HWM {
			return pl, nil
		}
		if len(page.Records) == 0 {
			return pl, fmt.Errorf("partition %d: fetch at %d below high watermark %d returned no records", part, off, pl.HWM)
		}
	}
	return pl, fmt.Errorf("partition %d: more than %d pages", part, maxPages)
}

// ReadAll reads every partition of a topic.
func (c *Client) ReadAll(ctx context.Context, topic string, partitions int32) ([]PartitionLog, error) {
	logs := make([]PartitionLog, partitions)
	for p := range partitions {
		pl, err := c.ReadPartition(ctx, topic, p)
		if err != nil {
			return nil, err
		}
		logs[p] = pl
	}
	return logs, nil
}
